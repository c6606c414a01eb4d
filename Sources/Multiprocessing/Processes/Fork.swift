import CMultiprocessing
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Everything this library does around `fork`, in one place.
///
/// A forked child is a copy of one thread of its parent. Any lock that another thread held at the
/// fork stays held in the child, by a thread that does not exist there: a child that needs it waits
/// forever. glibc resets its own (malloc, stdio) in the child; the Swift runtime does not, and
/// generic code (metadata instantiation, a first conformance lookup, a lazy global) can need one
/// of its locks at any time. So this library forks only where that cannot happen:
///
/// - the forkserver and a pool's zygote fork from their single thread (forkserver.c), so their
///   children inherit no held lock. That covers every pool worker and every ``SpawnTarget``.
/// - ``Process`` over a closure or a subclass, and a ``Zygote``, fork on the caller's thread when it
///   asks (as Python's `fork` start method): the remaining hazard, documented in `StartMethods`,
///   is a lock held by another thread of the caller's program at that instant.
///
/// Nothing forks from a library thread. What remains here:
/// - ``prepare()``: lazy globals a child needs are initialised before the fork (their `once` could be
///   half-run by another thread at the fork, and a half-run `once` never completes in the child);
/// - ``resetChild()``: what was the parent's is forgotten in the child (its children, its fork
///   server). The library's own locks need no reset: an ``InternalLock`` from before the fork
///   re-initialises itself on first use in the child (`mp_private_lock_t`);
/// - ``describeError(of:exitCode:_:)``: a closure child whose body throws describes the error under
///   a watchdog. Describing an error of any type is a conformance look-up, which no warm-up can make
///   ahead (the type is only known when it is thrown) and which takes the runtime's lock: a child
///   that inherited it held would wait there for good, and its joiner with it. After
///   ``describeLimit`` the child says so on stderr and exits 1 instead.
enum Fork {
    /// In the parent, on the thread about to fork.
    static func prepare() {
        _ = RegionRegistry.lookup(0)
        _ = Arenas.arena(for: 0)
        _ = Children.all()
        _ = CurrentProcess.get()
        ResourceTracker.prepareForFork()
        ProgramExit.prepareForFork()
        ForkServer.forgetInherited()  // also runs its lazy initialiser here, not in the child
    }

    /// In a new child (forked, or cloned by a fork server from a forked zygote), before anything
    /// else of this library runs: the parent's children and fork server are not the child's.
    static func resetChild() {
        Children.forgetAfterFork()
        ForkServer.forgetInherited()
    }

    /// How a forked child ends (over a closure, or from the forkserver), as Python's do: what it
    /// started itself is finished (``ProgramExit``: its pools terminated, its children finished,
    /// its forkserver and tracker reaped), stdio is flushed, and it `_exit`s. The atexit handlers
    /// and library destructors it would otherwise run are its parent's or its server's; running
    /// them all again in every child also costs about a millisecond, on the CPU its parent is
    /// waiting for.
    static func exitChild(_ code: Int32) -> Never {
        ProgramExit.run(child: true)
        mp_exit_child(code)
    }

    /// Forks on the calling thread. In the child, resets it as `process` (``Process/current``) and
    /// runs `body`, which must not return. Returns the child's pid, or -errno.
    static func child(as process: Process, daemon: Bool, _ body: () -> Never) -> Int32 {
        prepare()
        let pid = mp_fork(daemon ? 1 : 0)
        if pid == 0 {
            resetChild()
            CurrentProcess.set(process)
            body()
        }
        if pid > 0 { Children.noteFork() }
        return pid
    }
}

extension Fork {
    /// How long a forked child has to describe the error its body threw, in ns. A description whose
    /// conformance look-ups are all first ones (they scan every loaded image) took 0.4 ms in a child
    /// of the debug test suite (0.64 ms at most of 40), 1.0 ms under ASan (1.35 ms at most): one
    /// still running after 2 s, over a thousand times that, is waiting for a lock no thread of the
    /// child will release, or in a `description` that blocks, while the child's joiner waits.
    static let describeLimit: Int64 = 2_000_000_000

