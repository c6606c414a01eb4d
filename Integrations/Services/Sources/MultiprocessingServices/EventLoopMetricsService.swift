import CoreMetrics
import Multiprocessing
import ServiceLifecycle
import Synchronization

/// Samples event loops as swift-metrics metrics every `interval`, until the service group shuts
/// down; each metric has the dimension `loop` (the loop's name):
/// - `multiprocessing_event_loop_turns_total` (counter: the loop's turns, see
///   `EventLoop.turns`);
/// - `multiprocessing_event_loop_operations_in_flight` (gauge: operations handed to the kernel and
///   not completed, see `EventLoop.operationsInFlight`).
///
/// Sampling reads two counters the loop keeps anyway, so the loop pays nothing per turn for it
/// (NIO's metrics delegate, by contrast, is called on the loop at every tick).
public struct EventLoopMetricsService: Service {
    private let loops: [EventLoop]
    private let interval: Duration
    private let factory: any MetricsFactory
    /// Each loop's turns already added to its counter, kept across runs of the service: a second
    /// run that started from zero would add every earlier turn again.
    private let counted: Counted

    /// Samples `loops` every `interval` (at least a millisecond: a shorter or negative one would
    /// make the service spin) with `factory` (the bootstrapped one by default).
    public init(
        _ loops: [EventLoop], interval: Duration = .seconds(1), factory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.loops = loops
        self.interval = max(interval, .milliseconds(1))
        self.factory = factory
        counted = Counted(loops: loops.count)
    }

    /// Samples every loop of `group`.
    public init(
        _ group: EventLoopGroup, interval: Duration = .seconds(1), factory: any MetricsFactory = MetricsSystem.factory
    ) {
        self.init(group.loops, interval: interval, factory: factory)
    }

    public func run() async throws {
        let (loops, interval, factory, counted) = (self.loops, self.interval, self.factory, self.counted)
        // Ends at the graceful shutdown (the sleep is cancelled then) or at the group's cancellation.
        await cancelWhenGracefulShutdown {
            let meters = loops.map { loop in
                let dimensions = [("loop", loop.name)]
                return (
                    loop: loop,
                    turns: Counter(
                        label: "multiprocessing_event_loop_turns_total", dimensions: dimensions, factory: factory),
                    inFlight: Gauge(
                        label: "multiprocessing_event_loop_operations_in_flight", dimensions: dimensions,
                        factory: factory)
                )
            }
            // A last sample at the end: the turns since the one before are counted too.
            func sample() {
                counted.turns.withLock { counted in
                    for (i, meter) in meters.enumerated() {
                        let turns = meter.loop.turns
                        meter.turns.increment(by: Int64(turns - counted[i]))
                        counted[i] = turns
                        meter.inFlight.record(meter.loop.operationsInFlight)
                    }
                }
            }
            while true {
                sample()
                do {
                    try await Task.sleep(for: interval)
                } catch {
                    return sample()
                }
            }
        }
    }
}

/// The turns an ``EventLoopMetricsService`` has counted, per loop: shared by the copies of the
/// service and by its runs.
private final class Counted: Sendable {
    let turns: Mutex<[Int]>
    init(loops: Int) { turns = Mutex([Int](repeating: 0, count: loops)) }
}
