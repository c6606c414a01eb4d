import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A child process running a Swift closure, a subclass's ``run()``, or a registered spawn target
/// (Python's `multiprocessing.Process`).
///
/// Start methods, as in Python:
/// - ``StartMethod/fork`` (default): the child is a copy of this process that runs the closure or
///   ``run()`` synchronously and exits with status 0, or 1 after printing a thrown error. A forked
///   Swift child cannot use Swift concurrency (the cooperative pool's threads are not copied) and
///   should only use what it needs: the child has one thread.
/// - ``StartMethod/spawn``: the program is started again and runs a ``SpawnTarget`` registered with
///   ``Spawn/bootstrap(_:)`` with `Codable` arguments; the child is a full Swift process.
///
/// ```swift
/// let p = Process(name: "worker") { print("child", Process.current.pid) }
/// try p.start()
/// try p.join()
/// p.exitCode  // 0; -9 if killed by SIGKILL
/// ```
///
/// `Process` shares its name with Foundation's; a file that imports both writes
/// `Multiprocessing.Process`.
open class Process: @unchecked Sendable {
    /// How a child is started.
    public enum StartMethod: Sendable, Equatable {
        case fork, spawn
    }

    enum Target {
        case closure(() throws -> Void)
        case subclass
        case spawn(SpawnRequest)
        case current
    }

    struct State {
        var name: String
        var daemon: Bool
        var pid: Int32?
        var pidfd: Int32 = -1
        var exitCode: Int32?
        var started = false
    }

    let target: Target
    let state: Locked<State>
    /// The id of the process that created this object (Python's `_parent_pid`).
    public let parentPID: Int32

    /// A process that will run `target` in a forked child.
    public init(name: String? = nil, daemon: Bool = false, target: @escaping () throws -> Void) {
        self.target = .closure(target)
        state = Locked(State(name: name ?? Process.nextName(), daemon: daemon))
        parentPID = mp_process_id()
    }

    /// For subclasses that override ``run()``; the child is forked.
    public init(name: String? = nil, daemon: Bool = false) {
        target = .subclass
        state = Locked(State(name: name ?? Process.nextName(), daemon: daemon))
        parentPID = mp_process_id()
    }

    /// A process that will run the registered `target` with `argument` in a spawned child.
    public init<Argument>(
        name: String? = nil, daemon: Bool = false, spawn target: SpawnTarget<Argument>, argument: Argument
    ) {
        self.target = .spawn(SpawnRequest(target: target.name, argument: { try SpawnCoding.encode(argument) }))
        state = Locked(State(name: name ?? Process.nextName(), daemon: daemon))
        parentPID = mp_process_id()
    }

    init(current name: String, pid: Int32, parentPID: Int32) {
        target = .current
        state = Locked(State(name: name, daemon: false, pid: pid, started: true))
        self.parentPID = parentPID
    }

    /// The work of the child. The default runs the closure given at creation; subclasses override it.
    open func run() throws {
        if case .closure(let body) = target { try body() }
    }