    /// In a forked child: `describe()`'s text, or, if it has not returned within ``describeLimit``,
    /// "Process `name`: its error was not described ..." on stderr and `_exit(code)` (from a watchdog
    /// thread, in C, that touches no signal disposition or mask: a SIGALRM the body blocked and left
    /// pending stays so). The child's ``exitChild(_:)`` is skipped then, as it needs the runtime too:
    /// what the child started is left to end by itself (its daemons die with it). Without a
    /// watchdog (no thread to be had, or under ThreadSanitizer, which dies when a forked child of a
    /// threaded process starts one) `describe()` simply runs.
    static func describeError(of name: String, exitCode code: Int32, _ describe: () -> String) -> String {
        // Made before the watchdog is armed, from Strings and integers only: their conformances are
        // static, so this takes no runtime lock.
        var fallback =
            "Process \(name): its error was not described within \(describeLimit / 1_000_000_000) s (a Swift "
            + "runtime lock held by another thread at the fork, or a description that blocks); exiting with "
            + "status \(code)\n"
        let armed = fallback.withUTF8 { text in
            mp_child_watchdog_arm(
                Deadline.after(nanoseconds: describeLimit), code, text.baseAddress!, Int32(clamping: text.count))
        }
        defer { if armed == 0 { mp_child_watchdog_disarm() } }
        return describe()
    }
}

/// Writes `text` to stderr, unbuffered (usable in a child about to `_exit`): one raw write, outside
/// the `systemCall` funnel on purpose, since a failure has nowhere to be reported.
func writeError(_ text: String) {
    var text = text
    text.withUTF8 { buffer in _ = write(2, buffer.baseAddress, buffer.count) }
}

/// Which ``Process`` object describes the running process.
enum CurrentProcess {
    private static let value = Locked<Process?>(nil)

    static func get() -> Process {
        value.withLock { current in
            if let current { return current }
            let main = Process(current: "MainProcess", daemon: false, pid: mp_process_id(), parentPID: getppid())
            current = main
            return main
        }
    }

    static func set(_ process: Process) {
        value.withLock { $0 = process }
    }

    /// A child started by exec or by a fork server: a stand-in with the parent's name and daemon
    /// flag for it.
    static func setStarted(name: String, daemon: Bool, parentPID: Int32) {
        value.withLock { $0 = Process(current: name, daemon: daemon, pid: mp_process_id(), parentPID: parentPID) }
    }
}

/// The children of this process that have not been reaped, so that none is left a zombie: they are
/// reaped when finished on every `start()` and `activeChildren`, and at exit (``ProgramExit``)
/// daemons are terminated and the others joined (as Python does).
enum Children {
    private static let list = Locked<[Process]>([])
    /// Forks this process has made, ever: a forked child (a closure child, a pool's zygote and the
    /// workers it forks) holds a copy of every shared object that lived at the fork (see
    /// `SharedObject`). Spawned and forkserver children reach an object only through its encoded
    /// handle, which marks it.
    private static let forks = Atomic<Int>(0)
    static var forked: Int { forks.load(ordering: .relaxed) }
    /// Counts a fork, in the parent, after it returned: an object made in between is counted as
    /// shared, which only keeps its slot.
    static func noteFork() { forks.add(1, ordering: .relaxed) }

    static func add(_ process: Process) {
        ProgramExit.install()
        list.withLock { $0.append(process) }
    }

    static func all() -> [Process] { list.withLock { $0 } }

    static func reapFinished() {
        let current = list.withLock { $0 }
        for child in current { child.reapIfExited() }
        list.withLock { $0.removeAll { p in p.state.withLock { $0.exitCode != nil } } }
    }

    static func finishAtExit() {
        let current = list.withLock { $0 }
        for child in current where child.daemon { try? child.terminate() }
        for child in current { _ = try? child.join() }
    }

    /// In a new child: the parent's children are not ours (their pidfds are closed here). Their
    /// objects are kept, never freed: a deinit here would free what they hold (a queue's region)
    /// through tables that another thread of the parent may have been changing at the fork (a
    /// closure child crashed in `RegionRegistry.unregister`, on a dictionary torn that way).
    static func forgetAfterFork() {
        list.withLock { children in
            for child in children {
                child.state.withLock { if $0.pidfd >= 0 { closeDescriptor($0.pidfd); $0.pidfd = -1 } }
                _ = Unmanaged.passRetained(child)  // kept for the child's life
            }
            children = []
        }
    }
}

