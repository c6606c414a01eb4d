import CoreMetrics
import MetricsTestKit
import Multiprocessing
import MultiprocessingServices
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Review faults in the services package.
@Suite("ServicesFaultTests")
struct ServicesFaultTests {
    /// A pool's observer is called from several threads at once (a ProcessPool settles tasks on its
    /// result thread, on a submitting thread that abandons one, on the thread that terminates it).
    /// The in-flight gauge was recorded after a relaxed add, outside any lock: two settles that
    /// overlap can record in the other order, and the gauge then stays at 1 with nothing in
    /// flight. The metrics backend's handler here makes the first settle's record slow.
    @Test("two settles at once leave the in-flight gauge at 0, whatever order their records land in")
    func inFlightGaugeRace() throws {
        let factory = SlowGaugeFactory()
        let observer = MetricsPoolObserver(pool: "p", factory: factory)
        observer.taskSubmitted()
        observer.taskSubmitted()
        factory.gauge.armed.store(true, ordering: .relaxed)
        let first = Thread { observer.taskSucceeded(after: .zero) }  // records 1, slowly
        try first.start()
        #expect(try factory.gauge.recordingOne.wait(timeout: .seconds(30)))
        let second = Thread { observer.taskSucceeded(after: .zero) }  // records 0
        try second.start()
        #expect(try first.join(timeout: .seconds(30)))
        #expect(try second.join(timeout: .seconds(30)))
        #expect(factory.gauge.values.last == 0, "recorded \(factory.gauge.values)")
    }

    /// The turns counter counts each turn once. A second run of the service (a service group made
    /// again, say) started from zero and added every turn of the loop's life again.
    @Test("a loop metrics service run twice counts each turn once")
    func loopMetricsRunTwice() async throws {
        let metrics = TestMetrics()
        let group = try EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        let loop = group.loops[0]
        for _ in 0..<20 { _ = await Task(executorPreference: loop) { 1 }.value }  // some turns
        let service = EventLoopMetricsService(group, interval: .milliseconds(10), factory: metrics)
        for _ in 0..<2 {
            try await testGracefulShutdown { trigger in
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    tasks.addTask { try await service.run() }
                    let turns = {
                        try? metrics.expectCounter("multiprocessing_event_loop_turns_total", [("loop", loop.name)])
                    }
                    #expect(await eventuallyAsync { (turns()?.totalValue ?? 0) > 0 })
                    try? await Task.sleep(for: .milliseconds(50))  // a few samples
                    trigger.triggerGracefulShutdown()
                    try await tasks.waitForAll()
                }
            }
        }
        let counted = try metrics.expectCounter("multiprocessing_event_loop_turns_total", [("loop", loop.name)])
        #expect(counted.totalValue <= Int64(loop.turns), "counted \(counted.totalValue) of \(loop.turns) turns")
    }

    /// The service samples once more as it ends: the turns since its last sample are counted.
    /// Before, they were lost (with the default interval of a second, up to a second's worth).
    @Test("a loop metrics service counts the turns since its last sample when it ends")
    func loopMetricsLastSample() async throws {
        let metrics = TestMetrics()
        let group = try EventLoopGroup(loopCount: 1)
        defer { group.shutdown() }
        let loop = group.loops[0]
        let service = EventLoopMetricsService(group, interval: .seconds(3600), factory: metrics)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await service.run() }
                let turns = {
                    try? metrics.expectCounter("multiprocessing_event_loop_turns_total", [("loop", loop.name)])
                }
                #expect(await eventuallyAsync { turns() != nil })  // the first sample
                for _ in 0..<20 { _ = await Task(executorPreference: loop) { 1 }.value }  // turns after it
                let before = loop.turns
                trigger.triggerGracefulShutdown()
                try await tasks.waitForAll()
                #expect((turns()?.totalValue ?? 0) >= Int64(before), "counted \(turns()?.totalValue ?? 0) of \(before)")
            }
        }
    }

    /// A graceful shutdown ends the pool with its workers. With a negative drain timeout (a
    /// `--drain-seconds -1` in the prime server) the drain threw `negativeTimeout` after closing
    /// the pool, and nothing terminated it: the service failed and the workers lived on.
    @Test("a negative drain timeout still ends the pool and its workers at the shutdown")
    func negativeDrainTimeout() async throws {
        let pool = try ProcessPool<Int, Int>(processes: 1) { $0 }
        defer { pool.terminate() }
        #expect(try pool.apply(2) == 2)
        let service = PoolService(pool, drainTimeout: .seconds(-1))
        await #expect(throws: Never.self) {
            try await testGracefulShutdown { trigger in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await service.run() }
                    trigger.triggerGracefulShutdown()
                    try await group.waitForAll()
                }
            }
        }
        #expect(pool.workerPIDs.isEmpty)
    }

    /// "Past the drain timeout, it terminates the pool": with a ThreadPool, the terminate after the
    /// timeout waited for the running task (a thread cannot be killed) on a thread of Swift's
    /// cooperative pool, so the service ended only when that task did, however long after the
    /// timeout. Here the task runs until the test lets it go (or 10 s).
    @Test("a thread pool service ends at its drain timeout, even with a task still running")
    func threadPoolDrainTimeout() async throws {
        let (pool, release, running) = try threadPoolRunningATask()
        let service = PoolService(pool, drainTimeout: .milliseconds(100))
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await service.run() }
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(!running.isReady, "the service waited for the running task")
        release.set()
        #expect(try running.get(timeout: .seconds(30)) == 1)  // it still finishes, its thread then ends
        #expect(throws: PoolError.terminated) { try pool.apply { 2 } }
    }

    /// A cancellation during the drain terminates the pool from the cancelling thread. With a
    /// ThreadPool, that terminate waited for the running task: `cancel()` itself (the service
    /// group's own task, in a group) blocked until the task ended.
    @Test("cancelling a draining thread pool service does not block the canceller")
    func threadPoolCancelDoesNotBlock() async throws {
        let (pool, release, running) = try threadPoolRunningATask()
        let service = PoolService(pool, drainTimeout: .seconds(60))
        try await testGracefulShutdown { trigger in
            let run = Task { try await service.run() }
            trigger.triggerGracefulShutdown()
            try? await Task.sleep(for: .milliseconds(200))  // draining by now
            run.cancel()
            #expect(!running.isReady, "cancel() waited for the running task")
            release.set()
            _ = try? await run.value
        }
        #expect(try running.get(timeout: .seconds(30)) == 1)
    }

    /// A pool reported a submission after the task was queued and the lock released. A terminate
    /// in between dropped the task and reported it failed first, so the in-flight gauge went to -1
    /// before the submission brought it back to 0. Here an observer ahead of the metrics one holds
    /// the submission's report until a failure has been reported (or two seconds).
    @Test("a task dropped by terminate while its submission is reported never takes the in-flight gauge below 0")
    func inFlightNeverNegative() throws {
        let metrics = TestMetrics()
        let gate = SubmitGate()
        let pool = try ThreadPool(
            threads: 1, observer: PoolObservers([gate, MetricsPoolObserver(pool: "t", factory: metrics)]))
        let submitter = Thread { _ = pool.applyAsync { 1 } }  // its report waits at the gate
        try submitter.start()
        #expect(try gate.submitting.wait(timeout: .seconds(30)))
        let terminator = Thread { pool.terminate() }
        try terminator.start()
        #expect(try submitter.join(timeout: .seconds(30)))
        #expect(try terminator.join(timeout: .seconds(30)))
        let gauge = try metrics.expectGauge("multiprocessing_pool_tasks_in_flight", [("pool", "t")])
        #expect(gauge.values.allSatisfy { $0 >= 0 }, "recorded \(gauge.values)")
        #expect(gauge.lastValue == 0)
    }
}

