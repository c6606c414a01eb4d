import Multiprocessing
import MultiprocessingTestTargets
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// withProcessPool and withThreadPool (Python's `with Pool() as pool:`): the pool lives for the
/// closure; on return it is closed and joined (every submitted task finishes), on a throw terminated.
@Suite("Scoped pools")
struct ScopedPoolTests {
    struct Stop: Error {}

    @Test("withProcessPool: the result of the body; tasks submitted without waiting still finish; workers gone")
    func processPoolReturns() throws {
        let done = try SharedCounters(count: 1)
        let workers = Guarded<[Int32]>([])
        let squares = try withProcessPool(processes: 2, work: { (n: Int) -> Int in n * n }) { pool in
            workers.withLock { $0 = pool.workerPIDs }
            // Not waited for here: the scope's join lets them finish.
            for n in 1...20 { pool.applyAsync(n, callback: { _ in done[0] += 1 }) }
            return try pool.map(1...10)
        }
        #expect(squares == (1...10).map { $0 * $0 })
        #expect(done[0] == 20)  // callbacks run before join returns
        #expect(!workers.withLock { $0 }.isEmpty)
        for pid in workers.withLock({ $0 }) { #expect(!processExists(pid)) }
    }

    @Test("withProcessPool: a body that throws terminates the pool: unfinished tasks fail, workers are gone")
    func processPoolThrows() throws {
        let pending = Guarded<AsyncResult<Int>?>(nil)
        let workers = Guarded<[Int32]>([])
        #expect(throws: Stop.self) {
            try withProcessPool(
                processes: 1,
                work: { (seconds: Int) -> Int in
                    try sleep(for: .seconds(seconds))
                    return seconds
                }
            ) { pool in
                workers.withLock { $0 = pool.workerPIDs }
                pending.withLock { $0 = pool.applyAsync(60) }
                throw Stop()
            }
        }
        let result = try #require(pending.withLock { $0 })
        #expect(throws: PoolError.terminated) { try result.get(timeout: .seconds(20)) }
        for pid in workers.withLock({ $0 }) { #expect(!processExists(pid)) }
    }

    @Test("withProcessPool over a registered PoolWorker (forkserver)")
    func registeredWorker() throws {
        useTestHelper()
        let doubled = try withProcessPool(processes: 2, worker: TestTargets.twice) { pool in
            try pool.map([1, 2, 3])
        }
        #expect(doubled == [2, 4, 6])
    }

    @Test("withThreadPool: closed and joined on return, terminated on a throw")
    func threadPool() throws {
        let ran = Atomic<Int>(0)
        let lengths = try withThreadPool(threads: 3) { pool in
            for _ in 0..<50 { pool.applyAsync({ ran.add(1, ordering: .relaxed) }) }
            return try pool.map(["a", "bb", "ccc"]) { $0.count }
        }
        #expect(lengths == [1, 2, 3])
        #expect(ran.load(ordering: .relaxed) == 50)
        #expect(throws: Stop.self) { try withThreadPool(threads: 1) { _ in throw Stop() } }
    }

    @Test("the async forms: the body may suspend; the join does not block the caller's thread")
    func asyncForms() async throws {
        let sum = try await withThreadPool(threads: 2) { pool in
            try await pool.run { 40 } + 2
        }
        #expect(sum == 42)
        let cubes = try await withProcessPool(processes: 2, work: { (n: Int) -> Int in n * n * n }) { pool in
            try await Task.sleep(for: .milliseconds(1))
            return try pool.map(1...5)
        }
        #expect(cubes == [1, 8, 27, 64, 125])
        await #expect(throws: Stop.self) {
            try await withThreadPool(threads: 1) { _ in
                try await Task.sleep(for: .milliseconds(1))
                throw Stop()
            }
        }
    }
}
