import CMultiprocessing

/// What a pool tells an observer as it works: the hooks for logging and metrics, with no
/// dependency (`MultiprocessingServices`-style adapters turn them into swift-log and swift-metrics
/// calls). Shaped like SwiftNIO's `NIOEventLoopMetricsDelegate` and postgres-nio's
/// `ConnectionPoolObservabilityDelegate`: one method per event, each with a default that does
/// nothing, so an observer implements only what it records.
///
/// Every call comes from one of the parent process's threads (the caller's for a submission, the
/// pool's result thread or its watchdog otherwise), never from a worker process: an observer may
/// log, lock and allocate. Calls for one pool may come from several threads at once; keep each
/// short, since the result thread waits for it. A pool without an observer pays one nil check per
/// event.
///
/// ```swift
/// final class Counting: PoolObserver, @unchecked Sendable {
///     let lock = Lock()
///     var deaths = 0
///     func workerDied(pid: Int32, exit: WorkerExit) { try? lock.withLock { deaths += 1 } }
/// }
/// let pool = try ProcessPool<Int, Int>(processes: 2, observer: Counting()) { $0 * $0 }
/// ```
public protocol PoolObserver: Sendable {
    /// A task (or a chunk of a `map`) was accepted. Told before the task is queued, so before
    /// its outcome; a pool that stops in between then reports it failed.
    func taskSubmitted()
    /// A task finished with a value, `duration` after it was submitted.
    func taskSucceeded(after duration: Duration)
    /// A task failed, `duration` after it was submitted: its own error, or a ``PoolError``
    /// (``PoolError/workerDied(pid:reason:)`` for the task of a worker that died,
    /// ``PoolError/terminated``, ...).
    func taskFailed(after duration: Duration, error: any Error)
    /// A worker process ended while the pool was running (a crash, a kill, or its
    /// `maxTasksPerChild`), not at the pool's own shutdown.
    func workerDied(pid: Int32, exit: WorkerExit)
    /// A worker was started in place of one that ended.
    func workerReplaced(pid: Int32)
    /// The watchdog killed a worker that was not ready within the pool's start-up limit (see
    /// ``ProcessPool/watchdogReplacements``).
    func workerStuck(pid: Int32)
    /// The pool cannot go on (an initializer failed, workers cannot start): every unfinished and
    /// later task fails with `error`.
    func poolBroken(_ error: PoolError)
}

extension PoolObserver {
    /// Does nothing: implement it to count or log submissions.
    public func taskSubmitted() {}
    /// Does nothing: implement it to record the latency of successful tasks.
    public func taskSucceeded(after duration: Duration) {}
    /// Does nothing: implement it to record failures and their errors.
    public func taskFailed(after duration: Duration, error: any Error) {}
    /// Does nothing: implement it to log or count workers that crashed or were killed.
    public func workerDied(pid: Int32, exit: WorkerExit) {}
    /// Does nothing: implement it to count the workers the pool started in place of dead ones.
    public func workerReplaced(pid: Int32) {}
    /// Does nothing: implement it to count the workers the watchdog killed.
    public func workerStuck(pid: Int32) {}
    /// Does nothing: implement it to alert when the pool can no longer run tasks.
    public func poolBroken(_ error: PoolError) {}
}

/// The time since `start` (monotonic ns; 0 when nobody observes) as a Duration.
func elapsed(since start: Int64) -> Duration {
    start == 0 ? .zero : .nanoseconds(max(0, mp_monotonic_ns() - start))
}