/// The blocking wait, from an async test (whose `wait` is the loop's async one).
/// A one-thread pool whose task has started and runs until `release` is set (or 10 s).
func threadPoolRunningATask() throws -> (ThreadPool, Event, AsyncResult<Int>) {
    let pool = try ThreadPool(threads: 1)
    let release = Event()
    let started = Event()
    let running = pool.applyAsync { () -> Int in
        started.set()
        _ = try? release.wait(timeout: .seconds(10))
        return 1
    }
    #expect(try blockingWait(started, .seconds(30)))
    return (pool, release, running)
}

func blockingWait(_ event: Event, _ timeout: Duration) throws -> Bool { try event.wait(timeout: timeout) }

/// An observer that holds its first `taskSubmitted` until a task failure has been reported (or
/// two seconds).
final class SubmitGate: PoolObserver {
    let submitting = Event()
    let failed = Event()
    private let first = Atomic<Bool>(true)

    func taskSubmitted() {
        guard first.exchange(false, ordering: .relaxed) else { return }
        submitting.set()
        _ = try? failed.wait(timeout: .seconds(2))
    }

    func taskFailed(after duration: Duration, error: any Error) { failed.set() }
}

/// A metrics factory whose gauges' handler, once armed, takes its time over a record of 1: until
/// a 0 has been recorded, or two seconds (a record that holds a lock, a busy registry).
final class SlowGaugeFactory: MetricsFactory {
    let gauge = SlowGauge()

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler { NoCounter() }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        label == "multiprocessing_pool_tasks_in_flight" ? gauge : NoRecorder()
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { NoTimer() }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}
}

final class SlowGauge: RecorderHandler {
    let armed = Atomic<Bool>(false)
    let recordingOne = Event()
    let zeroRecorded = Event()
    private let recorded = Mutex<[Int64]>([])

    var values: [Int64] { recorded.withLock { $0 } }

    func record(_ value: Int64) {
        let armed = armed.load(ordering: .relaxed)
        if armed && value == 1 {
            recordingOne.set()
            _ = try? zeroRecorded.wait(timeout: .seconds(2))
        }
        recorded.withLock { $0.append(value) }
        if armed && value == 0 { zeroRecorded.set() }
    }

    func record(_ value: Double) { record(Int64(value)) }
}

final class NoCounter: CounterHandler {
    func increment(by: Int64) {}
    func reset() {}
}

final class NoRecorder: RecorderHandler {
    func record(_ value: Int64) {}
    func record(_ value: Double) {}
}

final class NoTimer: TimerHandler {
    func recordNanoseconds(_ duration: Int64) {}
}