    /// The process's name (not unique; for humans and logs).
    public var name: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }

    /// Whether the child is killed when this process exits or dies. Set it before ``start()``.
    public var daemon: Bool {
        get { state.withLock { $0.daemon } }
        set { state.withLock { $0.daemon = newValue } }
    }

    /// The start method this process uses.
    public var startMethod: StartMethod {
        if case .spawn = target { return .spawn }
        return .fork
    }

    /// The child's process id; nil before ``start()``.
    public var pid: Int32? { state.withLock { $0.pid } }

    /// nil while the child runs (or before start); else its exit status, or -N if signal N killed it.
    public var exitCode: Int32? {
        reapIfExited()
        return state.withLock { $0.exitCode }
    }

    /// Whether the child has started and not yet exited.
    public var isAlive: Bool {
        if case .current = target { return true }
        reapIfExited()
        return state.withLock { $0.started && $0.exitCode == nil }
    }

    /// Starts the child. Throws ``ProcessError/alreadyStarted`` on a second call.
    public func start() throws(ProcessError) {
        try state.withLock { (s: inout State) throws(ProcessError) in
            if s.started { throw .alreadyStarted }
            s.started = true
        }
        Children.reapFinished()
        let pid: Int32
        switch target {
        case .current:
            throw .alreadyStarted
        case .spawn(let request):
            do {
                pid = try Spawn.start(request, name: name, daemon: daemon)
            } catch {
                state.withLock { $0.started = false }  // nothing was started: start may be tried again
                throw error
            }
        case .closure, .subclass:
            prepareRegistriesForFork()
            pid = mp_fork(daemon ? 1 : 0)
            if pid == 0 { runForkedChild() }
        }
        if pid < 0 {
            state.withLock { $0.started = false }
            throw .system(Errno(rawValue: -pid), function: startMethod == .fork ? "fork" : "posix_spawn")
        }
        let pidfd = mp_pidfd_open(pid)  // race-free: the child stays until we reap it
        state.withLock {
            $0.pid = pid
            $0.pidfd = pidfd
        }
        Children.add(self)
    }

    private func runForkedChild() -> Never {
        // Locks that the parent's other threads held reset themselves (InternalLock); what is the
        // parent's alone is forgotten here.
        Children.forgetAfterFork()
        state.withLock {
            $0.pid = mp_process_id()
            $0.exitCode = nil
        }
        CurrentProcess.set(self, parentPID: parentPID)
        do {
            try run()
            mp_exit_child(0)
        } catch {
            writeError("Process \(name): \(error)\n")
            mp_exit_child(1)
        }
    }

    /// Waits for the child to exit, up to `timeout` (forever when nil). Returns whether it exited.
    @discardableResult
    public func join(timeout: Duration? = nil) throws(ProcessError) -> Bool {
        if case .current = target { throw .joinSelf }
        let (started, pidfd, done) = state.withLock { ($0.started, $0.pidfd, $0.exitCode != nil) }
        guard started else { throw .notStarted }
        if done { return true }
        var ns = Int64(MP_FOREVER)
        if let timeout {
            do { ns = try timeoutNanoseconds(timeout) } catch { throw .negativeTimeout(timeout) }
        }
        if pidfd < 0 { return waitPolling(until: monotonicDeadline(afterNanoseconds: ns)) }
        let rc = mp_poll_readable(pidfd, ns)
        if rc == 0 { return state.withLock { $0.exitCode != nil } }
        if rc < 0 {
            if state.withLock({ $0.exitCode != nil }) { return true }  // another joiner reaped it and closed the pidfd
            throw .system(Errno(rawValue: -rc), function: "ppoll")
        }
        reapIfExited()
        return state.withLock { $0.exitCode != nil }
    }

    /// Waits for the exit without a pidfd (none to spare, or a kernel without them): reaps without
    /// blocking, then sleeps a little (0.1 ms, doubling up to 10 ms), never holding the state lock
    /// while it waits, so that other threads can read the state and signal the child meanwhile.
    private func waitPolling(until deadline: Int64) -> Bool {
        var pause: Int64 = 100_000
        while true {
            reapIfExited()
            if state.withLock({ $0.exitCode != nil }) { return true }
            let now = mp_monotonic_ns()
            if now >= deadline { return false }
            _ = mp_sleep_until(min(now + pause, deadline))
            pause = min(pause * 2, 10_000_000)
        }
    }

    /// Sends SIGTERM (Python's `terminate()`).
    public func terminate() throws(ProcessError) { try signal(SIGTERM) }

    /// Sends SIGKILL (Python's `kill()`).
    public func kill() throws(ProcessError) { try signal(SIGKILL) }

    /// Sends `signal` to the child, unless it has already been reaped: through its pidfd (which
    /// never names another process), else by pid under the state lock that reaping takes, so the
    /// pid cannot be reaped and reused in between.
    public func signal(_ signal: Int32) throws(ProcessError) {
        let rc = try state.withLock { (s: inout State) throws(ProcessError) -> Int32 in
            guard s.started, let pid = s.pid else { throw .notStarted }
            if s.exitCode != nil { return 0 }  // reaped: the pid may belong to someone else now
            return s.pidfd >= 0 ? mp_pidfd_signal(s.pidfd, signal) : mp_signal(pid, signal)
        }
        if rc < 0 && rc != -ESRCH { throw .system(Errno(rawValue: -rc), function: "kill") }
    }

    /// Reaps the child if it has exited, under the state lock so that only one caller collects the
    /// status (it never blocks: waits happen outside the lock).
    func reapIfExited() {
        state.withLock { s in
            guard s.started, s.exitCode == nil, let pid = s.pid, pid != mp_process_id() else { return }
            var code: Int32 = 0
            let rc = mp_wait_child(pid, s.pidfd, 1, &code)
            if rc == pid {
                s.exitCode = code
            } else if rc == -ECHILD {
                s.exitCode = s.exitCode ?? -1  // reaped elsewhere (someone called waitpid(-1))
            } else {
                return
            }
            if s.pidfd >= 0 {
                close(s.pidfd)
                s.pidfd = -1
            }
        }
    }

    /// The process running this code: "MainProcess", or the ``Process`` a child is running.
    public static var current: Process { CurrentProcess.get() }

    /// The children started here that are still running; finished ones are reaped (as in Python).
    public static var activeChildren: [Process] {
        Children.reapFinished()
        return Children.all().filter { $0.isAlive }
    }

    private static let counter = Locked(0)
    private static func nextName() -> String {
        "Process-"
            + String(
                counter.withLock {
                    $0 += 1; return $0
                })
    }

    deinit {
        state.withLock { if $0.pidfd >= 0 { close($0.pidfd) } }
    }
}

