import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A child process running a Swift closure, a subclass's ``run()``, or a registered target
/// (Python's `multiprocessing.Process`).
///
/// Start methods, as in Python (see <doc:StartMethods>):
/// - ``StartMethod/forkserver`` (default for a registered ``SpawnTarget``): a clean server process,
///   started by exec, forks the child; it runs the target with `Codable` arguments, as a full Swift
///   process, and starts in about a millisecond.
/// - ``StartMethod/spawn``: the program is started again for the child; the same targets, slower to
///   start, and the child shares nothing with a server.
/// - ``StartMethod/fork`` (closures and subclasses): the child is a copy of this process that runs
///   the closure or ``run()`` synchronously and exits with status 0, or 1 after printing a thrown
///   error. It cannot use Swift concurrency (the cooperative pool's threads are not copied), and it
///   is forked on the caller's thread: in a program whose other threads are busy, it can inherit a
///   lock one of them held and wait for it forever. Prefer a registered target there.
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
        /// A copy of this process, forked on the calling thread (closures and subclasses).
        case fork
        /// This program started again (a registered target).
        case spawn
        /// Forked by this process's forkserver, a clean copy of the program (a registered target).
        case forkserver
    }

    enum Target {
        case closure(() throws -> Void)
        case subclass
        case registered(TargetRequest, StartMethod)
        case current
        /// A child started elsewhere (a pool's zygote) and handed over, already running.
        case adopted
    }

    struct State {
        var name: String
        var daemon: Bool
        var pid: Int32?
        var pidfd: Int32 = -1
        var exitCode: Int32?
        var started = false
        /// The process that started the child, the only one that can wait for it: a copy of this
        /// object in another process (a forked sibling, or the child itself) names no child of its.
        var starter: Int32 = 0
    }

    let target: Target
    let state: Locked<State>
    /// The program a spawned child runs, instead of ``Spawn/executable`` (tests, which run in
    /// parallel and must not change the global).
    var executableForTesting: String?
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

    /// A process that will run the registered `target` with `argument`, started by `startMethod`:
    /// ``StartMethod/forkserver`` (the default) or ``StartMethod/spawn``. The argument is encoded
    /// when the process starts; the locks, queues and shared memory it holds are the same objects in
    /// the child.
    public init<Argument>(
        name: String? = nil, daemon: Bool = false, target: SpawnTarget<Argument>, argument: Argument,
        startMethod: StartMethod = .forkserver
    ) {
        let request = TargetRequest(target: target.name, argument: { try SpawnCoding.encode(argument) })
        self.target = .registered(request, startMethod)
        state = Locked(State(name: name ?? Process.nextName(), daemon: daemon))
        parentPID = mp_process_id()
    }

    /// A process that will run the registered `target` with `argument` in a spawned child: the same
    /// as `Process(target:argument:startMethod: .spawn)`.
    public convenience init<Argument>(
        name: String? = nil, daemon: Bool = false, spawn target: SpawnTarget<Argument>, argument: Argument
    ) {
        self.init(name: name, daemon: daemon, target: target, argument: argument, startMethod: .spawn)
    }

    init(current name: String, daemon: Bool, pid: Int32, parentPID: Int32) {
        target = .current
        state = Locked(State(name: name, daemon: daemon, pid: pid, started: true))
        self.parentPID = parentPID
    }

    /// A running child of this process, started elsewhere (a pool's zygote): from now on it is
    /// watched, reaped and signalled like any other.
    init(child pid: Int32, pidfd: Int32, name: String, daemon: Bool) {
        target = .adopted
        state = Locked(
            State(name: name, daemon: daemon, pid: pid, pidfd: pidfd, started: true, starter: mp_process_id()))
        parentPID = mp_process_id()
        // As start() does: the workers a pool's zygote replaced do not pile up in the list for good.
        Children.reapFinished()
        Children.add(self)
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
        if case .registered(_, let method) = target { return method }
        return .fork
    }

    /// The child's process id; nil before ``start()``.
    public var pid: Int32? { state.withLock { $0.pid } }

    /// nil while the child runs (or before start); else its exit status, or -N if signal N killed it.
    public var exitCode: Int32? {
        reapIfExited()
        return state.withLock { $0.exitCode }
    }

    /// Whether the child has started and not yet exited. Only the process that started the child
    /// can tell (Python's "can only test a child process"): in a copy another process holds (a
    /// forked sibling's), it reads what this object knew when it was copied.
    public var isAlive: Bool {
        if case .current = target { return true }
        reapIfExited()
        return state.withLock { $0.started && $0.exitCode == nil }
    }

    /// Starts the child. Throws ``ProcessError/alreadyStarted`` on a second call, and
    /// ``ProcessError/createdElsewhere`` in a process other than the one that created this object;
    /// if the child cannot be started, throws and leaves the process unstarted (start may be tried
    /// again).
    public func start() throws(ProcessError) {
        try state.withLock { (s: inout State) throws(ProcessError) in
            if s.started { throw .alreadyStarted }
            // A copy a forked child inherited: the parent's object would stay unstarted, and could
            // be started there again (Python: "can only start a process object created by current
            // process").
            if parentPID != mp_process_id() { throw .createdElsewhere }
            s.started = true
            s.starter = mp_process_id()
        }
        Children.reapFinished()
        do {
            let (pid, pidfd) = try launch()
            state.withLock {
                $0.pid = pid
                $0.pidfd = pidfd
            }
        } catch {
            state.withLock { $0.started = false }
            throw error
        }
        Children.add(self)
    }

    /// Starts `processes` as `start()` would, one after another, except that those over the
    /// forkserver go to the server in one exchange (``ForkServer/startMany(_:)``: it forks them
    /// back to back). Each one's error, nil for those that started (a pool's first workers).
    static func startAll(_ processes: [Process]) -> [ProcessError?] {
        var errors = [ProcessError?](repeating: nil, count: processes.count)
        var batch: [(index: Int, launch: PreparedLaunch)] = []
        for (i, process) in processes.enumerated() {
            guard case .registered(let request, .forkserver) = process.target, !Spawn.bootstrapPending else {
                do { try process.start() } catch { errors[i] = error }
                continue
            }
            do {
                try process.state.withLock { (s: inout State) throws(ProcessError) in
                    if s.started { throw .alreadyStarted }
                    if process.parentPID != mp_process_id() { throw .createdElsewhere }
                    s.started = true
                    s.starter = mp_process_id()
                }
                let launch = try ChildLaunch(request, name: process.name, daemon: process.daemon, spawned: false)
                batch.append((i, PreparedLaunch(launch)))
            } catch {
                if error != .alreadyStarted { process.state.withLock { $0.started = false } }
                errors[i] = error
            }
        }
        guard !batch.isEmpty else { return errors }
        Children.reapFinished()
        let answers = ForkServer.startMany(
            batch.map { i, launch in
                ForkServerConnection.Request(daemon: processes[i].daemon, descriptors: launch.descriptors)
            })
        for ((i, _), answer) in zip(batch, answers) {
            let process = processes[i]
            switch answer {
            case .success(let (pid, pidfd)):
                process.state.withLock {
                    $0.pid = pid
                    $0.pidfd = pidfd
                }
                Children.add(process)
            case .failure(let error):
                process.state.withLock { $0.started = false }
                errors[i] = error
            }
        }
        return errors  // the launches close their payloads here: every child has its own copy
    }

    /// Starts the child by its start method: its pid and pidfd.
    private func launch() throws(ProcessError) -> (pid: Int32, pidfd: Int32) {
        switch target {
        case .current, .adopted:
            throw .alreadyStarted
        case .registered(let request, .fork):
            throw .unsupportedStartMethod(.fork, target: request.target)
        case .registered(let request, let method):
            if Spawn.bootstrapPending {
                throw .forkServerFailed(
                    "this program was started as a child and has not called Spawn.bootstrap: call it first in main")
            }
            let launch = try ChildLaunch(request, name: name, daemon: daemon, spawned: method == .spawn)
            if method == .forkserver { return try ForkServer.start(launch, daemon: daemon) }
            let pid = try Spawn.start(
                payload: launch.payload, keeping: launch.descriptors,
                executable: executableForTesting ?? Spawn.executable)
            return (pid, mp_pidfd_open(pid))  // race-free: the child stays until we reap it
        case .closure, .subclass:
            let pid = Fork.child(as: self, daemon: daemon) { runForkedChild() }
            guard pid > 0 else { throw .system(Errno(rawValue: -pid), function: "fork") }
            return (pid, mp_pidfd_open(pid))
        }
    }

    private func runForkedChild() -> Never {
        state.withLock {
            $0.pid = mp_process_id()
            $0.exitCode = nil
        }
        do {
            try run()
            Fork.exitChild(0)
        } catch {
            let name = name
            writeError(Fork.describeError(of: name, exitCode: 1) { "Process \(name): \(error)\n" })
            Fork.exitChild(1)
        }
    }

    /// Waits for the child to exit, up to `timeout` (forever when nil). Returns whether it exited.
    ///
    /// Only the process that started the child can wait for it (as Python's "can only join a child
    /// process"): elsewhere, a copy inherited by a forked sibling say, it throws
    /// ``ProcessError/system(_:function:)`` with `ECHILD`; in the child itself ``ProcessError/joinSelf``.
    @discardableResult
    public func join(timeout: Duration? = nil) throws(ProcessError) -> Bool {
        if case .current = target { throw .joinSelf }
        let deadline = try Deadline.after(timeout, ProcessError.self)
        // A copy of the pidfd, made under the lock: the state's own may be closed meanwhile (the
        // child reaped by another joiner, or by a start() on another thread), and its number
        // reused for another child's, which the poll would then watch instead.
        let me = mp_process_id()
        let (started, pidfd, done, starter, pid) = state.withLock { s in
            (
                s.started, s.exitCode == nil && s.pidfd >= 0 ? (try? duplicateDescriptor(s.pidfd)) ?? -1 : -1,
                s.exitCode != nil, s.starter, s.pid
            )
        }
        defer { if pidfd >= 0 { closeDescriptor(pidfd) } }
        guard started else { throw .notStarted }
        if pid == me { throw .joinSelf }  // a forked child's own object (Process.current)
        if done { return true }
        // Only the starter can wait (Python: "can only join a child process"); elsewhere the
        // wait would never end, or take waitid's ECHILD for an exit.
        if starter != me { throw .system(.noChildProcess, function: "waitid") }
        if pidfd < 0 { return try waitPolling(until: deadline) }
        let rc = mp_poll_readable(pidfd, deadline)
        if rc == 0 { return state.withLock { $0.exitCode != nil } }
        if rc < 0 {
            if state.withLock({ $0.exitCode != nil }) { return true }  // another joiner reaped it and closed the pidfd
            throw .system(Errno(rawValue: -rc), function: "ppoll")
        }
        reapIfExited()
        return state.withLock { $0.exitCode != nil }
    }

    /// Waits for the exit without a pidfd (none to spare, a kernel without them, or a start still
    /// under way on another thread): reaps without blocking, then sleeps a little (0.1 ms, doubling
    /// up to 10 ms), never holding the state lock while it waits, so that other threads can read the
    /// state and signal the child meanwhile. Throws ``ProcessError/notStarted`` if that start failed.
    private func waitPolling(until deadline: Int64) throws(ProcessError) -> Bool {
        var pause: Int64 = 100_000
        while true {
            reapIfExited()
            let (started, exited) = state.withLock { ($0.started, $0.exitCode != nil) }
            if exited { return true }
            if !started { throw .notStarted }
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
    /// status (it never blocks: waits happen outside the lock). Only in the process that started it:
    /// elsewhere waitid's ECHILD says nothing of its exit.
    func reapIfExited() {
        state.withLock { s in
            guard s.started, s.exitCode == nil, let pid = s.pid, s.starter == mp_process_id() else { return }
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
                closeDescriptor(s.pidfd)
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
        state.withLock { if $0.pidfd >= 0 { closeDescriptor($0.pidfd) } }
    }
}
