import CMultiprocessing
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// An actor on a loop, for the jobs that run after the loop stopped.
private actor LateActor {
    let loop: EventLoop
    var log: [Int] = []
    init(_ loop: EventLoop) { self.loop = loop }
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }

    func note(_ i: Int) { log.append(i) }

    /// Checks its isolation the ways user code does (a synchronous helper that asserts it).
    func checked() -> Bool {
        self.preconditionIsolated()
        return self.assumeIsolated { $0.log.count >= 0 }
    }

    /// Sleeps between two notes: the resumption comes back through the actor's executor.
    func sleepy(_ i: Int) async throws {
        log.append(i)
        try await Multiprocessing.sleep(for: .milliseconds(1))
        log.append(-i)
    }
}

/// Counts a pool's observer events, and whether the in-flight count ever went below zero.
private final class Tally: PoolObserver, Sendable {
    // Locked (the library's C lock, which ThreadSanitizer instruments), not Mutex: the standard
    // library's futex lock is not instrumented, and TSan saw races between its holders.
    let counts = Locked<(submitted: Int, settled: Int, inFlight: Int, negative: Int)>((0, 0, 0, 0))
    func taskSubmitted() {
        counts.withLock {
            $0.submitted += 1; $0.inFlight += 1
        }
    }
    func taskSucceeded(after duration: Duration) { settle() }
    func taskFailed(after duration: Duration, error: any Error) { settle() }
    private func settle() {
        counts.withLock {
            $0.settled += 1
            $0.inFlight -= 1
            if $0.inFlight < 0 { $0.negative += 1 }
        }
    }
}

@Suite(.serialized)
struct TodayFaultTests {
    /// After its loop stopped, an actor's jobs run on a thread of their own: code there that checks
    /// the actor's isolation (`preconditionIsolated`, `assumeIsolated`) must pass.
    @Test func actorOfAStoppedLoopKnowsItsIsolation() async throws {
        let loop = try EventLoop(name: "late-iso")
        let actor = LateActor(loop)
        await actor.note(0)
        loop.shutdown()
        #expect(await actor.checked())
    }

    /// After its loop stopped, an actor's calls that suspend (a sleep) come back through the
    /// loop's executor, now the orphan thread: every call ends, each one's two notes in order.
    @Test func actorOfAStoppedLoopSuspendsAndResumes() async throws {
        let loop = try EventLoop(name: "late-sleep")
        let actor = LateActor(loop)
        await actor.note(0)
        loop.shutdown()
        let task = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 1...20 { group.addTask { try await actor.sleepy(i) } }
                try await group.waitForAll()
            }
        }
        try await value(of: task, within: .seconds(30))
        let log = await actor.log
        #expect(log.count == 41)
        for i in 1...20 {
            let a = log.firstIndex(of: i), b = log.firstIndex(of: -i)
            #expect(a != nil && b != nil && a! < b!)
        }
    }

    /// A thread pool's terminate fails its queued tasks on the result thread, and the observer
    /// hears of each: every accepted task settles once (in flight ends at zero). The failures were
    /// posted after the jobs left the queue, and a worker woken by a dropped job's permit found no
    /// job, left, and (the last one) stopped the result thread first: those handles never settled.
    @Test func threadPoolObserverBalancedAcrossTerminate() throws {
        for _ in 0..<30 {
            let tally = Tally()
            let pool = try ThreadPool(threads: 2, observer: tally)
            let submitter = Thread(name: "submitter") {
                for _ in 0..<200 {
                    _ = pool.applyAsync {
                        usleep(10); return 1
                    }
                }
            }
            try submitter.start()
            usleep(200)
            pool.terminate()
            try submitter.join()
            _ = try pool.join(timeout: .seconds(10))
            #expect(eventually(timeout: .seconds(10)) { tally.counts.withLock { $0.inFlight == 0 } })
            let c = tally.counts.withLock { $0 }
            #expect(c.negative == 0)
            #expect(c.submitted == c.settled)
        }
    }

    /// `EventLoop.run`'s body that shuts its own loop down, then awaits a helper thread: the loop
    /// winds down first, and `run` still returns the body's value (it waits for the body).
    @Test func runWaitsForABodyThatOutlivesItsLoop() async throws {
        let outcome = Locked<Int?>(nil)
        let thread = Thread(name: "run-outlive") {
            let v = try EventLoop.run { () async throws -> Int in
                EventLoop.current!.shutdown()
                return try await toThread {
                    usleep(50_000)
                    return 5
                }
            }
            outcome.withLock { $0 = v }
        }
        try thread.start()
        #expect(try await toThread { try thread.join(timeout: .seconds(30)) })
        #expect(outcome.withLock { $0 } == 5)
    }

    /// `ThreadPool.shutdownGracefully` from a task that is cancelled returns without waiting for
    /// the running task (its doc: "the running tasks finish on their threads ... but nothing waits
    /// for them here"): its join, on a helper thread, went on until they ended.
    @Test func cancelledThreadPoolDrainDoesNotWaitForRunningTasks() async throws {
        try await onLoop {
            let pool = try ThreadPool(threads: 1)
            let gate = LocalEvent()
            let started = LocalEvent()
            let running = pool.applyAsync { () -> Bool in
                started.set()
                return gate.wait(deadline: Deadline.after(nanoseconds: 30_000_000_000))
            }
            let queued = pool.applyAsync { 1 }
            #expect(try await toThread { started.wait(deadline: Deadline.after(nanoseconds: 30_000_000_000)) })
            let shutdown = Task(executorPreference: EventLoop.current!) {
                try await pool.shutdownGracefully(timeout: .seconds(60))
            }
            try await sleep(for: .milliseconds(100))
            shutdown.cancel()
            // The running task holds its gate until the shutdown has returned.
            let returned = (try? await value(of: shutdown, within: .seconds(10))) != nil
            gate.set()
            #expect(returned)
            #expect(try running.get(timeout: .seconds(30)) == true)
            #expect(throws: PoolError.terminated) { try queued.get(timeout: .seconds(30)) }
        }
    }
}
