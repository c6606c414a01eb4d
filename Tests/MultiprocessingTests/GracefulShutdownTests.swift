import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Graceful shutdown from async code")
struct GracefulShutdownTests {
    @Test("a process pool drains what was submitted, then its workers end")
    func processPoolDrains() async throws {
        let pool = try ProcessPool<Int, Int>(processes: 2) { x in
            usleep(20_000)
            return x + 1
        }
        let handles = (0..<6).map { pool.applyAsync($0) }
        #expect(try await pool.shutdownGracefully(timeout: .seconds(60)))
        for (i, h) in handles.enumerated() { #expect(try h.get(timeout: .zero) == i + 1) }
        #expect(pool.workerPIDs.isEmpty)
        #expect(throws: PoolError.closed) { try pool.apply(1) }
    }

    // The two tests below time a shutdown against a task that is running. Each runs on a loop of
    // its own, not on Swift's cooperative pool: the suite's synchronous tests can hold both of that
    // pool's threads for tens of seconds, and a test resumed that late saw the running task end by
    // itself first (30 s) and the queued one run as a drain does.

    @Test("a process pool past its timeout is terminated: what had not finished fails")
    func processPoolTimeout() async throws {
        let pool = try ProcessPool<Int, Int>(processes: 1) { x in
            sleep(30)
            return x
        }
        let handle = pool.applyAsync(1)
        let loop = try EventLoop(name: "timeout-test")
        defer { loop.shutdown() }
        let finished = try await Task(executorPreference: loop) {
            try await pool.shutdownGracefully(timeout: .milliseconds(200))
        }.value
        #expect(finished == false)
        #expect(throws: PoolError.terminated) { try handle.get(timeout: .seconds(30)) }
        #expect(pool.workerPIDs.isEmpty)
    }

    @Test("cancelling the task that shuts a thread pool down terminates it")
    func threadPoolCancelled() async throws {
        let loop = try EventLoop(name: "shutdown-test")
        defer { loop.shutdown() }
        let (running, queued) = try await Task(executorPreference: loop) {
            let pool = try ThreadPool(threads: 1)
            let gate = Event()
            let running = pool.applyAsync { try gate.wait(timeout: .seconds(30)) }
            let queued = pool.applyAsync { 1 }
            let started = Event()
            let shutdown = Task(executorPreference: loop) {
                started.set()
                return try await pool.shutdownGracefully(timeout: .seconds(60))
            }
            #expect(try await started.wait(timeout: .seconds(30)))
            try await sleep(for: .milliseconds(100))  // the shutdown waits for the running task
            // The running task finishes once the gate opens (a thread cannot be killed); cancelling
            // does not wait for it (TodayFaultTests checks that), and the gate opens on a thread
            // of its own.
            let opener = Multiprocessing.Thread {
                usleep(300_000)
                gate.set()
            }
            try opener.start()
            shutdown.cancel()
            _ = try? await shutdown.value
            _ = try opener.join(timeout: .seconds(30))
            return (running, queued)
        }.value
        #expect(try running.get(timeout: .seconds(30)) == true)
        #expect(throws: PoolError.terminated) { try queued.get(timeout: .seconds(30)) }
    }

    @Test("an event loop group's threads end")
    func loopGroup() async throws {
        let group = try EventLoopGroup(loopCount: 2)
        try await group.shutdownGracefully()
        await #expect(throws: EventLoopError.self) { try await group.next().perform(cancellable: false) { _, _ in 0 } }
    }
}
