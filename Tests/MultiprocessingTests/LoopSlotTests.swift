import CMultiprocessing
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Operations that a loop's own tasks await in the loop's slots (`LoopSlot`), without an operation
/// object: cancellation from any thread, late cancel requests, slots reused over many chunks.
@Suite("Loop operations in slots")
struct LoopSlotTests {
    /// The loop resumes its slots' continuations through itself by writing the runtime's
    /// continuation (mp_continuation_resume_through): the layout it assumes must be this runtime's.
    /// A plain continuation is taken, a throwing one (flags set) is left alone.
    @Test(
        "a continuation is laid out as the loop's resume assumes (Swift 6.3's runtime)",
        .enabled(if: EventLoop.resumesThroughLoop))
    func continuationLayout() async throws {
        let loop = try EventLoop(name: "layout")
        let (plain, throwing) = try await onLoop(loop) { () async throws -> (Int32, Int32) in
            let words = loop.resumptionWordsForTesting
            let plain = await withUnsafeContinuation { (c: UnsafeContinuation<Int32, Never>) in
                c.resume(
                    returning: mp_continuation_resume_through(
                        unsafeBitCast(c, to: UnsafeMutableRawPointer.self), words.0, words.1))
            }
            let throwing = try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<Int32, any Error>) in
                c.resume(
                    returning: mp_continuation_resume_through(
                        unsafeBitCast(c, to: UnsafeMutableRawPointer.self), words.0, words.1))
            }
            try await sleep(for: .milliseconds(1))  // and a slot's resume still lands here
            return (plain, throwing)
        }
        #expect(plain == 1)
        #expect(throwing == 0)
    }

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

    @Test("3 000 sleepers cancelled from their loop's own thread, more than its submission queue holds")
    func manyCancelledOnTheLoopsThread() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let count = 3_000
        let (cancelled, inUse) = try await onLoop(loop) { () async throws -> (Int, Int) in
            let cancelled = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<count {
                    group.addTask { await sleepUntilCancelled() }
                }
                _ = await yieldUntil { loop.operationsInFlight == count }
                // Each child's handler runs here, on the loop's thread, under that child's lock.
                group.cancelAll()
                var cancelled = 0
                for await wasCancelled in group where wasCancelled { cancelled += 1 }
                return cancelled
            }
            return (cancelled, loop.slotsInUse)
        }
        #expect(cancelled == count && inUse == 0)
        #expect(eventually { loop.operationsInFlight == 0 })
    }

    @Test("a late cancel request for a slot leaves the next timer in that slot to its deadline")
    func lateCancelRequest() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let (error, elapsed, inUse) = try await onLoop(loop) { () async throws -> (String?, Duration, Int) in
            // The free list hands out the slot given back last: the sleeper's timer takes this one,
            // at the next generation.
            let stale = takeAndGiveBack(loop)
            let start = ContinuousClock.now
            let sleeper = Task(executorPreference: loop) { try await sleep(for: .milliseconds(300)) }
            #expect(await yieldUntil { loop.operationsInFlight == 1 })
            // What a cancellation handler whose timer has completed sends, arriving late.
            loop.schedule(.cancelSlot(stale))
            let failure: String?
            do {
                try await value(of: sleeper)
                failure = nil
            } catch {
                failure = "\(error)"
            }
            return (failure, ContinuousClock.now - start, loop.slotsInUse)
        }
        #expect(error == nil)
        #expect(elapsed >= .milliseconds(300))
        #expect(inUse == 0)
    }

    @Test("a cancelled task's sleeps that do not suspend leave the slot's generation: a late request stays late")
    func cancelledEarlyKeepsGeneration() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let (error, inUse) = try await onLoop(loop) { () async throws -> (String?, Int) in
            // One turn: a late request for the head slot waits for the turn's end, while a
            // cancelled task takes and gives back that slot 65 535 times (its sleeps find the task
            // cancelled and queue nothing), and then a sleeper takes it. Had each of those takes
            // moved the generation on, the sleeper's would be the request's again (16 bits).
            let burster = Task(executorPreference: loop) {
                let stale = takeAndGiveBack(loop)
                loop.schedule(.cancelSlot(stale))  // sent after this turn's jobs
                withUnsafeCurrentTask { $0?.cancel() }
                for _ in 0..<65_535 { try? await sleep(for: .seconds(1)) }
            }
            let sleeper = Task(executorPreference: loop) { try await sleep(for: .milliseconds(300)) }
            try await value(of: burster, within: .seconds(60))
            let failure: String?
            do {
                try await value(of: sleeper, within: .seconds(30))
                failure = nil
            } catch {
                failure = "\(error)"
            }
            return (failure, loop.slotsInUse)
        }
        #expect(error == nil)
        #expect(inUse == 0)
    }

    @Test("a task cancelled in the turn its loop shuts down gets CancellationError, not shutDown")
    func cancelledAtShutdown() async throws {
        let loop = try EventLoop()
        let waiters = try await onLoop(loop) { () async throws -> [Task<Void, any Error>] in
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let server = try await listener.accept()
            let lock = Lock()
            #expect(try lock.tryAcquire())
            let waiters = [
                Task(executorPreference: loop) { _ = try await server.receive() },
                Task(executorPreference: loop) { try await lock.acquire() },
            ]
            #expect(await yieldUntil { loop.operationsInFlight == 2 })
            // In one job: the requests of the two cancellations wait for the turn's end, and the
            // shutdown's cancel-all leaves now, ending both operations first.
            for waiter in waiters { waiter.cancel() }
            loop.shutdown()
            extendLifetime(client)
            return waiters
        }
        var outcomes: [String] = []
        for waiter in waiters {
            do {
                try await value(of: waiter, within: .seconds(30))
                outcomes.append("no error")
            } catch {
                outcomes.append("\(error)")
            }
        }
        #expect(outcomes == ["CancellationError()", "CancellationError()"])
    }

    @Test("a cancel request of the slot's own generation does end its timer (the request above names the slot)")
    func currentCancelRequest() async throws {
        let loop = try EventLoop()
        defer { loop.shutdown() }
        let (error, inUse) = try await onLoop(loop) { () async throws -> (String?, Int) in
            let stale = takeAndGiveBack(loop)
            let sleeper = Task(executorPreference: loop) { try await sleep(for: .seconds(30)) }
            #expect(await yieldUntil { loop.operationsInFlight == 1 })
            // The sleeper's generation is the next one of the same slot.
            loop.schedule(.cancelSlot(LoopSlot.userData(LoopSlot.slot(of: stale))))
            let failure: String?
            do {
                try await value(of: sleeper, within: .seconds(20))
                failure = nil
            } catch {
                failure = "\(error)"
            }
            return (failure, loop.slotsInUse)
        }
        // A request of the slot's current generation ends the sleep, which reads a timer's
        // -ECANCELED as its task's cancellation (only that task's handler names it, see `LoopSlot`).
        #expect(error == "CancellationError()")
        #expect(inUse == 0)
    }

    @Test("a late cancel request leaves the next receive in that slot alone: it gets its bytes")
    func lateCancelLeavesReceive() async throws {
        let (bytes, objects, inUse) = try await onCountingLoop { loop in
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let server = try await listener.accept()
            let stale = takeAndGiveBack(loop)
            let receiver = Task(executorPreference: loop) { try await client.receive(upTo: 64) }
            #expect(await yieldUntil { loop.operationsInFlight == 1 })
            loop.schedule(.cancelSlot(stale))
            // Turns of the loop for the request to reach the kernel before the bytes do.
            for _ in 0..<10 { await Task.yield() }
            try await server.send([1, 2, 3])
            let bytes = try await value(of: receiver, within: .seconds(20))
            try await client.close()
            try await server.close()
            try await listener.close()
            return bytes
        }
        #expect(bytes == [1, 2, 3])
        #expect(objects == 0)  // the receive waited in a slot
        #expect(inUse == 0)
    }

    @Test("a loopback TCP round trip on a loop awaits its ring operations in slots")
    func roundTripInSlots() async throws {
        let (outcome, objects, inUse) = try await onCountingLoop { loop in
            let intoRingBuffers = loop.receivesIntoRingBuffers
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let server = Task(executorPreference: loop) {
                let connection = try await listener.accept()
                try await connection.send(try await connection.receive(upTo: 64))
                try await connection.close()
            }
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let message: [UInt8] = Array(0..<64)
            try await client.send(message)
            let echoed = try await client.receive(exactly: 64) == message
            try await client.close()
            try await value(of: server, within: .seconds(20))
            try await listener.close()
            return (echoed, loop.receivesIntoRingBuffers - intoRingBuffers)
        }
        #expect(outcome.0)
        // The accept, the connect and both receives went through the ring, none as an object.
        #expect(objects == 0)
        #expect(outcome.1 == 2)
        #expect(inUse == 0)
    }

    @Test("file operations on a loop wait in slots: open, write, sync, read back, close")
    func fileOperationsInSlots() async throws {
        let path = scratchPath("loop-slot-file")
        defer { unlink(path) }
        let (read, objects, inUse) = try await onCountingLoop { _ in
            let out = try await File.open(path, .writeOnly, options: [.create, .truncate])
            try await out.write(Array(0..<200))
            try await out.sync()
            try await out.close()
            let file = try await File.open(path)
            let read = try await file.read(upTo: 1000)
            try await file.close()
            return read
        }
        #expect(read == Array(0..<200))
        #expect(objects == 0)
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
                    group.addTask { await sleepUntilCancelled() }
                }
                var cancelled = 0
                var other = 0
                for await wasCancelled in group {
                    if wasCancelled { cancelled += 1 } else { other += 1 }
                }
                return (cancelled, other)
            }
            return (cancelled, other, loop.slotsInUse)
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
            return (completed, loop.slotsInUse)
        }
        #expect(completed == count && inUse == 0)
    }
}

