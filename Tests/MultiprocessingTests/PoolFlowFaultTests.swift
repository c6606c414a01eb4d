import CMultiprocessing
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// An input whose first element takes a while to produce (a file read, a slow generator): the
/// consumer of an `imap` spends that time inside the stream's look-ahead, between two awaits.
struct SlowFirstInput: Sequence, Sendable {
    let entered: Event
    func makeIterator() -> Iterator { Iterator(entered: entered) }
    struct Iterator: IteratorProtocol {
        let entered: Event
        var produced = 0
        mutating func next() -> Int? {
            defer { produced += 1 }
            guard produced == 0 else { return nil }
            entered.set()
            usleep(300_000)
            return 1
        }
    }
}

/// Faults in the pools' task flow: results, errors and cancellations on their way back.
@Suite("Pools: task flow faults")
struct PoolFlowFaultTests {
    @Test("a result message shorter than its header, put by a peer into the result ring, is dropped, not a crash")
    func shortResultMessage() throws {
        let pool = try ProcessPool(processes: 1) { (x: Int) -> Int in x * x }
        #expect(try pool.apply(2) == 4)
        // Any process that maps the ring (a worker runs the user's code) can put this; here a
        // forked child of the test does, through the mapping it inherited.
        let results = pool.core.channels.results.queue
        let code = try runInChild(timeout: .seconds(20)) {
            let bytes: [UInt8] = [1, 2, 3]
            bytes.withUnsafeBytes { _ = putMessage(results, $0) }
        }
        #expect(code == 0)
        // Before the fix the result thread read a 24-byte header out of 3 bytes and trapped
        // slicing the payload: the whole parent process died here.
        #expect(try pool.applyAsync(3).get(timeout: patience) == 9)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("cancelling a task that iterates an imap while the input is being read ends the iteration")
    func cancelImapDuringLookAhead() async throws {
        let pool = try ThreadPool(threads: 1)
        let entered = Event()
        let gate = Event()
        // The consumer and the test each on a loop of their own: not on the cooperative threads,
        // which the parallel suite's blocking tests may hold for a minute.
        let consumerLoop = try EventLoop(name: "imap-consumer")
        defer { consumerLoop.shutdown() }
        let consumer = Task(executorPreference: consumerLoop) {
            for try await _ in pool.imap(
                SlowFirstInput(entered: entered),
                { (x: Int) -> Int in
                    gate.wait()  // the one task runs until the test lets it go
                    return x
                })
            {}
        }
        try await onLoop { () async throws in
            #expect(try await entered.wait(timeout: patience))
            consumer.cancel()  // while the consumer is in the input's next(), past its cancellation check
        }
        // Before the fix the cancellation was lost: the consumer registered its wait after the
        // cancellation handler had run, and slept until the task finished (here: never).
        await #expect(throws: CancellationError.self) { try await value(of: consumer, within: patience) }
        gate.set()
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("an initializer that crashes the worker fails the pool's tasks instead of respawning it forever")
    func initializerCrashes() throws {
        let pool = try ProcessPool(processes: 1, initializer: { _exit(3) }) { (x: Int) -> Int in x }
        let handle = pool.applyAsync(1)
        // Before the fix every replacement ran the initializer and died again, without end: the
        // task waited for ever (here, timed out), while the zygote forked workers in a loop.
        #expect {
            try handle.get(timeout: .seconds(20))
        } throws: { error in
            guard case .initializerFailed(_, let message) = error as? PoolError else { return false }
            return message.contains("exited with status 3")
        }
        pool.terminate()
    }

    @Test("two threads reading one imap (a Sendable PoolResults) get every output once, as Python's iterator gives")
    func twoConsumersOfOneImap() throws {
        let pool = try ThreadPool(threads: 2)
        let n = 20_000
        let results = pool.imapUnordered(0..<n, { (x: Int) -> Int in x })
        let seen = Guarded<[Int]>([])
        let readers = (0..<2).map { _ in
            Thread {
                var mine: [Int] = []
                for outcome in results { if let v = try? outcome.get() { mine.append(v) } }
                seen.withLock { $0 += mine }
            }
        }
        for r in readers { try r.start() }
        for r in readers { #expect(try r.join(timeout: patience)) }
        let all = seen.withLock { $0 }
        #expect(all.count == n && Set(all).count == n, "\(all.count) outputs, \(Set(all).count) distinct")
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("two tasks awaiting one imap (a Sendable AsyncPoolResults) get every output once, and both end")
    func twoAsyncConsumersOfOneImap() async throws {
        let pool = try ThreadPool(threads: 2)
        let n = 2_000
        let results: AsyncPoolResults<Int> = pool.imap(0..<n, { (x: Int) -> Int in x })
        // Both readers on a loop of their own (not on the cooperative threads, which the parallel
        // suite's blocking tests may hold for a minute), taking turns at each wait. Before the fix
        // the second reader's wait replaced the first's, which then slept for ever: the loop's
        // limit fails the test.
        let all = try await onLoop {
            try await withThrowingTaskGroup(of: [Int].self) { group in
                for _ in 0..<2 { group.addTask { try await results.reduce(into: [Int]()) { $0.append($1) } } }
                return try await group.reduce(into: [Int]()) { $0 += $1 }
            }
        }
        #expect(all.count == n && Set(all).count == n, "\(all.count) outputs, \(Set(all).count) distinct")
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("map with a chunk size larger than the input (Int.max: 'one chunk') runs it as one chunk")
    func mapHugeChunkSize() throws {
        // Before the fix the chunk count, (count + size - 1) / size, overflowed: a trap.
        let threads = try ThreadPool(threads: 2)
        #expect(try threads.map([1, 2, 3], chunkSize: .max) { $0 * 2 } == [2, 4, 6])
        threads.close()
        #expect(try threads.join(timeout: patience))
        let pool = try ProcessPool(processes: 1) { (x: Int) -> Int in x * 2 }
        #expect(try pool.map([1, 2, 3], chunkSize: .max) == [2, 4, 6])
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("join from one of a thread pool's own tasks throws calledFromTask instead of waiting for itself")
    func threadPoolJoinFromItsOwnTask() throws {
        // Before the fix the join waited for every task to settle, its own included: with no timeout
        // it hung for good, and with one it returned false after waiting the whole of it.
        let pool = try ThreadPool(threads: 2)
        let box = Box<PoolPair>()
        let result = pool.applyAsync { () -> Int in
            pool.close()
            do {
                let joined = try pool.join(timeout: .seconds(5))
                box.value = PoolPair(joined: joined, error: nil)
            } catch {
                box.value = PoolPair(joined: nil, error: error as? PoolError)
            }
            return 1
        }
        #expect(try result.get(timeout: patience) == 1)
        #expect(box.value?.error == .calledFromTask, "the join returned \(String(describing: box.value?.joined))")
        #expect(try pool.join(timeout: patience))
    }
}

/// What a join from inside a task came to: its answer, or its error.
struct PoolPair: Sendable {
    let joined: Bool?
    let error: PoolError?
}
