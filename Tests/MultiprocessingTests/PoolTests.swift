import CMultiprocessing
import Multiprocessing
import MultiprocessingTestTargets
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A Codable task error: a process pool hands it back as itself.
struct Refusal: Error, Codable, Equatable {
    var word: String
    var code: Int
}

struct Shouted: Error, CustomStringConvertible {
    var word: String
    var description: String { "shouted \(word)" }
}

/// The calling thread, for telling threads apart.
func threadID() -> UInt { UInt(pthread_self()) }

/// What callbacks saw: the values, the threads they ran on.
final class CallbackLog<T: Sendable>: @unchecked Sendable {
    private let lock = Lock()
    private var entries: [(T, UInt)] = []
    func record(_ value: T) { locked { entries.append((value, threadID())) } }
    var values: [T] { locked { entries.map(\.0) } }
    var threads: Set<UInt> { locked { Set(entries.map(\.1)) } }
    private func locked<R>(_ body: () -> R) -> R {
        try! lock.acquire()
        defer { try! lock.release() }
        return body()
    }
}

/// A value set once from another thread.
final class Box<T: Sendable>: @unchecked Sendable {
    private let lock = Lock()
    private var stored: T?
    var value: T? {
        get { try! lock.acquire(); defer { try! lock.release() }; return stored }
        set { try! lock.acquire(); defer { try! lock.release() }; stored = newValue }
    }
}

let patience = Duration.seconds(60)