/// Takes a slot and gives it back, on the loop's thread: the user_data its operation had, which
/// the next operation's slot has at the next generation.
private func takeAndGiveBack(_ loop: EventLoop) -> UInt64 {
    let slot = loop.takeSlot()
    let userData = LoopSlot.userData(slot)
    loop.giveBackSlot(slot)
    return userData
}

/// Yields (no ring operation of the caller's own) until `condition` holds, at most 100 000 turns.
private func yieldUntil(_ condition: () -> Bool) async -> Bool {
    var turns = 0
    while !condition() && turns < 100_000 {
        await Task.yield()
        turns += 1
    }
    return condition()
}

/// Runs `body` on a new loop (see `onLoop`): what it returns, the operations it submitted as
/// objects rather than in slots, and the slots left in use after it.
private func onCountingLoop<T: Sendable>(_ body: @escaping @Sendable (EventLoop) async throws -> T) async throws -> (
    T, objects: Int, inUse: Int
) {
    let loop = try EventLoop()
    defer { loop.shutdown() }
    return try await onLoop(loop) { () async throws -> (T, objects: Int, inUse: Int) in
        let objects = loop.operationObjects
        let value = try await body(loop)
        return (value, loop.operationObjects - objects, loop.slotsInUse)
    }
}

/// A 30 s sleep: whether a CancellationError ended it (false: it completed, or another error did).
private func sleepUntilCancelled() async -> Bool {
    do {
        try await sleep(for: .seconds(30))
        return false
    } catch {
        return error is CancellationError
    }
}
