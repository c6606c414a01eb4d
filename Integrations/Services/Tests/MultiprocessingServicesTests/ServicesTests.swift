import Logging
import MetricsTestKit
import Multiprocessing
import MultiprocessingServices
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

#if canImport(Glibc)
    import Glibc
#endif

struct Boom: Error {}

@Suite("MultiprocessingServices")
struct ServicesTests {
    @Test("a pool service drains at a graceful shutdown: the submitted tasks finish, then its workers end")
    func drains() async throws {
        let pool = try ProcessPool<Int, Int>(processes: 2) { x in
            usleep(20_000)
            return x * 2
        }
        let service = PoolService(pool, drainTimeout: .seconds(60))
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                let handles = (0..<8).map { pool.applyAsync($0) }
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
                for (i, h) in handles.enumerated() { #expect(try h.get(timeout: .zero) == i * 2) }
            }
        }
        #expect(pool.workerPIDs.isEmpty)
        #expect(throws: PoolError.closed) { try pool.apply(1) }
    }

    @Test("a cancelled pool service terminates its pool: what had not finished fails")
    func cancelled() async throws {
        let pool = try ProcessPool<Int, Int>(processes: 1) { x in
            sleep(30)
            return x
        }
        let handle = pool.applyAsync(1)
        let service = PoolService(pool)
        let run = Task { try await service.run() }
        usleep(100_000)
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        #expect(throws: PoolError.terminated) { try handle.get(timeout: .seconds(30)) }
        #expect(pool.workerPIDs.isEmpty)
    }

    @Test("an event loop group service ends at the shutdown, its loops stopped")
    func loops() async throws {
        let loops = try EventLoopGroup(loopCount: 2)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await EventLoopGroupService(loops).run() }
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
    }

    @Test("the event loop metrics service samples each loop's turns and operations in flight until the shutdown")
    func loopMetrics() async throws {
        let metrics = TestMetrics()
        let group = try EventLoopGroup(loopCount: 2)
        defer { group.shutdown() }
        let busy = group.loops[0]
        let sleeper = Task(executorPreference: busy) { try await sleep(for: .seconds(60)) }  // one timer in flight
        defer { sleeper.cancel() }
        let service = EventLoopMetricsService(group, interval: .milliseconds(10), factory: metrics)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await service.run() }
                let gauge = { (name: String) in
                    try? metrics.expectGauge("multiprocessing_event_loop_operations_in_flight", [("loop", name)])
                }
                #expect(await eventuallyAsync { gauge(busy.name)?.lastValue == 1 })
                #expect(await eventuallyAsync { gauge(group.loops[1].name)?.lastValue == 0 })
                let turns = try metrics.expectCounter("multiprocessing_event_loop_turns_total", [("loop", busy.name)])
                #expect(await eventuallyAsync { turns.totalValue > 0 && turns.totalValue <= Int64(busy.turns) })
                trigger.triggerGracefulShutdown()
                try await tasks.waitForAll()  // the service ends at the shutdown
            }
        }
    }

    @Test("the metrics adapter counts tasks, failures, deaths and replacements, with the pool's name")
    func metrics() throws {
        let metrics = TestMetrics()
        let observer = MetricsPoolObserver(pool: "squares", factory: metrics)
        let running = try SharedMemory(size: 8)
        let pool = try ProcessPool<Int, Int>(processes: 2, observer: observer) { x in
            if x < 0 { throw Boom() }
            if x == 1000 {
                running.buffer.baseAddress!.storeBytes(of: getpid(), as: Int32.self)
                sleep(30)  // killed before it returns
            }
            return x * x
        }
        defer { pool.terminate() }
        _ = try pool.map(Array(0..<10), chunkSize: 1)
        #expect(throws: (any Error).self) { try pool.apply(-1) }
        let doomed = pool.applyAsync(1000)
        let pid = { running.buffer.baseAddress!.load(as: Int32.self) }
        #expect(eventually { pid() != 0 })
        #expect(pool.workerPIDs.contains(pid()))
        kill(pid(), SIGKILL)
        #expect(throws: PoolError.self) { try doomed.get(timeout: .seconds(30)) }
        #expect(eventually { metrics.counterTotal(label: "multiprocessing_pool_worker_replacements_total") == 1 })
        let dims = [("pool", "squares")]
        #expect(try metrics.expectCounter("multiprocessing_pool_tasks_submitted_total", dims).totalValue == 12)
        #expect(try metrics.expectCounter("multiprocessing_pool_tasks_succeeded_total", dims).totalValue == 10)
        #expect(try metrics.expectCounter("multiprocessing_pool_tasks_failed_total", dims).totalValue == 2)
        #expect(
            try metrics.expectCounter(
                "multiprocessing_pool_worker_deaths_total", [("pool", "squares"), ("reason", "signal_9")]
            ).totalValue == 1)
        #expect(try metrics.expectTimer("multiprocessing_pool_task_duration_seconds", dims).values.count == 12)
        #expect(try metrics.expectGauge("multiprocessing_pool_tasks_in_flight", dims).lastValue == 0)
    }

    @Test("the logging observer and the fan-out: a worker's death is logged, and counted")
    func logging() throws {
        let lines = Recorded()
        let logger = Logger(label: "pool") { _ in lines }
        let metrics = TestMetrics()
        let observer = PoolObservers([
            LoggingPoolObserver(logger: logger), MetricsPoolObserver(pool: "p", factory: metrics),
        ])
        observer.workerDied(pid: 42, exit: .signal(9))
        observer.workerReplaced(pid: 43)
        #expect(lines.messages.contains { $0.contains("died") && $0.contains("42") })
        #expect(metrics.counterTotal(label: "multiprocessing_pool_worker_deaths_total") == 1)
    }
}

/// What a logger wrote, for the logging test.
final class Recorded: LogHandler, @unchecked Sendable {
    private let lock = Lock()
    private var lines: [String] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    var messages: [String] { (try? lock.withLock { lines }) ?? [] }
    func log(event: LogEvent) {
        try? lock.withLock { lines.append("\(event.message) \(event.metadata ?? [:])") }
    }
}

func eventually(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) rethrows -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if try condition() { return true }
        usleep(1000)
    }
    return try condition()
}

/// Polls `condition` every 5 ms for up to `timeout`, suspending between polls.
func eventuallyAsync(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return try await condition()
}
