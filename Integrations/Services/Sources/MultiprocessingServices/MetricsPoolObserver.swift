import CoreMetrics
import Multiprocessing
import Synchronization

/// A ``PoolObserver`` that records a pool's events as swift-metrics metrics, each with the
/// dimension `pool` (the label given here):
/// - `multiprocessing_pool_tasks_submitted_total`, `…_tasks_succeeded_total`,
///   `…_tasks_failed_total` (counters);
/// - `multiprocessing_pool_task_duration_seconds` (timer: submission to result, nanoseconds);
/// - `multiprocessing_pool_tasks_in_flight` (gauge: submitted and not yet settled);
/// - `multiprocessing_pool_worker_deaths_total` (counter, dimension `reason`: `signal_9`,
///   `exit_3`, ...), `…_worker_replacements_total`, `…_watchdog_kills_total`,
///   `…_broken_total`.
public final class MetricsPoolObserver: PoolObserver {
    private let submitted: Counter
    private let succeeded: Counter
    private let failed: Counter
    private let duration: CoreMetrics.Timer
    private let inFlightGauge: Gauge
    private let replacements: Counter
    private let watchdogKills: Counter
    private let broken: Counter
    private let pool: String
    private let factory: any MetricsFactory
    /// Tasks in flight, recorded under this lock: events come from several threads at once, and a
    /// count recorded outside it could land after a later one (the gauge then stays wrong until
    /// the next event, for good after the last).
    private let inFlight = Mutex<Int>(0)

    /// Metrics for the pool named `pool`, made by `factory` (the bootstrapped one by default).
    public init(pool: String, factory: any MetricsFactory = MetricsSystem.factory) {
        self.pool = pool
        self.factory = factory
        let dimensions = [("pool", pool)]
        submitted = Counter(
            label: "multiprocessing_pool_tasks_submitted_total", dimensions: dimensions, factory: factory)
        succeeded = Counter(
            label: "multiprocessing_pool_tasks_succeeded_total", dimensions: dimensions, factory: factory)
        failed = Counter(label: "multiprocessing_pool_tasks_failed_total", dimensions: dimensions, factory: factory)
        duration = CoreMetrics.Timer(
            label: "multiprocessing_pool_task_duration_seconds", dimensions: dimensions, factory: factory)
        inFlightGauge = Gauge(label: "multiprocessing_pool_tasks_in_flight", dimensions: dimensions, factory: factory)
        replacements = Counter(
            label: "multiprocessing_pool_worker_replacements_total", dimensions: dimensions, factory: factory)
        watchdogKills = Counter(
            label: "multiprocessing_pool_watchdog_kills_total", dimensions: dimensions, factory: factory)
        broken = Counter(label: "multiprocessing_pool_broken_total", dimensions: dimensions, factory: factory)
    }

    public func taskSubmitted() {
        submitted.increment()
        inFlight.withLock { n in
            n += 1
            inFlightGauge.record(n)
        }
    }

    public func taskSucceeded(after duration: Duration) {
        succeeded.increment()
        settled(duration)
    }

    public func taskFailed(after duration: Duration, error: any Error) {
        failed.increment()
        settled(duration)
    }

    private func settled(_ elapsed: Duration) {
        let (seconds, attoseconds) = elapsed.components
        duration.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
        inFlight.withLock { n in
            n -= 1
            inFlightGauge.record(n)
        }
    }

    public func workerDied(pid: Int32, exit: WorkerExit) {
        let reason: String
        switch exit {
        case .signal(let n): reason = "signal_\(n)"
        case .exited(let code): reason = "exit_\(code)"
        }
        Counter(
            label: "multiprocessing_pool_worker_deaths_total", dimensions: [("pool", pool), ("reason", reason)],
            factory: factory
        ).increment()
    }

    public func workerReplaced(pid: Int32) { replacements.increment() }
    public func workerStuck(pid: Int32) { watchdogKills.increment() }
    public func poolBroken(_ error: PoolError) { broken.increment() }
}
