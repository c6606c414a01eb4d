import CMultiprocessing
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// A forked child inherits a copy of its parent's pool objects, not the pools: using one there is a
/// typed error, and nothing the child does to its copy reaches the parent's pool.
/// Serialized, and each child's generic code run once in the parent first: a child forked while
/// another thread holds a lock of the Swift runtime hangs on its first generic call (see Fork.swift).
@Suite("A pool inherited by a forked child is its parent's", .serialized)
struct InheritedPoolTests {
    /// Runs the children's checks once in the parent, so that their metadata and casts are cached
    /// before the fork.
    static func warmUp() {
        let refused = Result<Int, any Error>.failure(PoolError.otherProcess(owner: 1))
        _ = outcome(refused, owner: 1)
        _ = outcome(Result<[Int], any Error>.failure(PoolError.otherProcess(owner: 1)), owner: 1)
        _ = outcome(Result<Bool, any Error>.failure(PoolError.otherProcess(owner: 1)), owner: 1)
        _ = outcome(Result<Void, any Error>.failure(PoolError.otherProcess(owner: 1)), owner: 1)
    }

    /// The child's exit codes: 0 as expected; otherwise which step went wrong.
    static func outcome(_ result: Result<some Any, some Error>, owner: Int32) -> Int32 {
        switch result {
        case .success: return 2
        case .failure(let error as PoolError) where error == .otherProcess(owner: owner): return 0
        case .failure: return 3
        }
    }

    @Test(
        "a process pool: the child's apply, map and join throw otherProcess; its terminate leaves the parent's pool whole"
    )
    func processPool() throws {
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in 2 * x }
        #expect(try pool.apply(1) == 2)
        let workers = Set(pool.workerPIDs)
        let owner = getpid()
        Self.warmUp()
        let code = try runInChild(timeout: .seconds(20)) {
            var step = Self.outcome(Result { try pool.apply(21) }, owner: owner)
            if step == 0 { step = Self.outcome(Result { try pool.map([1, 2, 3]) }, owner: owner) }
            if step == 0 { step = Self.outcome(Result { try pool.join(timeout: .seconds(1)) }, owner: owner) + 10 }
            if step == 10 {
                pool.close()
                pool.terminate()  // the parent's workers and task ring are not the child's to end
                step = 0
            }
            exit(step)
        }
        #expect(code == 0, "exit code \(String(describing: code))")
        #expect(Set(pool.workerPIDs) == workers)  // none killed, none replaced
        #expect(try pool.map(Array(0..<100)) == (0..<100).map { 2 * $0 })
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test(
        "a thread pool: the child's apply throws otherProcess at once; its terminate does not wait for threads it lacks"
    )
    func threadPool() throws {
        let pool = try ThreadPool(threads: 2)
        #expect(try pool.apply { 1 + 1 } == 2)
        let owner = getpid()
        Self.warmUp()
        let code = try runInChild(timeout: .seconds(20)) {
            var step = Self.outcome(Result { try pool.apply { 21 * 2 } }, owner: owner)
            if step == 0 { step = Self.outcome(Result { try pool.join(timeout: .seconds(1)) }, owner: owner) + 10 }
            if step == 10 {
                pool.terminate()
                step = 0
            }
            exit(step)
        }
        #expect(code == 0, "exit code \(String(describing: code))")
        #expect(try pool.apply { 21 * 2 } == 42)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test(
        "results not ready at the fork: the child's get, wait and imap iteration throw otherProcess instead of waiting forever"
    )
    func waitsInChild() throws {
        let pool = try ThreadPool(threads: 2)
        let gate = try Semaphore(value: 0)
        let done = pool.applyAsync { 7 }
        #expect(try done.get(timeout: patience) == 7)
        let pending = pool.applyAsync { () throws -> Int in
            try gate.acquire()
            return 42
        }
        var stream = pool.imap([0, 1, 2]) { (x: Int) throws -> Int in
            if x > 0 { try gate.acquire() }
            return x
        }.makeIterator()
        // Read once here: the stream has then submitted its tasks, and the child's next() waits
        // for a result rather than submitting one (which is refused before any wait).
        #expect(try stream.next()?.get() == 0)
        let owner = getpid()
        Self.warmUp()
        let code = try runInChild(timeout: .seconds(20)) {
            guard (try? done.get()) == 7 else { exit(2) }  // ready before the fork: readable
            var step = Self.outcome(Result { try pending.get() }, owner: owner)
            if step == 0 { step = Self.outcome(Result { try pending.get(timeout: .seconds(5)) }, owner: owner) + 10 }
            if step == 10 { step = Self.outcome(Result { try pending.wait() }, owner: owner) + 20 }
            if step == 20 {
                switch stream.next() {
                case .failure(let error as PoolError) where error == .otherProcess(owner: owner): step = 0
                default: step = 30
                }
            }
            exit(step)
        }
        #expect(code == 0, "exit code \(String(describing: code))")
        try gate.release(3)
        #expect(try pending.get(timeout: patience) == 42)
        #expect(Set([try stream.next()?.get(), try stream.next()?.get()]) == [1, 2])
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test(
        "toThread's helper threads are the parent's: a forked child's job gets a thread of its own",
        .disabled(if: runningUnderThreadSanitizer, "TSan: a forked child may not start threads"))
    func blockingPoolInChild() async throws {
        #expect(try await toThread { 1 } == 1)  // leaves a helper thread in this process,
        try await Task.sleep(for: .milliseconds(100))  // idle by now (counted as such at the fork)
        let code = try runInChild(timeout: .seconds(20)) {
            let done = LocalEvent()
            BlockingPool.shared.submit { done.set() }
            exit(done.wait(deadline: Deadline.after(nanoseconds: 10_000_000_000)) ? 0 : 5)
        }
        #expect(code == 0, "exit code \(String(describing: code)) (5: the job never ran)")
    }
}
