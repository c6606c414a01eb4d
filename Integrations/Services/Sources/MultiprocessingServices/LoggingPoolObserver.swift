import Logging
import Multiprocessing

/// A ``PoolObserver`` that logs a pool's troubles to a swift-log `Logger`, from the parent's
/// threads: worker deaths (pid, how it ended) and the tasks lost with them at `warning`,
/// replacements at `info`, workers the watchdog killed at `warning`, a broken pool at `error`, and
/// every failed task at `debug`. A pool given none logs nothing.
public struct LoggingPoolObserver: PoolObserver {
    public let logger: Logger

    /// Logs to `logger`, whose metadata (say, `pool: "primes"`) tells the pools apart.
    public init(logger: Logger) { self.logger = logger }

    public func taskFailed(after duration: Duration, error: any Error) {
        if case .workerDied(let pid, let reason) = error as? PoolError {
            logger.warning(
                "a task was lost with its worker",
                metadata: ["pid": "\(pid)", "exit": "\(reason)", "after": "\(duration)"])
        } else {
            logger.debug("a task failed", metadata: ["error": "\(error)", "after": "\(duration)"])
        }
    }

    public func workerDied(pid: Int32, exit: WorkerExit) {
        logger.warning("a pool worker died", metadata: ["pid": "\(pid)", "exit": "\(exit)"])
    }

    public func workerReplaced(pid: Int32) {
        logger.info("a pool worker was replaced", metadata: ["pid": "\(pid)"])
    }

    public func workerStuck(pid: Int32) {
        logger.warning("the watchdog killed a pool worker stuck at start-up", metadata: ["pid": "\(pid)"])
    }

    public func poolBroken(_ error: PoolError) {
        logger.error("the pool cannot go on", metadata: ["error": "\(error)"])
    }
}

/// Hands every event to each of `observers`, in order (a logger and a metrics adapter, say).
public struct PoolObservers: PoolObserver {
    public let observers: [any PoolObserver]

    public init(_ observers: [any PoolObserver]) { self.observers = observers }

    public func taskSubmitted() { for o in observers { o.taskSubmitted() } }
    public func taskSucceeded(after duration: Duration) { for o in observers { o.taskSucceeded(after: duration) } }
    public func taskFailed(after duration: Duration, error: any Error) {
        for o in observers { o.taskFailed(after: duration, error: error) }
    }
    public func workerDied(pid: Int32, exit: WorkerExit) { for o in observers { o.workerDied(pid: pid, exit: exit) } }
    public func workerReplaced(pid: Int32) { for o in observers { o.workerReplaced(pid: pid) } }
    public func workerStuck(pid: Int32) { for o in observers { o.workerStuck(pid: pid) } }
    public func poolBroken(_ error: PoolError) { for o in observers { o.poolBroken(error) } }
}