@Suite("ProcessPool")
struct ProcessPoolTests {
    @Test("applyAsync: every task on a worker's pid, callbacks on one thread, close and join")
    func applyAsyncRunsOnWorkers() throws {
        let pool = try ProcessPool(processes: 3) { (x: Int) -> [Int32] in [Process.current.pid ?? 0, Int32(x)] }
        #expect(pool.processes == 3)
        let workers = Set(pool.workerPIDs)
        #expect(workers.count == 3 && !workers.contains(getpid()))
        let log = CallbackLog<[Int32]>()
        let handles = (0..<50).map { pool.applyAsync($0, callback: { log.record($0) }) }
        pool.close()
        #expect(try pool.join(timeout: patience))
        for (i, h) in handles.enumerated() {
            #expect(h.isReady && h.isSuccessful)
            let answer = try h.get(timeout: .zero)
            #expect(answer[1] == Int32(i))
            #expect(workers.contains(answer[0]))
        }
        #expect(log.values.count == 50)
        #expect(log.threads.count == 1 && !log.threads.contains(threadID()))
        for pid in workers { #expect(!processExists(pid)) }  // reaped: no zombie
    }

    @Test("apply blocks for each result; run awaits one")
    func applyAndRun() async throws {
        let pool = try ProcessPool(processes: 2) { (s: String) -> String in s + s }
        #expect(try pool.apply("ab") == "abab")
        #expect(try pool.apply("") == "")
        #expect(try await pool.run("xy") == "xyxy")
        async let a = pool.run("1")
        async let b = pool.run("2")
        #expect(try await [a, b] == ["11", "22"])
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("map keeps input order for every chunk size, bitwise and Codable values", arguments: [nil, 1, 7, 64, 5000])
    func mapOrder(chunkSize: Int?) throws {
        let ints = try ProcessPool(processes: 2) { (x: Int) -> Int in 3 * x + 1 }
        let input = Array(0..<3001)
        #expect(try ints.mapAsync(input, chunkSize: chunkSize).get(timeout: patience) == input.map { 3 * $0 + 1 })
        #expect(try ints.mapAsync([Int](), chunkSize: chunkSize).get(timeout: patience) == [])
        ints.close()
        #expect(try ints.join(timeout: patience))

        let strings = try ProcessPool(processes: 2) { (s: String) -> [String] in [s, String(s.reversed())] }
        let words = (0..<500).map { "w\($0)-é" }
        let out = try strings.mapAsync(words, chunkSize: chunkSize).get(timeout: patience)
        #expect(out == words.map { [$0, String($0.reversed())] })
        strings.close()
        #expect(try strings.join(timeout: patience))
    }

    @Test("imap yields in input order, imapUnordered every result once; both lazy, both async")
    func imapOrder() async throws {
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in
            if x % 5 == 0 { try sleep(for: .milliseconds(3)) }  // finish out of order
            return x * x
        }
        var ordered: [Int] = []
        var iterator = pool.imap(0..<200, chunkSize: 3).makeIterator()
        while let outcome = try iterator.next(timeout: patience) { ordered.append(try outcome.get()) }
        #expect(ordered == (0..<200).map { $0 * $0 })

        var unordered: [Int] = []
        var it2 = pool.imapUnordered(0..<200).makeIterator()
        while let outcome = try it2.next(timeout: patience) { unordered.append(try outcome.get()) }
        #expect(unordered.sorted() == (0..<200).map { $0 * $0 })

        // An endless input: only a bounded number of tasks runs ahead of the reader.
        var endless = pool.imap(0...).makeIterator()
        for i in 0..<50 { #expect(try endless.next(timeout: patience)?.get() == i * i) }

        var asyncOrdered: [Int] = []
        for try await r in pool.imap(0..<100, chunkSize: 4) { asyncOrdered.append(r) }
        #expect(asyncOrdered == (0..<100).map { $0 * $0 })
        var asyncUnordered: [Int] = []
        for try await r in pool.imapUnordered(0..<100) { asyncUnordered.append(r) }
        #expect(asyncUnordered.sorted() == (0..<100).map { $0 * $0 })
        pool.terminate()
    }

    @Test("a Codable error comes back as itself: apply, get, map, imap, the error callback")
    func codableTaskErrors() async throws {
        let pool = try ProcessPool(processes: 2) { (word: String) -> Int in
            if word.hasPrefix("!") { throw Refusal(word: word, code: word.count) }
            return word.count
        }
        #expect(throws: Refusal(word: "!stop", code: 5)) { try pool.apply("!stop") }
        #expect(throws: Refusal(word: "!no", code: 3)) { try pool.applyAsync("!no").get(timeout: patience) }
        #expect(throws: Refusal(word: "!b", code: 2)) { try pool.map(["a", "!b", "cc"], chunkSize: 1) }
        #expect(throws: Refusal(word: "!b", code: 2)) { try pool.map(["a", "!b", "cc"]) }  // in a chunk
        let outcomes = Array(pool.imap(["a", "!x"]))
        #expect(throws: Refusal(word: "!x", code: 2)) { try outcomes[1].get() }
        await #expect(throws: Refusal(word: "!y", code: 2)) { for try await _ in pool.imap(["!y"]) {} }
        let seen = CallbackLog<String>()
        let handle = pool.applyAsync("!cb", errorCallback: { seen.record(String(describing: $0 as? Refusal)) })
        _ = try? handle.get(timeout: patience)
        #expect(eventually { seen.values.count == 1 })
        #expect(seen.values == [String(describing: Refusal(word: "!cb", code: 3) as Refusal?)])
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("a thrown error comes back as that task's error, with its type and message")
    func taskErrors() async throws {
        let pool = try ProcessPool(processes: 2) { (word: String) -> Int in
            if word.hasPrefix("!") { throw Shouted(word: word) }
            return word.count
        }
        let bad = pool.applyAsync("!no")
        #expect(throws: PoolError.self) { try bad.get(timeout: patience) }
        #expect(bad.isReady && !bad.isSuccessful)
        var caught: PoolError?
        do { _ = try pool.apply("!stop") } catch { caught = error as? PoolError }  // Shouted is not Codable
        if case .taskFailed(let type, let message) = caught {
            #expect(type.hasSuffix("Shouted"))
            #expect(message == "shouted !stop")
        } else {
            Issue.record("expected taskFailed, got \(String(describing: caught))")
        }
        #expect(throws: PoolError.taskFailed(type: String(reflecting: Shouted.self), message: "shouted !b")) {
            try pool.mapAsync(["a", "!b", "cc"], chunkSize: 1).get(timeout: patience)
        }
        let outcomes = Array(pool.imap(["a", "!b", "cc"]))
        #expect(outcomes.count == 3)
        #expect(try outcomes[0].get() == 1 && (try outcomes[2].get()) == 2)
        #expect(throws: PoolError.self) { try outcomes[1].get() }
        await #expect(throws: PoolError.self) { for try await _ in pool.imap(["!x"]) {} }
        let errors = CallbackLog<String>()
        pool.applyAsync("!cb", callback: { _ in errors.record("value") }, errorCallback: { errors.record("\($0)") })
        pool.close()
        #expect(try pool.join(timeout: patience))
        #expect(errors.values == ["\(String(reflecting: Shouted.self)): shouted !cb"])
    }

    @Test("typed errors: closed pool, bad counts, join while open, a get that times out")
    func usageErrors() throws {
        #expect(throws: PoolError.invalidWorkerCount(0)) { try ProcessPool(processes: 0) { (x: Int) in x } }
        #expect(throws: PoolError.invalidWorkerCount(-2)) { try ProcessPool(processes: -2) { (x: Int) in x } }
        #expect(throws: PoolError.invalidMaxTasksPerChild(0)) {
            try ProcessPool(processes: 1, maxTasksPerChild: 0) { (x: Int) in x }
        }
        let gate = Event()
        let pool = try ProcessPool(processes: 1) { (x: Int) -> Int in
            if x < 0 { gate.wait() }
            return x
        }
        #expect(throws: PoolError.stillRunning) { try pool.join(timeout: .seconds(1)) }
        let slow = pool.applyAsync(-1)
        #expect(throws: PoolError.timeout) { try slow.get(timeout: .milliseconds(50)) }
        #expect(!slow.isReady && !slow.isSuccessful)
        #expect(throws: PoolError.negativeTimeout(.seconds(-1))) { try slow.get(timeout: .seconds(-1)) }
        #expect(throws: PoolError.invalidChunkSize(0)) {
            try pool.mapAsync([1, 2], chunkSize: 0).get(timeout: patience)
        }
        pool.close()
        #expect(try pool.join(timeout: .milliseconds(20)) == false)  // the slow task still runs
        #expect(throws: PoolError.closed) { try pool.apply(1) }
        #expect(throws: PoolError.closed) { try pool.mapAsync([1, 2]).get(timeout: patience) }
        #expect(throws: PoolError.closed) { try pool.applyAsync(2).get(timeout: patience) }
        gate.set()
        #expect(try slow.get(timeout: patience) == -1)
        #expect(try pool.join(timeout: patience))
    }

