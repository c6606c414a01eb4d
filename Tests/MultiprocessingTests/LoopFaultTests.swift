import CMultiprocessing
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// An actor whose executor is a loop, that records whether two of its jobs ever ran at once.
private actor LoopCounter {
    let loop: EventLoop
    let overlap: Overlap
    var count = 0
    init(_ loop: EventLoop, _ overlap: Overlap) { (self.loop, self.overlap) = (loop, overlap) }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    /// Holds the actor for `ns` (a read-modify-write of `count` across it), noting any other job of
    /// the actor that runs meanwhile.
    func bump(holding ns: Int64) {
        if overlap.inside.add(1, ordering: .sequentiallyConsistent).newValue > 1 {
            overlap.overlaps.add(1, ordering: .relaxed)
        }
        let before = count
        let end = mp_monotonic_ns() + ns
        while mp_monotonic_ns() < end {}
        count = before + 1
        overlap.inside.subtract(1, ordering: .sequentiallyConsistent)
    }
}

/// Shared state of the overlap check (Atomics are not copyable: kept in a class).
private final class Overlap: Sendable {
    let inside = Atomic<Int>(0)
    let overlaps = Atomic<Int>(0)
}

@Suite(.serialized)
struct LoopFaultTests {
    /// `toThread`'s doc: "A task cancelled before `body` starts throws `CancellationError`". With
    /// every helper thread busy, a call waits in the pool's queue; cancelling its task there must
    /// end it with `CancellationError` (and its body must not run), not leave it waiting for a
    /// thread to be free.
    @Test func toThreadCancelledWhileQueuedThrows() async throws {
        let release = LocalEvent()
        defer { release.set() }
        // On a loop: its tasks do not wait for the cooperative pool's few threads.
        // A pool of its own, as `toThread`'s (BlockingPool.shared, 64 threads) but of 2: the shared
        // one's threads are busy with other suites' calls for seconds at a time.
        let pool = BlockingPool(limit: 2)
        try await onLoop(limit: .seconds(60)) {
            let loop = EventLoop.current!
            let started = Overlap()  // its `inside`: the blockers started
            let limit = 2
            var blockers: [Task<Void, any Error>] = []
            for _ in 0..<limit {
                blockers.append(
                    Task(executorPreference: loop) {
                        try await pool.runCancellable {
                            started.inside.add(1, ordering: .relaxed)
                            release.wait()
                        }
                    })
            }
            let deadline = Deadline.after(nanoseconds: 20_000_000_000)
            while started.inside.load(ordering: .relaxed) < limit && mp_monotonic_ns() < deadline {
                try await sleep(for: .milliseconds(5))
            }
            #expect(started.inside.load(ordering: .relaxed) == limit)
            let ran = Overlap()  // its `inside`: the cancelled body ran
            let outcome = Locked<(any Error)?>(nil)
            let ended = Overlap()  // its `inside`: the queued call returned or threw
            let queued = Task(executorPreference: loop) {
                do { try await pool.runCancellable { ran.inside.store(1, ordering: .relaxed) } } catch {
                    outcome.withLock { $0 = error }
                }
                ended.inside.store(1, ordering: .relaxed)
            }
            try await sleep(for: .milliseconds(100))  // in the queue by now (or not yet: the same outcome)
            queued.cancel()
            let end = Deadline.after(nanoseconds: 30_000_000_000)
            while ended.inside.load(ordering: .relaxed) == 0 && mp_monotonic_ns() < end {
                try await sleep(for: .milliseconds(5))
            }
            #expect(ended.inside.load(ordering: .relaxed) == 1, "the cancelled call still waits for a thread")
            #expect(outcome.withLock { $0 } is CancellationError)
            release.set()
            for blocker in blockers { try await blocker.value }
            await queued.value
            _ = try await pool.runCancellable { 0 }
            #expect(ran.inside.load(ordering: .relaxed) == 0)
        }
    }

    /// `shutdown()`'s doc: "operations in flight are cancelled (their awaiters get
    /// EventLoopError.shutDown)". On kernels without IORING_OP_FUTEX_WAIT an awaited Event waits on
    /// helper threads in 10 ms slices; a shutdown of its loop must end that wait too, not leave the
    /// coroutine waiting for a `set()` that may never come.
    @Test func fallbackFutexWaitEndsAtShutdown() async throws {
        let loop = try EventLoop(name: "fallback-shutdown")
        let event = Event()
        let waiter = Task(executorPreference: loop) {
            try await EventLoop.$futexFallback.withValue(true) { try await event.wait() }
        }
        try await Task.sleep(for: .milliseconds(100))
        loop.shutdown()
        var outcome: (any Error)? = nil
        do { try await value(of: waiter, within: .seconds(60)) } catch { outcome = error }
        event.set()  // lets a waiter that missed the shutdown end
        #expect(outcome as? EventLoopError == .shutDown, "got \(String(describing: outcome))")
    }

