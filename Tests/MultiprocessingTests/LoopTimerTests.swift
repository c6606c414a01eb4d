import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Timers that a loop's own tasks await in the loop's slots (`TimerWait`), without an operation
/// object: cancellation from any thread, a late cancel request, slots reused over many chunks.
@Suite("Loop timers in slots")
struct LoopTimerTests {
    // A sleep that was not cut short would end after its 30 s without an error: the error proves the
    // cancellation (no clock is read; the test runner's own scheduling may lag under load).
    @Test("another thread cancels a coroutine sleeping on its loop: the sleep throws CancellationError")
    func cancelFromAnotherThread() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let sleeper = Task(executorPreference: loop) { try await sleep(for: .seconds(30)) }
        #expect(eventually { loop.operationsInFlight == 1 })
        let canceller = Thread { sleeper.cancel() }
        try canceller.start()
        #expect(try canceller.join(timeout: .seconds(30)))
        await #expect(throws: CancellationError.self) { try await value(of: sleeper) }
        #expect(eventually { loop.operationsInFlight == 0 })
    }

    @Test("a late cancel request for a slot leaves the next timer in that slot to its deadline")
    func lateCancelRequest() async throws {
        let loop = try EventLoop()
        let (error, elapsed, armedAgain, inUse) = try await onLoop(loop) {
            () async throws -> (String?, Duration, Int, Int) in
            // The free list hands out the slot given back last: the sleeper's timer takes this one.
            let slot = loop.takeTimerSlot()
            loop.giveBackTimerSlot(slot)
            let start = ContinuousClock.now
            let sleeper = Task(executorPreference: loop) { try await sleep(for: .milliseconds(300)) }
            // Yields (no timer of this task's own) until the sleeper's timer is in the ring.
            var turns = 0
            while loop.operationsInFlight == 0 && turns < 100_000 {
                await Task.yield()
                turns += 1
            }
            #expect(loop.operationsInFlight == 1)
            // What a cancellation handler whose timer has completed sends, arriving late.
            loop.schedule(.cancelTimer(UInt64(UInt(bitPattern: slot) | TimerWait.tag)))
            let failure: String?
            do {
                try await value(of: sleeper)
                failure = nil
            } catch {
                failure = "\(error)"
            }
            return (failure, ContinuousClock.now - start, loop.timersArmedAgain, loop.timerSlotsInUse)
        }
        #expect(error == nil)
        #expect(elapsed >= .milliseconds(300))
        #expect(armedAgain == 1)  // the late request did hit the sleeper's timer
        #expect(inUse == 0)
    }

    @Test("a thousand sleepers over several chunks of slots: all cancelled from another thread, then all reused")
    func manySleepersCancelledThenReused() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let count = 1_000
        let parent = Task(executorPreference: loop) { () async -> (cancelled: Int, other: Int, inUse: Int) in
            let (cancelled, other) = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<count {
                    group.addTask {
                        do {
                            try await sleep(for: .seconds(30))
                            return false
                        } catch {
                            return error is CancellationError
                        }
                    }
                }
                var cancelled = 0
                var other = 0
                for await wasCancelled in group {
                    if wasCancelled { cancelled += 1 } else { other += 1 }
                }
                return (cancelled, other)
            }
            return (cancelled, other, loop.timerSlotsInUse)
        }
        #expect(eventually { loop.operationsInFlight == count })
        let canceller = Thread { parent.cancel() }
        try canceller.start()
        #expect(try canceller.join(timeout: .seconds(30)))
        let outcome = try await value(of: parent)
        #expect(outcome.cancelled == count && outcome.other == 0 && outcome.inUse == 0)
        #expect(eventually { loop.operationsInFlight == 0 })

        // The same slots again: every sleep completes, none is cut short.
        let (completed, inUse) = try await onLoop(loop) { () async throws -> (Int, Int) in
            let completed = try await withThrowingTaskGroup(of: Duration.self) { group in
                for _ in 0..<count {
                    group.addTask {
                        let start = ContinuousClock.now
                        try await sleep(for: .milliseconds(5))
                        return ContinuousClock.now - start
                    }
                }
                var completed = 0
                for try await elapsed in group where elapsed >= .milliseconds(5) { completed += 1 }
                return completed
            }
            return (completed, loop.timerSlotsInUse)
        }
        #expect(completed == count && inUse == 0)
    }

    @Test("a coroutine resumed off its loop's thread after a late cancel arms its timer as an operation")
    func lateCancelResumedElsewhere() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let shared = SharedActor()
        // The slot the sleeper's timer takes (see lateCancelRequest).
        let slot = try await value(
            of: Task(executorPreference: loop) { () -> UInt in
                let slot = loop.takeTimerSlot()
                loop.giveBackTimerSlot(slot)
                return UInt(bitPattern: slot)
            })
        // On the loop's thread: the actor is idle, and a task that prefers the loop runs it there.
        let sleeper = Task(executorPreference: loop) { try await shared.sleep(for: .seconds(60)) }
        #expect(try await watch(loop) { loop.operationsInFlight == 1 })
        // A task without a preference takes the actor on a pool thread and keeps it.
        let release = Locked(false)
        let holding = Locked(false)
        let holder = Task.detached { await shared.hold(holding, until: release) }
        #expect(try await eventuallyOnLoop(timeout: .seconds(120)) { holding.withLock { $0 } })
        // The late request ends the timer (its deadline is a minute away); the sleeper's resumption
        // queues behind the holder, and runs on the holder's thread once it lets go.
        loop.schedule(.cancelTimer(UInt64(slot | TimerWait.tag)))
        #expect(try await watch(loop) { loop.operationsInFlight == 0 })
        release.withLock { $0 = true }
        _ = try await value(of: holder)
        let armedOffLoop = try await eventuallyOnLoop(timeout: .seconds(120)) {
            loop.timersArmedOffLoop.load(ordering: .relaxed) == 1
        }
        #expect(armedOffLoop)
        // Armed again as an operation (on the shared loop): cancelling the task ends it.
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await value(of: sleeper) }
        let (armedAgain, inUse) = try await value(
            of: Task(executorPreference: loop) { (loop.timersArmedAgain, loop.timerSlotsInUse) })
        #expect(armedAgain == 0 && inUse == 0)  // none of this loop's slots was touched off its thread
    }
}

/// Whether `condition` comes true within 30 s, checked once per turn of `loop`, on its thread: no
/// thread of the cooperative pool is needed (a busy test runner may have none free for a while).
private func watch(_ loop: EventLoop, _ condition: @escaping @Sendable () -> Bool) async throws -> Bool {
    try await value(
        of: Task(executorPreference: loop) { () async -> Bool in
            let end = ContinuousClock.now + .seconds(30)
            while !condition() && ContinuousClock.now < end { await Task.yield() }
            return condition()
        })
}

/// A default actor: its jobs run on whichever thread drains it.
private actor SharedActor {
    func sleep(for duration: Duration) async throws { try await Multiprocessing.sleep(for: duration) }

    /// Keeps the actor (and its thread) until `release` is set, at most 30 s.
    func hold(_ holding: Locked<Bool>, until release: Locked<Bool>) {
        holding.withLock { $0 = true }
        let end = ContinuousClock.now + .seconds(30)
        while !release.withLock({ $0 }) && ContinuousClock.now < end { usleep(1_000) }
    }
}
