import CMultiprocessing
import Testing

@testable import Multiprocessing

/// Gives `loop` the largest margin (250 µs): a precise sleep shorter than that arms no timer, so
/// every check below happens while it polls.
private func pollAtOnce(_ loop: EventLoop) {
    for _ in 0..<64 { loop.wakeLatency.record(WakeLatency.maximumMargin) }
    #expect(loop.wakeLatency.margin == WakeLatency.maximumMargin)
}

@Suite("Precise sleeps: tolerance .zero, timer slack")
struct PreciseSleepTests {
    @Test("a precise sleep never returns before its deadline, on a loop and off any loop")
    func neverEarly() async throws {
        let durations: [Duration] = [.zero, .microseconds(20), .microseconds(300), .milliseconds(1), .milliseconds(3)]
        let check: @Sendable () async throws -> Void = {
            for d in durations {
                for tolerance: Duration in [.zero, .microseconds(5)] {
                    let start = mp_monotonic_ns()
                    try await sleep(for: d, tolerance: tolerance)
                    #expect(mp_monotonic_ns() - start >= (try Deadline.nanoseconds(d, SyncError.self)))
                }
                let deadline = ContinuousClock.now + d
                try await sleep(until: deadline, tolerance: .zero)
                #expect(ContinuousClock.now >= deadline)
            }
        }
        try await onLoop { try await check() }
        let offLoop = Task { try await check() }  // the shared loop's timer, polling on the default executor
        try await onLoop(limit: .seconds(60)) { try await offLoop.value }
    }

    @Test("the wake-up margin settles near the samples' 97th percentile, within its bounds")
    func marginBounds() {
        let latency = WakeLatency()
        // 98 % of the wake-ups take 20 µs, 2 % are preempted for a tick: the ticks do not count.
        for i in 0..<5_000 { latency.record(i % 50 == 0 ? 4_000_000 : 20_000) }
        #expect(latency.margin > 15_000 && latency.margin < 30_000)
        for _ in 0..<5_000 { latency.record(30_000) }
        #expect(abs(latency.margin - 30_000) < 5_000)
        for _ in 0..<200 { latency.record(4_000_000) }  // preempted, not woken late: ignored
        #expect(abs(latency.margin - 30_000) < 5_000)
        for _ in 0..<200 { latency.record(WakeLatency.maximumMargin) }
        #expect(latency.margin == WakeLatency.maximumMargin)
        for _ in 0..<20_000 { latency.record(-5) }
        #expect(latency.margin == WakeLatency.minimumMargin)
    }

    @Test("100 runnable coroutines all run while a precise sleep polls the clock")
    func othersRunWhilePolling() async throws {
        let loop = try EventLoop()
        pollAtOnce(loop)
        let (counted, slept) = try await onLoop(loop) { () async throws -> (Int, Int64) in
            let counter = Locked(0)
            let start = mp_monotonic_ns()
            let sleeper = Task(executorPreference: loop) { () async throws -> Int in
                try await sleep(for: .microseconds(200), tolerance: .zero)
                return counter.withLock { $0 }
            }
            // Queued behind the sleeper's first turn: a poll that did not yield would finish first.
            let counters = (0..<100).map { _ in
                Task(executorPreference: loop) { counter.withLock { $0 += 1 } }
            }
            let counted = try await sleeper.value
            let slept = mp_monotonic_ns() - start
            for c in counters { await c.value }
            return (counted, slept)
        }
        #expect(counted == 100)
        #expect(slept >= 200_000)
    }

    @Test("cancelling a precise sleep ends it, before its timer and while it polls")
    func cancel() async throws {
        let loop = try EventLoop()
        try await onLoop(loop) {
            // Cancelled while its (early) timer is in the ring.
            let far = Task(executorPreference: loop) { try await sleep(for: .seconds(30), tolerance: .zero) }
            try await sleep(for: .milliseconds(10))
            far.cancel()
            await #expect(throws: CancellationError.self) { try await far.value }
        }
        let polling = try EventLoop()
        pollAtOnce(polling)
        try await onLoop(polling) {
            // Cancelled between two polls by a coroutine of the same loop.
            let sleeper = Task(executorPreference: polling) {
                do {
                    try await sleep(for: .microseconds(200), tolerance: .zero)
                } catch {
                    return error is CancellationError
                }
                return false
            }
            // Queued behind the sleeper's first turn; the sleeper checks for cancellation at each
            // poll before it reads the clock, so it throws however late it runs again.
            let canceller = Task(executorPreference: polling) { sleeper.cancel() }
            await canceller.value
            #expect(await sleeper.value)
            // Already cancelled before it starts.
            let early = Task(executorPreference: polling) {
                withUnsafeCurrentTask { $0?.cancel() }
                try await sleep(for: .seconds(30), tolerance: .zero)
            }
            await #expect(throws: CancellationError.self) { try await early.value }
        }
    }

    @Test("a negative tolerance is a typed error; a nil or large one is a plain timer")
    func tolerances() async throws {
        try await onLoop {
            await #expect(throws: SyncError.negativeTimeout(.microseconds(-1))) {
                try await sleep(for: .milliseconds(1), tolerance: .microseconds(-1))
            }
            for tolerance: Duration? in [nil, .milliseconds(5)] {
                let start = mp_monotonic_ns()
                try await sleep(for: .milliseconds(2), tolerance: tolerance)
                #expect(mp_monotonic_ns() - start >= 2_000_000)
            }
        }
    }

    @Test("the library's threads have 1 ns of timer slack; sleep(for:) restores a caller's own")
    func timerSlack() throws {
        let seen = Locked<Int64>(0)
        let t = Thread(name: "slack") { seen.withLock { $0 = mp_timer_slack_ns() } }
        try t.start()
        #expect(try t.join(timeout: .seconds(30)))
        #expect(seen.withLock { $0 } == 1)
        // The test runner's thread is not the library's: its slack is put back after a sleep.
        let before = mp_timer_slack_ns()
        try sleep(for: .microseconds(100))
        #expect(mp_timer_slack_ns() == before)
    }
}