    @Test("callbacks run in completion order, before the result is ready; waiting in one is refused")
    func callbackOrder() throws {
        let released = Event()
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in
            if x == 0 { released.wait() }  // finishes only after task 1's callback has run
            return x
        }
        let log = CallbackLog<Int>()
        let other = pool.applyAsync(7)
        _ = try other.get(timeout: patience)
        let refused = Box<PoolError>()
        let first = pool.applyAsync(0, callback: { log.record($0) })
        let second = pool.applyAsync(
            1,
            callback: { value in
                log.record(value)
                do { _ = try first.get(timeout: .seconds(1)) } catch { refused.value = error as? PoolError }
                released.set()
            })
        _ = try first.get(timeout: patience)
        #expect(second.isReady)
        #expect(log.values == [1, 0])
        #expect(refused.value == .calledFromCallback)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("a callback may submit more tasks than both rings hold: the result thread never waits for room")
    func submitFromCallback() throws {
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in x + 1 }
        let spawned = Box<[AsyncResult<Int>]>()
        let n = 300_000  // 9.6 MB of task messages: more than the task ring and the result ring hold
        let first = pool.applyAsync(0, callback: { _ in spawned.value = (1...n).map { pool.applyAsync($0) } })
        #expect(try first.get(timeout: patience) == 1)
        let handles = try #require(spawned.value)
        var sum = 0
        for h in handles { sum += try h.get(timeout: patience) }
        #expect(sum == n * (n + 1) / 2 + n)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("dropping an open pool terminates it: workers reaped, unfinished tasks fail with terminated")
    func dropOpenPool() throws {
        var pids: [Int32] = []
        var handle: AsyncResult<Int>?
        do {
            let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in
                try sleep(for: .seconds(60))
                return x
            }
            pids = pool.workerPIDs
            handle = pool.applyAsync(1)
        }
        #expect(throws: PoolError.terminated) { try handle!.get(timeout: patience) }
        for pid in pids { #expect(!processExists(pid)) }
    }

