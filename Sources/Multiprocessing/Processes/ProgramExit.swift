import CMultiprocessing
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// What this library does when a process of the program ends normally, in one place and in one
/// order, so that no process it started outlives the program (as Python's `_exit_function`):
///
/// 1. the process pools still running are terminated (their workers killed and reaped), as
///    Python's pool finalizers do: a pool held by a global is never deinitialized;
/// 2. the children it started are finished: daemons terminated, the others joined;
/// 3. the named shared-memory objects it created and did not unlink are unlinked (at `exit` only:
///    a child's are left to the resource tracker, as a forked child always did);
/// 4. its forkserver is told goodbye and reaped (it would otherwise end a moment after this
///    process, when it saw the end of its socket, and be reaped by init);
/// 5. the resource tracker it started is let go and, once it has exited, reaped (as Python 3.13
///    reaps its tracker at exit).
///
/// Each step waits at most about a second for a process that will not end (a joined child waits
/// as long as the child runs, as in Python). The tracker ends only when every process of the
/// program has let go of it: one still running elsewhere keeps it, and init reaps it later.
///
/// Runs from an `atexit` handler (installed by the first step that has something to do) and from
/// ``Fork/exitChild(_:)``, the end of every child this library starts. Every step acts only on
/// what this very process started: a forked child inherits its parent's lists, not its children.
enum ProgramExit {
    private static let installOnce: Void = { atexit { ProgramExit.run(child: false) } }()

    /// The pid of the process that last made a pool, a forkserver or a tracker (0: none). A child
    /// forked on the caller's thread may have inherited a Swift runtime lock held for good (see
    /// ``Fork``): one that made none of these runs no code at its end that its parent had not run
    /// before the fork (``Children`` is readied by ``Fork/prepare()``), so it cannot need one.
    private static let starter = Atomic<Int32>(0)

    /// Makes sure the steps run at `exit`, and that those of pools, forkservers and trackers run
    /// in this process.
    static func startedHere() {
        _ = installOnce
        starter.store(mp_process_id(), ordering: .relaxed)
    }

    /// Makes sure the steps run at `exit`.
    static func install() { _ = installOnce }

    /// Initialises what a child reads at its end, in the parent before a fork (see ``Fork/prepare()``).
    static func prepareForFork() {
        _ = installOnce
        _ = starter.load(ordering: .relaxed)
        NamedRegions.prepareForFork()  // step 3 runs in a child that calls exit
    }

    /// The steps, in order. `child`: called at the end of a child, which leaves its named objects
    /// to the tracker.
    static func run(child: Bool) {
        let mine = starter.load(ordering: .relaxed) == mp_process_id()
        if mine { LivePools.terminateAll() }
        Children.finishAtExit()
        if !child { NamedRegions.unlinkAll() }
        if mine {
            ForkServer.closeAtExit()
            ResourceTracker.finishAtExit()
        }
    }
}

/// The process pools of this process that have not ended, terminated at exit (see
/// ``ProgramExit``). Weak: a pool that is deinitialized terminates itself and leaves the list.
enum LivePools {
    private struct Entry {
        weak var core: PoolCore?
    }

    /// Keyed by the pool's identity, with the pid of the process that made them: a forked child
    /// inherits the list, but the pools are its parent's.
    private static let entries = Locked<(pid: Int32, pools: [ObjectIdentifier: Entry])>((0, [:]))

    static func add(_ core: PoolCore) {
        ProgramExit.startedHere()
        entries.withLock { state in
            if state.pid != mp_process_id() { state = (mp_process_id(), [:]) }
            state.pools[ObjectIdentifier(core)] = Entry(core: core)
        }
    }

    static func remove(_ core: PoolCore) {
        entries.withLock { state in
            if state.pid == mp_process_id() { state.pools[ObjectIdentifier(core)] = nil }
        }
    }

    static func terminateAll() {
        let live = entries.withLock { state -> [PoolCore] in
            guard state.pid == mp_process_id() else { return [] }
            return state.pools.values.compactMap(\.core)
        }
        for core in live { core.terminateAtExit() }
    }
}