    /// The same through `EventLoop.run`, whose loop winds down when its body returns: a coroutine
    /// the body left in a fallback wait gets `shutDown` (its ring operations would), so `run`'s
    /// caller can count on the coroutine having ended.
    @Test func fallbackSemaphoreWaitEndsWhenRunReturns() async throws {
        let semaphore = try Semaphore(value: 0)
        let outcome = Locked<(any Error)?>(nil)
        let ended = LocalEvent()
        try await toThread {
            try EventLoop.run {
                Task(executorPreference: EventLoop.current!) {
                    do {
                        try await EventLoop.$futexFallback.withValue(true) { try await semaphore.acquire() }
                    } catch {
                        outcome.withLock { $0 = error }
                    }
                    ended.set()
                }
                try await sleep(for: .milliseconds(50))
            }
        }
        // Awaited on a helper thread: the coroutine ends on the global executor (its loop is gone),
        // whose few threads a blocked test would hold.
        let finished = try await toThread { ended.wait(deadline: Deadline.after(nanoseconds: 60_000_000_000)) }
        try semaphore.release()
        #expect(finished)
        #expect(outcome.withLock { $0 } as? EventLoopError == .shutDown)
    }

    /// An actor whose executor is a loop stays an actor after the loop shut down: `shutdown()`
    /// says later jobs run on the global executor, but an actor's jobs must still run one at a
    /// time. They are handed to the global *concurrent* executor one by one, so two callers run
    /// the actor's code at once (here, a read-modify-write of its state loses updates).
    @Test func actorOfAStoppedLoopStaysSerial() async throws {
        let loop = try EventLoop(name: "stopped-actor")
        let overlap = Overlap()
        let counter = LoopCounter(loop, overlap)
        await counter.bump(holding: 0)
        loop.shutdown()
        let callers = 8
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<callers {
                group.addTask { await counter.bump(holding: 20_000_000) }
            }
            try await group.waitForAll()
        }
        #expect(overlap.overlaps.load(ordering: .relaxed) == 0)
        #expect(await counter.count == callers + 1)
    }

    /// `EventLoop.run` returns once its body has: the loop shuts down, and a coroutine the body
    /// left behind gets `EventLoopError.shutDown` from its next sleep. One that swallows that error
    /// (`while !Task.isCancelled { try? await sleep(for:) }`, a common periodic task) is never
    /// cancelled and its sleeps now fail at once, so the loop runs its jobs for ever: `run` never
    /// returns and its thread spins (Python's asyncio.run cancels the tasks left behind).
    @Test func runReturnsDespiteALeftoverPeriodicTask() async throws {
        let stop = Overlap()  // its `inside`: the test is over, the leftover must end
        let returned = LocalEvent()
        let thread = Thread(name: "run-leftover") {
            _ = try? EventLoop.run {
                Task(executorPreference: EventLoop.current!) {
                    while !Task.isCancelled && stop.inside.load(ordering: .relaxed) == 0 {
                        try? await sleep(for: .milliseconds(1))
                    }
                }
                try await sleep(for: .milliseconds(20))
            }
            returned.set()
        }
        try thread.start()
        let finished = try await toThread { returned.wait(deadline: Deadline.after(nanoseconds: 60_000_000_000)) }
        stop.inside.store(1, ordering: .relaxed)
        try await toThread { try thread.join() }
        #expect(finished)
    }

    /// `EventLoop.run` "runs body on a new loop until it returns". A body that shuts its own loop
    /// down (`EventLoop.current!.shutdown()`, or another thread given the loop) and then awaits
    /// something that is not a ring operation (here `toThread`) left the loop with nothing in
    /// flight: it finished before the body did, and `run` force-unwrapped the missing outcome
    /// (the process traps). In a child process of its own (an exit test).
    @Test func runOutlivesAShutdownFromItsBody() async {
        await #expect(processExitsWith: .success) {
            let value = try EventLoop.run {
                EventLoop.current!.shutdown()
                return try await toThread {
                    usleep(100_000)
                    return 7
                }
            }
            if value != 7 { exit(2) }
        }
    }

    /// `EventLoopGroup.shutdownGracefully` from a cancelled task (a service group being cancelled)
    /// shuts the loops down all the same. It went through `toThread`, which threw
    /// `CancellationError` first and left every loop's thread running.
    @Test func groupShutdownFromACancelledTask() async throws {
        let group = try EventLoopGroup(loopCount: 2)
        defer { group.shutdown() }
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await group.shutdownGracefully()
        }
        try? await task.value
        let stopped = group.loops.filter { $0.hasStopped }.count
        #expect(stopped == 2)
    }
}
