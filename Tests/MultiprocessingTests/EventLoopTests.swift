import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

struct Boom: Error, Equatable {}

/// An actor whose executor is a loop: its methods run on the loop's thread.
actor LoopBound {
    let loop: EventLoop
    var calls = 0
    init(_ loop: EventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    func touch() -> Bool {
        calls += 1
        return EventLoop.current === loop
    }
    /// Whether the actor's code after an awaited operation runs on the loop's thread again.
    func sleepThenTouch() async throws -> Bool {
        try await sleep(for: .milliseconds(5))
        return touch()
    }
}

/// A default actor: its jobs run on whichever thread drains it.
private actor HeldActor {
    private var held = false

    /// Sleeps, then tells whether another task held the actor meanwhile (it should not have run).
    func sleepAndLook(_ sleeping: Locked<Bool>) async throws -> Bool {
        sleeping.withLock { $0 = true }
        try await sleep(for: .milliseconds(200))
        return held
    }

    /// Keeps the actor, on the caller's thread, for 600 ms.
    func hold() {
        held = true
        usleep(600_000)
        held = false
    }
}

/// Nonisolated async code that a coroutine on `loop` calls: it runs on the loop's thread.
nonisolated func nonisolatedStep(_ i: Int, on loop: EventLoop) async -> Bool {
    loop.inEventLoop
}

@Suite("EventLoop: executor, sleep, gather, timeouts")
struct EventLoopTests {
    @Test("run returns the body's value, its loop running on the calling thread, and rethrows its error")
    func runValueAndError() throws {
        let caller = threadID()
        let value = try EventLoop.run { () async throws -> String in
            #expect(EventLoop.current != nil)
            #expect(threadID() == caller)  // as asyncio.run: the caller's thread runs the loop
            let child = try await withThrowingTaskGroup(of: UInt.self) { group in
                group.addTask {
                    try await sleep(for: .milliseconds(1))
                    return threadID()
                }
                return try await group.next()!
            }
            #expect(child == caller)
            return "done"
        }
        #expect(value == "done")
        #expect(EventLoop.current == nil)  // the caller's thread is no loop's afterwards
        #expect(throws: Boom()) { try EventLoop.run { () async throws -> Int in throw Boom() } }
        let loop = try EventLoop()
        let nested = try loop.run { () async throws -> Bool in
            do {
                _ = try loop.run { 1 }
                return false
            } catch EventLoopError.wouldDeadlock {
                return true
            }
        }
        #expect(nested)
        // EventLoop.run called by a job of another loop (blocking it, as any blocking call would):
        // the inner loop runs on that thread, which is the outer loop's again afterwards.
        let (inner, outerAgain) = try loop.run { () async throws -> (Bool, Bool) in
            let inner = try EventLoop.run { () async throws -> Bool in
                try await sleep(for: .milliseconds(1))
                return EventLoop.current !== loop && EventLoop.current != nil
            }
            try await sleep(for: .milliseconds(1))
            return (inner, EventLoop.current === loop)
        }
        #expect(inner)
        #expect(outerAgain)
        loop.shutdown()
    }

    @Test("10 000 concurrent sleeps all complete, on the one loop thread")
    func tenThousandSleeps() async throws {
        let loop = try EventLoop()
        let (count, onLoopThread) = try await onLoop(loop) { () async throws -> (Int, Int) in
            let bodies: [@Sendable () async throws -> Bool] = (0..<10_000).map { i in
                {
                    try await sleep(for: .milliseconds(1 + i % 50))
                    return EventLoop.current === loop
                }
            }
            let results = try await gather(bodies)
            return (results.count, results.filter { $0 }.count)
        }
        #expect(count == 10_000)
        #expect(onLoopThread == 10_000)
    }

    @Test("sleep never returns early; sleep(until:) a past instant returns")
    func sleepBounds() async throws {
        try await onLoop {
            for ms in [0, 1, 5, 20] {
                let start = ContinuousClock.now
                try await sleep(for: .milliseconds(ms))
                #expect(ContinuousClock.now - start >= .milliseconds(ms))
            }
            let deadline = ContinuousClock.now + .milliseconds(15)
            try await sleep(until: deadline)
            #expect(ContinuousClock.now >= deadline)
            try await sleep(until: ContinuousClock.now - .seconds(1))
        }
    }

    @Test("a negative duration is a typed error")
    func negativeDuration() async throws {
        try await onLoop {
            await #expect(throws: SyncError.negativeTimeout(.milliseconds(-1))) {
                try await sleep(for: .milliseconds(-1))
            }
            await #expect(throws: SyncError.negativeTimeout(.seconds(-2))) {
                try await withTimeout(.seconds(-2)) { 1 }
            }
        }
    }

    @Test("in async code the async sleep is chosen: cancelling the task ends a 30 s sleep at once")
    func cancelSleep() async throws {
        let loop = try EventLoop()
        try await onLoop(loop) {
            let sleeper = Task(executorPreference: loop) { try await sleep(for: .seconds(30)) }
            try await sleep(for: .milliseconds(10))  // the timeout is in the ring
            sleeper.cancel()
            let result = await sleeper.result
            #expect(throws: CancellationError.self) { try result.get() }
            // Already cancelled before it starts: no timeout is submitted at all.
            let early = Task(executorPreference: loop) {
                withUnsafeCurrentTask { $0?.cancel() }
                try await sleep(for: .seconds(30))
            }
            await #expect(throws: CancellationError.self) { try await early.value }
        }
        // The same off any loop: the handler's cancel reaches the shared loop's inbox before the
        // submit, so the timeout is never armed (else this waits the 30 s, and the test fails).
        let offLoop = Task.detached {
            withUnsafeCurrentTask { $0?.cancel() }
            try await sleep(for: .seconds(30))
        }
        await #expect(throws: CancellationError.self) { try await offLoop.value }
    }

    @Test("a sleep of zero only yields: the loop's other coroutine runs meanwhile; a cancelled task throws")
    func zeroSleep() async throws {
        let loop = try EventLoop()
        try await onLoop(loop) {
            let ran = Locked(false)
            // Queued on the loop before this task yields, and run before it resumes: the loop is
            // one thread, and runs its jobs in order.
            let other = Task(executorPreference: loop) { ran.withLock { $0 = true } }
            try await sleep(for: .zero)
            #expect(ran.withLock { $0 })
            await other.value
            let cancelled = Task(executorPreference: loop) {
                withUnsafeCurrentTask { $0?.cancel() }
                try await sleep(for: .zero)
            }
            await #expect(throws: CancellationError.self) { try await cancelled.value }
        }
    }

    @Test("withTimeout returns a quick body's value, cancels a slow one, passes errors through")
    func timeouts() async throws {
        try await onLoop {
            let quick = try await withTimeout(.seconds(5)) { 7 }
            #expect(quick == 7)
            let cancelled = Locked(false)
            await #expect(throws: TimeoutError(timeout: .milliseconds(20))) {
                try await withTimeout(.milliseconds(20)) {
                    do {
                        try await sleep(for: .seconds(30))
                    } catch is CancellationError {
                        cancelled.withLock { $0 = true }
                        throw CancellationError()
                    }
                }
            }
            #expect(cancelled.withLock { $0 })
            await #expect(throws: Boom()) {
                try await withTimeout(.seconds(5)) { () async throws -> Int in throw Boom() }
            }
        }
    }

    @Test("gather keeps order; the first error cancels the rest; gatherResults keeps every outcome")
    func gatherSemantics() async throws {
        try await onLoop {
            let (a, b, c) = try await gather(
                { @Sendable in
                    try await sleep(for: .milliseconds(30)); return 1
                },
                { @Sendable in "two" },
                { @Sendable in
                    try await sleep(for: .milliseconds(10)); return [3]
                })
            #expect(a == 1 && b == "two" && c == [3])

            let cancelledSiblings = Locked(0)
            let slow: @Sendable () async throws -> Int = {
                do { try await sleep(for: .seconds(30)) } catch is CancellationError {
                    cancelledSiblings.withLock { $0 += 1 }
                    throw CancellationError()
                }
                return 0
            }
            let failing: @Sendable () async throws -> Int = {
                try await sleep(for: .milliseconds(5))
                throw Boom()
            }
            await #expect(throws: Boom()) { try await gather([slow, failing, slow]) }
            #expect(cancelledSiblings.withLock { $0 } == 2)

            let outcomes = await gatherResults([{ @Sendable in 1 }, failing, { @Sendable in 3 }])
            #expect(outcomes.count == 3)
            #expect((try? outcomes[0].get()) == 1 && (try? outcomes[2].get()) == 3)
            #expect(throws: Boom()) { try outcomes[1].get() }
        }
    }

    @Test("toThread runs blocking work on another thread while the loop goes on")
    func toThreadKeepsLoopFree() async throws {
        let loop = try EventLoop(name: "free-loop")
        try await onLoop(loop) {
            let order = Locked<[String]>([])
            async let blocking: String = toThread {
                try sleep(for: .milliseconds(200))  // blocking: a helper thread, not the loop
                order.withLock { $0.append("thread") }
                return Thread.currentName
            }
            try await sleep(for: .milliseconds(10))
            order.withLock { $0.append("loop") }
            #expect(try await blocking != "free-loop")
            #expect(order.withLock { $0 } == ["loop", "thread"])
            #expect(throws: Boom()) { try toThreadSync() }
            await #expect(throws: Boom()) { try await toThread { () throws -> Int in throw Boom() } }
        }
    }

    @Test("off any loop, async operations use the shared loop")
    func sharedLoop() async throws {
        #expect(EventLoop.current == nil)
        let start = ContinuousClock.now
        try await sleep(for: .milliseconds(5))
        #expect(ContinuousClock.now - start >= .milliseconds(5))
        let event = Event()
        async let waiter: Void = event.wait()
        try await sleep(for: .milliseconds(5))
        event.set()
        try await waiter
    }

    @Test("a coroutine's calls into nonisolated async code stay on its turn: no hop per call")
    func noHopPerCall() throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let (turns, stayed) = try loop.run { () async -> (Int, Bool) in
            let before = loop.turns
            var stayed = true
            for i in 0..<1000 { stayed = await nonisolatedStep(i, on: loop) && stayed }
            return (loop.turns - before, stayed)
        }
        #expect(stayed)
        // One hop per call (a job isolated to the loop calling nonisolated code) would take 2 000.
        #expect(turns < 50)
    }

    @Test("a loop shows its turns and its operations in flight to other threads")
    func statistics() throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        #expect(try eventually { loop.operationsInFlight == 0 })
        let release = Event()
        let sleepers = Thread {
            try loop.run { () async throws -> Void in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<10 { group.addTask { try await sleep(for: .seconds(30)) } }
                    group.addTask { _ = try await release.wait(timeout: .seconds(30)) }
                    try await group.next()  // the release: cancel the sleepers
                    group.cancelAll()
                }
            }
        }
        try sleepers.start()
        // Ten timers and the release's futex wait (or its helper thread's wake-up) are in flight.
        #expect(eventually { loop.operationsInFlight >= 10 })
        let turns = loop.turns
        #expect(turns > 0)
        release.set()
        #expect(try sleepers.join(timeout: .seconds(30)))
        #expect(eventually { loop.operationsInFlight == 0 })
        #expect(loop.turns > turns)
    }

    @Test("an actor whose executor is a loop runs on the loop's thread")
    func actorOnLoop() async throws {
        let loop = try EventLoop()
        let actor = LoopBound(loop)
        for _ in 0..<10 { #expect(await actor.touch()) }
        #expect(await actor.calls == 10)
        loop.shutdown()
    }

    @Test(
        "code after an awaited operation runs on its actor again: not beside a task that holds it, and on a loop actor's thread"
    )
    func isolationAfterAwait() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        // Off any loop (the shared loop's operation path), then on a loop (a timer in its slots).
        for preferLoop in [false, true] {
            let guarded = HeldActor()
            let sleeping = Locked(false)
            let sleeper =
                preferLoop
                ? Task(executorPreference: loop) { try await guarded.sleepAndLook(sleeping) }
                : Task.detached { try await guarded.sleepAndLook(sleeping) }
            // Polled without holding a thread: the sleeper needs one of the pool's.
            #expect(try await eventuallyOnLoop(timeout: .seconds(120)) { sleeping.withLock { $0 } })
            // Takes the actor on a pool thread while the sleeper waits for its timer; the sleeper's
            // resumption must queue behind it.
            let holder = Task.detached { await guarded.hold() }
            let heldMeanwhile = try await value(of: sleeper)
            _ = try await value(of: holder)
            #expect(!heldMeanwhile, "on a loop: \(preferLoop)")
        }
        // An actor whose executor is the loop, called by a task without a preference.
        let bound = LoopBound(loop)
        let onLoopThread = try await value(of: Task.detached { try await bound.sleepThenTouch() })
        #expect(onLoopThread)
    }

    @Test("a group spreads work over its loops, each on its own thread")
    func group() throws {
        let group = try EventLoopGroup(loopCount: 3)
        #expect(group.loops.count == 3)
        let picked = (0..<6).map { _ in group.next() }
        #expect(picked[0] === picked[3] && picked[1] === picked[4] && picked[0] !== picked[1])
        for loop in group.loops {
            let ran = try loop.run { EventLoop.current === loop }
            #expect(ran)
        }
        group.shutdown()
        #expect(throws: EventLoopError.self) { _ = try EventLoopGroup(loopCount: 0) }
    }

    @Test("shutdown ends operations in flight with a typed error")
    func shutdownInFlight() async throws {
        let loop = try EventLoop()
        // Both must be running on the loop before it stops (on a loaded machine they may start late;
        // a task that starts after the shutdown runs on the global executor instead).
        let started = Locked(0)
        let sleeper = Task(executorPreference: loop) {
            started.withLock { $0 += 1 }
            try await sleep(for: .seconds(60))
        }
        let waiter = Task(executorPreference: loop) {
            started.withLock { $0 += 1 }
            try await Event().wait()
        }
        #expect(eventually { started.withLock { $0 } == 2 })
        usleep(50_000)
        loop.shutdown()
        await #expect(throws: EventLoopError.shutDown) { try await sleeper.value }
        await #expect(throws: EventLoopError.shutDown) { try await waiter.value }
    }
}

private func toThreadSync() throws { throw Boom() }