struct SpawnRequest {
    var target: String
    var argument: () throws -> [UInt8]
}

func writeError(_ text: String) {
    var text = text
    text.withUTF8 { buffer in _ = write(2, buffer.baseAddress, buffer.count) }
}

/// Initializes, in the parent, the lazy globals a forked child may touch: a first-time initializer
/// run in the child could wait for ever on a runtime `once` that another thread of the parent was
/// inside at the moment of the fork. (Their locks need no reset: see ``Locked``.)
func prepareRegistriesForFork() {
    _ = RegionRegistry.lookup(0)
    _ = Arenas.arena(for: 0)
    _ = Children.all()
    _ = CurrentProcess.get()
}

/// Which ``Process`` object describes the running process.
enum CurrentProcess {
    private static let value = Locked<Process?>(nil)

    static func get() -> Process {
        value.withLock { current in
            if let current { return current }
            let main = Process(current: "MainProcess", pid: mp_process_id(), parentPID: getppid())
            current = main
            return main
        }
    }

    static func set(_ process: Process, parentPID: Int32) {
        value.withLock { $0 = process }
    }

    /// A spawned child: a stand-in with the parent's name for it.
    static func setSpawned(name: String, parentPID: Int32) {
        value.withLock { $0 = Process(current: name, pid: mp_process_id(), parentPID: parentPID) }
    }
}

/// The children of this process that have not been reaped, so that none is left a zombie: they are
/// reaped when finished on every `start()` and `activeChildren`, and at exit daemons are terminated
/// and the others joined (as Python does).
enum Children {
    private static let list = Locked<[Process]>([])
    private static let installOnce: Void = { atexit { Children.finishAtExit() } }()

    static func add(_ process: Process) {
        _ = installOnce
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

    /// In a forked child: the parent's children are not ours (their pidfds are closed here).
    static func forgetAfterFork() {
        list.withLock { children in
            for child in children {
                child.state.withLock { if $0.pidfd >= 0 { close($0.pidfd); $0.pidfd = -1 } }
            }
            children = []
        }
    }
}
