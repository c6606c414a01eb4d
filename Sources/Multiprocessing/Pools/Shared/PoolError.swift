import SystemPackage

/// Errors of ``ProcessPool`` and ``ThreadPool``, and of the tasks they run.
public enum PoolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A task was submitted after ``ProcessPool/close()`` or ``ProcessPool/terminate()`` (Python's
    /// `ValueError: Pool not running`).
    case closed
    /// A worker count below one.
    case invalidWorkerCount(Int)
    /// A `maxTasksPerChild` below one (pass nil for no limit).
    case invalidMaxTasksPerChild(Int)
    /// A `chunkSize` below one.
    case invalidChunkSize(Int)
    /// A timeout below zero.
    case negativeTimeout(Duration)
    /// `get(timeout:)` or `join(timeout:)` found the result not ready in time (Python's
    /// `multiprocessing.TimeoutError`). The task goes on; ask again later.
    case timeout
    /// The worker process running the task died (killed by a signal, crashed, or exited) before
    /// it finished. Only that task fails; the pool starts a replacement and goes on.
    case workerDied(pid: Int32, reason: WorkerExit)
    /// The pool was terminated before the task finished.
    case terminated
    /// The work function threw in a worker process an error that is not `Codable` (a `Codable`
    /// one comes back as itself): the error's type and its description.
    case taskFailed(type: String, message: String)
    /// A worker's initializer threw: the pool cannot run tasks, every pending one fails with this.
    case initializerFailed(type: String, message: String)
    /// `join()` on a pool that is still open: call ``ProcessPool/close()`` or
    /// ``ProcessPool/terminate()`` first (Python's `ValueError`).
    case stillRunning
    /// A blocking wait (or `join`) from inside a callback, which runs on the pool's result thread:
    /// that thread is the one that would deliver the result, so the wait could never end.
    case calledFromCallback
    /// ``ThreadPool/join(timeout:)`` from one of the pool's own tasks: the join waits for every
    /// task to end, the calling one included, so it could never return. (Call ``ThreadPool/close()``
    /// or ``ThreadPool/terminate()`` from a task; join from outside the pool.)
    case calledFromTask
    /// A task's input or result could not be encoded or decoded for the trip between processes.
    case coding(String)
    /// The operating system refused; `function` names the call.
    case system(Errno, function: String)
    /// No worker could be started: the reason says why (the forkserver failed, or workers forked by
    /// a closure pool's zygote kept getting stuck before their first task).
    case workersCannotStart(String)
    /// The pool was used in a process other than the one that made it (`owner`): a forked child
    /// inherits a copy of the pool's object, but the workers, the threads that deliver its results
    /// and its tasks are its parent's. Make a pool in the child instead. In such a child,
    /// `close()` and `terminate()` do nothing and `join` throws this: the parent's pool goes on.
    case otherProcess(owner: Int32)

    /// Whether the pool refuses every task submitted after this error: it is closed or terminated,
    /// broken (its workers cannot start, or their initializer fails), or another process's.
    var refusesLaterTasks: Bool {
        switch self {
        case .closed, .terminated, .initializerFailed, .workersCannotStart, .otherProcess: true
        default: false
        }
    }

    /// The error in words, for logs (`String(describing:)`).
    public var description: String {
        switch self {
        case .closed: "the pool is closed"
        case .invalidWorkerCount(let n): "invalid worker count \(n): at least 1"
        case .invalidMaxTasksPerChild(let n): "invalid maxTasksPerChild \(n): at least 1, or nil"
        case .invalidChunkSize(let n): "invalid chunk size \(n): at least 1"
        case .negativeTimeout(let d): "negative timeout \(d)"
        case .timeout: "timed out waiting for the result"
        case .workerDied(let pid, let reason): "the worker process \(pid) \(reason) while running the task"
        case .terminated: "the pool was terminated before the task finished"
        case .taskFailed(let type, let message): "\(type): \(message)"
        case .initializerFailed(let type, let message): "the worker initializer failed: \(type): \(message)"
        case .stillRunning: "join() on a pool that is still open: close() or terminate() it first"
        case .calledFromCallback: "a blocking pool call from a callback, which runs on the pool's result thread"
        case .calledFromTask: "join() from one of the pool's own tasks, which the join would wait for"
        case .coding(let message): "task data could not cross processes: \(message)"
        case .system(let errno, let function): "\(function): \(errno)"
        case .workersCannotStart(let reason): "the pool's workers cannot start: \(reason)"
        case .otherProcess(let owner):
            "the pool belongs to process \(owner), which made it: a forked child cannot use it (make a pool of its own)"
        }
    }
}

extension PoolError {
    /// A worker that could not start, as a pool error.
    init(starting error: ProcessError) {
        switch error {
        case .system(let errno, let function): self = .system(errno, function: function)
        case .forkServerFailed(let reason): self = .workersCannotStart(reason)
        default: self = .workersCannotStart(String(describing: error))
        }
    }
}

extension ProcessError {
    /// The system error behind a failed start (EAGAIN when the cause was not the system's).
    var systemErrno: Errno {
        if case .system(let e, _) = self { return e }
        return .resourceTemporarilyUnavailable
    }
}