extension Fork {
    /// In a zygote, before it serves: takes, once, each lock of the Swift runtime that every
    /// generic type shares, and returns. One held by another thread at the fork is held for good
    /// here, and this never returns: the zygote says no hello, and its pool kills it and forks
    /// another (see ``Zygote``).
    ///
    /// Each lock is taken by making metadata this process has never made: an array, a dictionary,
    /// a set, an optional, a tuple, a function type and a metatype of ``ZygoteProbe``, which only
    /// this function instantiates (and only in a zygote, so it is new in every one), a conformance
    /// lookup that misses the cache, and a lazy global's first initialisation. Never call it in a process that forks zygotes:
    /// the probe's metadata would be made there, and found again without a lock in every zygote.
    static func proveRuntimeLocksFree() {
        var seen = 0
        seen &+= probeSharedCaches(ZygoteProbe<Int>.self)
        seen &+= probeSharedCaches(ZygoteProbe<ZygoteProbe<UInt8>>.self)
        seen &+= ZygoteProbeOnce.value  // a first `swift_once`, for the lock that onces may share
        if seen == 42 { writeError("") }  // keeps the work from being dropped
    }

    // Not specialised: each line must reach the runtime, not be folded at compile time.
    @inline(never) @_semantics("optimize.sil.specialize.generic.never")
    private static func probeSharedCaches<T: Hashable>(_ type: T.Type) -> Int {
        let made: [Any.Type] = [
            [T].self, [Int: T].self, Set<T>.self, T?.self, (T, Int).self, ((T) -> Int).self, T.Type.self,
        ]
        let conforms = T.self is any CustomStringConvertible.Type
        return made.count + (conforms ? 1 : 0)
    }
}

extension Fork {
    /// In the forkserver, before it serves (Python's `set_forkserver_preload`, done for the library's
    /// own code): the one-time work that each child would otherwise repeat, since a child starts
    /// with the server's caches. Lazy globals a child reads, the metadata and conformance lookups
    /// of decoding a child's payload, and what each registered entry needs (its types'
    /// fingerprints, a pool worker's loop). Work done here costs once; the same work in a child is
    /// most of its start (conformance lookups scan every loaded image, and each page the runtime
    /// writes to is copied).
    static func prepareServer(for targets: [any SpawnEntry]) {
        prepare()
        Connection.prepareChildren()
        let sample = ChildPayload(
            target: "", argument: [0], name: "", daemon: false, dieWithParent: false, parentPID: 0,
            regions: [RegionDescriptor(id: 0, fd: -1, size: 0)], tracker: -1)
        _ = try? BootstrapPayload(decoding: BootstrapPayload.child(sample).encoded())
        // A child runs its target in an immediate task. The first task of a process sets up the
        // concurrency runtime's state (its allocator, the task-local and executor lookups): one
        // started and finished here, which never suspends and so starts no thread, leaves that done.
        let started = LocalEvent()
        Task.immediate { started.set() }
        started.wait()
        // The library's types that children are handed most (locks and the like decode a handle).
        let handle = SharedHandle(region: 0, slot: 0, generation: 0, kind: 0)
        if let bytes = try? SpawnCoding.encode(handle) { _ = try? SpawnCoding.decode(SharedHandle.self, from: bytes) }
        let made =
            Spawn.childMetadata + Condition.decodingMetadata + SharedMemory.decodingMetadata
        if made.isEmpty { writeError("") }  // keeps the work from being dropped
        for case let entry as any ChildPreparing in targets {
            entry.prepareChildren()
        }
    }
}

/// Only ``Fork/proveRuntimeLocksFree()`` reads it: its first read runs a `swift_once`.
private enum ZygoteProbeOnce {
    static let value = Int(mp_process_id() & 1)
}

/// Only ``Fork/proveRuntimeLocksFree()`` instantiates it.
struct ZygoteProbe<T: Hashable>: Hashable {
    var value: T
}