    @Test("inputs and results larger than the rings stream through")
    func largeMessages() throws {
        let pool = try ProcessPool(processes: 2) { (s: [UInt8]) -> [UInt8] in s.reversed() }
        let big = (0..<(9 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(try pool.applyAsync(big).get(timeout: patience) == big.reversed())
        let chunks = try pool.mapAsync([big, [1, 2, 3]], chunkSize: 1).get(timeout: patience)
        #expect(chunks == [big.reversed(), [3, 2, 1]])
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test(
        "a registered PoolWorker runs under each start method; its workers are this process's children",
        arguments: [Process.StartMethod.forkserver, .spawn, .fork])
    func registeredWorkers(startMethod: Process.StartMethod) throws {
        useTestHelper()
        let pool = try ProcessPool(processes: 2, startMethod: startMethod, worker: TestTargets.poolRepeat)
        let answers = try pool.mapAsync((1...20).map { PoolJob(text: "ab", times: $0) }, chunkSize: 3)
            .get(timeout: patience)
        #expect(answers.map(\.text) == (1...20).map { String(repeating: "ab", count: $0) })
        let workers = Set(pool.workerPIDs)
        #expect(Set(answers.map(\.pid)).isSubset(of: workers))
        for pid in workers { #expect(procStat(pid)?.parent == getpid()) }
        // The worker's Codable error comes back as itself, under every start method (exec'd ones too).
        #expect(throws: PoolJobError.refused("no")) { try pool.apply(PoolJob(text: "no", times: 1, fail: true)) }
        pool.close()
        #expect(try pool.join(timeout: patience))
        #expect(pool.watchdogReplacements == 0)
        for pid in workers { #expect(!processExists(pid)) }
    }
}

@Suite("ThreadPool")
struct ThreadPoolTests {
    @Test("apply, applyAsync with callbacks, run: closures run on the pool's threads")
    func applyAndCallbacks() async throws {
        let pool = try ThreadPool(threads: 3)
        #expect(pool.threads == 3)
        let me = threadID()
        #expect(try pool.apply { threadID() } != me)
        #expect(try await pool.run { 6 * 7 } == 42)
        let log = CallbackLog<Int>()
        let handles = (0..<100).map { i in pool.applyAsync({ i * 2 }, callback: { log.record($0) }) }
        for (i, h) in handles.enumerated() { #expect(try h.get(timeout: patience) == i * 2) }
        #expect(log.values.sorted() == (0..<100).map { $0 * 2 })
        #expect(log.threads.count == 1 && !log.threads.contains(me))
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("map and imap keep order; errors come back as themselves; tuples cover starmap")
    func mapOrderAndErrors() async throws {
        let pool = try ThreadPool(threads: 4)
        let input = Array(0..<1000)
        #expect(try pool.mapAsync(input, chunkSize: 7) { $0 - 1 }.get(timeout: patience) == input.map { $0 - 1 })
        let pairs = [(1, 2), (3, 4), (5, 6)]
        #expect(try pool.mapAsync(pairs) { a, b in a * b }.get(timeout: patience) == [2, 12, 30])
        var ordered: [Int] = []
        var iterator = pool.imap(input, chunkSize: 3) { $0 * 3 }.makeIterator()
        while let outcome = try iterator.next(timeout: patience) { ordered.append(try outcome.get()) }
        #expect(ordered == input.map { $0 * 3 })
        var unordered: [Int] = []
        for try await x in pool.imapUnordered(input, { $0 + 1 }) { unordered.append(x) }
        #expect(unordered.sorted() == input.map { $0 + 1 })
        #expect(throws: Shouted.self) {
            try pool.applyAsync({ () throws -> Int in throw Shouted(word: "x") }).get(timeout: patience)
        }
        #expect(throws: Shouted.self) {
            try pool.mapAsync([1, 2, 3]) { x -> Int in
                if x == 2 { throw Shouted(word: "two") }
                return x
            }.get(timeout: patience)
        }
        pool.close()
        #expect(throws: PoolError.closed) { try pool.applyAsync({ 1 }).get(timeout: patience) }
        #expect(try pool.join(timeout: patience))
    }

    @Test("imap over an endless input ends once the pool refuses: closed before, or closed while it iterates")
    func imapEndsWhenRefused() throws {
        // At most the stream's look-ahead of refused chunks (4 × threads + 2) reports; more, and the
        // iteration is stopped here rather than run forever.
        let cap = 10_000
        let pool = try ThreadPool(threads: 2)
        pool.close()
        var refused = 0
        for outcome in pool.imap(0..., chunkSize: 3, { (x: Int) -> Int in x }) {
            #expect(throws: PoolError.closed) { try outcome.get() }
            refused += 1
            if refused > cap { break }
        }
        #expect(refused > 0 && refused <= (4 * 2 + 2) * 3, "\(refused) refusals")
        #expect(try pool.join(timeout: patience))

        // Closed after 100 results: the chunks submitted by then run to the end, in order, then
        // the refusals, then the end.
        let open = try ThreadPool(threads: 2)
        var (values, refusals, after) = ([Int](), 0, 0)
        for outcome in open.imap(0..., { (x: Int) -> Int in 2 * x }) {
            switch outcome {
            case .success(let value):
                values.append(value)
                if refusals > 0 { after += 1 }
            case .failure(let error):
                #expect(error as? PoolError == .closed)
                refusals += 1
            }
            if values.count == 100 { open.close() }
            if values.count + refusals > cap { break }
        }
        #expect(values == (0..<values.count).map { 2 * $0 })
        #expect(values.count >= 100 && refusals >= 1 && refusals <= 4 * 2 + 2 && after == 0)
        #expect(try open.join(timeout: patience))
    }

    @Test("awaiting a result: cancelling the waiter throws CancellationError, the task goes on")
    func cancelAwait() async throws {
        let pool = try ThreadPool(threads: 1)
        let gate = Event()
        let handle = pool.applyAsync({ () -> Int in
            gate.wait()
            return 5
        })
        let waiter = Task { try await handle.value }
        try await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        gate.set()
        #expect(try await handle.value == 5)
        async let a = handle.value
        async let b = handle.value
        #expect(try await a + b == 10)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("terminate fails the queued tasks, the running one finishes; typed errors")
    func terminate() throws {
        #expect(throws: PoolError.invalidWorkerCount(-1)) { try ThreadPool(threads: -1) }
        let pool = try ThreadPool(threads: 1)
        #expect(throws: PoolError.stillRunning) { try pool.join(timeout: .seconds(1)) }
        let gate = Event()
        let running = pool.applyAsync({ () -> Int in
            gate.wait()
            return 1
        })
        let queued = (0..<10).map { i in pool.applyAsync({ i }) }
        #expect(throws: PoolError.timeout) { try running.get(timeout: .milliseconds(30)) }
        let terminator = Thread { pool.terminate() }
        try terminator.start()
        for q in queued { #expect(throws: PoolError.terminated) { try q.get(timeout: patience) } }
        gate.set()
        #expect(try terminator.join(timeout: patience))
        #expect(try running.get(timeout: patience) == 1)
        #expect(throws: PoolError.terminated) { try pool.apply { 2 } }
        #expect(try pool.join(timeout: patience))
    }
    @Test("terminate from a task, or the last reference dropped in one, does not wait for its own thread")
    func terminateFromTask() throws {
        // A task that terminates its own pool: the wait for the threads to end included its own.
        let pool = try ThreadPool(threads: 2)
        let queued = Event()
        let gate = Event()
        let blocker = pool.applyAsync({ () -> Int in
            gate.wait()
            return 0
        })
        let terminating = pool.applyAsync({ () -> Int in
            queued.wait()
            pool.terminate()
            return 1
        })
        let later = pool.applyAsync({ 2 })
        queued.set()
        #expect(throws: PoolError.terminated) { try later.get(timeout: patience) }
        #expect(try terminating.get(timeout: patience) == 1, "the task that terminated its pool returns")
        gate.set()
        #expect(try blocker.get(timeout: patience) == 0)
        #expect(try pool.join(timeout: patience), "the pool's threads end")
        // The last reference released on a worker thread, as the task that held it ends (deinit
        // terminates the pool there): the thread must end, not wait for itself.
        let worker = Mutex<Int32>(0)
        let released = Event()
        do {
            let dropped = try ThreadPool(threads: 1)
            dropped.applyAsync({ () -> Int in
                worker.withLock { $0 = mp_thread_id() }
                released.wait()
                return dropped.threads
            })
        }
        released.set()  // our reference is gone: the task's is the last one
        #expect(eventually { worker.withLock { $0 } != 0 })
        let tid = worker.withLock { $0 }
        #expect(
            eventually { access("/proc/self/task/\(tid)", F_OK) != 0 },
            "a pool released on its own thread is terminated and the thread ends")
    }
}
