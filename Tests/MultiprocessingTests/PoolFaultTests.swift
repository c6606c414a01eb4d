import CMultiprocessing
import MultiprocessingTestTargets
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Per task: how many outcomes it got, and which.
final class OutcomeLedger: @unchecked Sendable {
    private let lock = Lock()
    private var counts: [Int]
    private var values: [Int?]
    private var errors: [(any Error)?]

    init(_ n: Int) {
        counts = Array(repeating: 0, count: n)
        values = Array(repeating: nil, count: n)
        errors = Array(repeating: nil, count: n)
    }

    func value(_ i: Int, _ v: Int) {
        locked {
            counts[i] += 1; values[i] = v
        }
    }
    func error(_ i: Int, _ e: any Error) {
        locked {
            counts[i] += 1; errors[i] = e
        }
    }
    func snapshot() -> ([Int], [Int?], [(any Error)?]) { locked { (counts, values, errors) } }

    private func locked<R>(_ body: () -> R) -> R {
        try! lock.acquire()
        defer { try! lock.release() }
        return body()
    }
}

nonisolated(unsafe) var initializedInWorker = 0

@Suite("ProcessPool faults")
struct PoolFaultTests {
    @Test("10 000 tasks while a helper SIGKILLs a random worker 100 times: one outcome each, clean end")
    func killRandomWorkers() throws {
        let pool = try ProcessPool(processes: 3) { (x: Int) -> Int in
            try sleep(for: .microseconds(200))
            return x &* 7
        }
        let n = 10_000
        let ledger = OutcomeLedger(n)
        let handles = (0..<n).map { i in
            pool.applyAsync(i, callback: { ledger.value(i, $0) }, errorCallback: { ledger.error(i, $0) })
        }
        let killed = Box<[Int32]>()
        killed.value = []
        let killer = Thread(name: "killer") {
            var victims: Set<Int32> = []
            let giveUp = ContinuousClock.now + patience
            while victims.count < 100 && ContinuousClock.now < giveUp {
                // A worker not killed yet (a killed one stays listed until its exit is handled).
                if let worker = pool.core.workerProcesses.filter({ !victims.contains($0.pid ?? 0) }).randomElement(),
                    let pid = worker.pid
                {
                    try worker.kill()  // through its pidfd: never a process that took over a reaped pid
                    victims.insert(pid)
                    killed.value!.append(pid)
                }
                try sleep(for: .milliseconds(2))
            }
        }
        try killer.start()
        #expect(try killer.join(timeout: patience))
        pool.close()
        #expect(try pool.join(timeout: patience))

        let (counts, values, errors) = ledger.snapshot()
        let victims = Set(killed.value!)
        #expect(victims.count == 100)
        var died: [Int32: Int] = [:]
        for i in 0..<n {
            #expect(counts[i] == 1, "task \(i) had \(counts[i]) outcomes")
            #expect(handles[i].isReady)
            if let v = values[i] {
                #expect(v == i &* 7)
                #expect(try handles[i].get(timeout: .zero) == v)
            } else if case .workerDied(let pid, let reason) = errors[i] as? PoolError {
                #expect(victims.contains(pid) && reason == .signal(SIGKILL))
                died[pid, default: 0] += 1
            } else {
                Issue.record("task \(i): unexpected \(String(describing: errors[i]))")
            }
        }
        #expect(died.values.allSatisfy { $0 == 1 }, "a worker runs one task at a time")
        print("killRandomWorkers: \(died.count) of 100 kills hit a running task")
        for pid in victims.union(pool.workerPIDs) { #expect(!processExists(pid)) }
    }

    @Test("maxTasksPerChild recycles workers without losing a task", arguments: [1, 5])
    func maxTasksPerChild(chunkSize: Int) throws {
        let pool = try ProcessPool(processes: 2, maxTasksPerChild: 3) { (_: Int) -> Int32 in Process.current.pid ?? 0 }
        let pids = try pool.mapAsync(0..<60, chunkSize: chunkSize).get(timeout: patience)
        #expect(pids.count == 60)
        let perWorker = Dictionary(grouping: pids, by: { $0 }).mapValues(\.count)
        #expect(perWorker.values.allSatisfy { $0 <= 3 * chunkSize })
        #expect(perWorker.count >= 60 / (3 * chunkSize))
        pool.close()
        #expect(try pool.join(timeout: patience))
        for pid in perWorker.keys { #expect(!processExists(pid)) }
    }

    @Test("terminate mid-run kills the workers and fails every unfinished task with terminated")
    func terminateMidRun() throws {
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in
            try sleep(for: .seconds(60))
            return x
        }
        let handles = (0..<20).map { pool.applyAsync($0) }
        let workers = pool.workerPIDs
        try sleep(for: .milliseconds(50))
        pool.terminate()  // returns once the workers are reaped
        for h in handles { #expect(throws: PoolError.terminated) { try h.get(timeout: .zero) } }
        for pid in workers { #expect(!processExists(pid)) }
        #expect(pool.workerPIDs.isEmpty)
        #expect(try pool.join(timeout: patience))
        #expect(throws: PoolError.closed) { try pool.apply(1) }
    }

    @Test("a worker that exits or crashes fails only its task, naming its pid and how it ended")
    func exitAndCrash() throws {
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in
            if x == 13 { _exit(3) }
            if x == 14 {
                signal(SIGSEGV, SIG_DFL)  // a plain crash, without the Swift runtime's backtrace
                raise(SIGSEGV)
            }
            return x
        }
        let handles = (0..<30).map { pool.applyAsync($0) }
        for (i, h) in handles.enumerated() {
            switch i {
            case 13, 14:
                do {
                    _ = try h.get(timeout: patience)
                    Issue.record("task \(i) succeeded")
                } catch PoolError.workerDied(let pid, let reason) {
                    #expect(pid != getpid())
                    #expect(reason == (i == 13 ? .exited(3) : .signal(SIGSEGV)))
                }
            default:
                #expect(try h.get(timeout: patience) == i)
            }
        }
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("the initializer runs in each worker; if it throws, every task fails with its error")
    func initializer() throws {
        let pool = try ProcessPool(processes: 2, initializer: { initializedInWorker = 42 }) { (_: Int) in
            initializedInWorker
        }
        #expect(try pool.mapAsync(0..<10, chunkSize: 1).get(timeout: patience) == Array(repeating: 42, count: 10))
        pool.close()
        #expect(try pool.join(timeout: patience))

        let broken = try ProcessPool(processes: 2, initializer: { throw Shouted(word: "init") }) { (x: Int) in x }
        let expected = PoolError.initializerFailed(type: String(reflecting: Shouted.self), message: "shouted init")
        #expect(throws: expected) { try broken.applyAsync(1).get(timeout: patience) }
        #expect(throws: expected) { try broken.apply(2) }
        #expect(try broken.join(timeout: patience))
    }

    @Test("a spawned worker killed mid-task fails that task; its replacement runs the rest")
    func killSpawnedWorker() throws {
        useTestHelper()
        let pool = try ProcessPool(processes: 1, worker: TestTargets.poolRepeat)
        let hang = pool.applyAsync(PoolJob(text: "hang", times: 1))
        let after = pool.applyAsync(PoolJob(text: "ok", times: 2))
        let pid = try #require(pool.workerPIDs.first)
        try sleep(for: .milliseconds(200))
        kill(pid, SIGKILL)
        #expect(throws: PoolError.workerDied(pid: pid, reason: .signal(SIGKILL))) { try hang.get(timeout: patience) }
        #expect(try after.get(timeout: patience).text == "okok")
        pool.close()
        #expect(try pool.join(timeout: patience))
        #expect(!processExists(pid))
    }

    @Test("start-up watchdog: a forked worker stuck before its first task is replaced, counted, no task lost")
    func stuckStartup() throws {
        let options = PoolOptions(startupLimit: 300_000_000, stallFirstWorker: true)
        let pool = ProcessPool<Int, Int32>(
            core: try ProcessPool<Int, Int32>.forkingCore(1, nil, { _ in Process.current.pid ?? 0 }, nil, options))
        let stuck = try #require(pool.workerPIDs.first)
        let handles = (0..<10).map { pool.applyAsync($0) }
        for h in handles { #expect(try h.get(timeout: patience) != stuck) }
        #expect(!pool.workerPIDs.contains(stuck))
        #expect(pool.watchdogReplacements == 1)
        pool.close()
        #expect(try pool.join(timeout: patience))
        #expect(!processExists(stuck))
    }

    @Test("an observer that terminates the pool when the watchdog reports a stuck worker does not hang it")
    func terminateFromWatchdog() throws {
        final class Terminating: PoolObserver, @unchecked Sendable {
            let pool = Mutex<ProcessPool<Int, Int>?>(nil)
            let returned = Event()
            func workerStuck(pid: Int32) {
                pool.withLock { $0 }?.terminate()  // on the watchdog's thread
                returned.set()
            }
        }
        let observer = Terminating()
        let options = PoolOptions(startupLimit: 100_000_000, stallFirstWorker: true, observer: observer)
        let pool = ProcessPool<Int, Int>(core: try ProcessPool<Int, Int>.forkingCore(1, nil, { $0 }, nil, options))
        observer.pool.withLock { $0 = pool }
        defer { observer.pool.withLock { $0 = nil } }
        let stuck = try #require(pool.workerPIDs.first)
        // Before the fix, terminate waited for the result thread, which waited for the watchdog's
        // report of the killed workers: neither returned.
        #expect(try observer.returned.wait(timeout: patience), "terminate returns on the watchdog's thread")
        #expect(try pool.join(timeout: patience))
        #expect(throws: PoolError.self) { try pool.apply(1) }
        #expect(!processExists(stuck))
    }

    @Test("a zygote whose workers all get stuck fails the pool with a typed error instead of hanging")
    func poisonedZygote() throws {
        // Every worker stalls: what a zygote that inherited a held runtime lock would do.
        let options = PoolOptions(startupLimit: 100_000_000, stallFirstWorker: true)
        let core = try ProcessPool<Int, Int>.forkingCore(1, nil, { $0 }, nil, options)
        let pool = ProcessPool<Int, Int>(core: core)
        core.stallEveryWorkerForTesting()
        let handle = pool.applyAsync(1)
        let error = #expect(throws: PoolError.self) { try handle.get(timeout: patience) }
        guard case .workersCannotStart = error else {
            Issue.record("expected workersCannotStart, got \(String(describing: error))")
            return
        }
        #expect(pool.watchdogReplacements == WorkerWatcher.stuckLimit)
        #expect(throws: PoolError.self) { try pool.apply(2) }
        pool.terminate()
    }

    @Test("a closure pool forks its workers from a zygote, which is gone once the pool is")
    func zygote() throws {
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int32 in x == 0 ? getppid() : Process.current.pid ?? 0 }
        let workers = Set(pool.workerPIDs)
        let zygote = try #require(pool.core.zygotePID)
        #expect(procStat(zygote)?.parent == getpid())
        #expect(!workers.contains(zygote))
        // Each one's name, to tell it from a later process that took its pid (pids wrap at 32 768
        // here; under load a worker replaced early may see its pid reused before the end).
        let names = Dictionary(uniqueKeysWithValues: workers.union([zygote]).map { ($0, procStat($0)?.name) })
        #expect(try pool.apply(0) == getpid())  // the zygote forked it, but it is this process's child
        pool.close()
        #expect(try pool.join(timeout: patience))
        for (pid, name) in names {
            if let left = procStat(pid) {
                #expect(left.parent != getpid() || left.name != name, "\(pid) (\(left.name)) is left")
            }
        }
    }

    @Test("a zygote that does not prove itself in time is killed and forked again; the pool works, no task lost")
    func zygoteRestart() throws {
        // The first two zygotes hang before their hello: what ones that inherited a held runtime lock do.
        // A healthy zygote says hello in about a millisecond; the sanitizers slow its fork a lot.
        let limit: Int64 = runningUnderSanitizer ? 2_000_000_000 : 200_000_000
        let options = PoolOptions(stallingZygotes: 2, zygoteReadyLimit: limit)
        let pool = ProcessPool<Int, Int>(core: try ProcessPool<Int, Int>.forkingCore(2, nil, { $0 &* 3 }, nil, options))
        #expect(pool.zygoteRestarts >= 2)  // the two that hung, and any healthy one a loaded machine slowed
        #expect(try pool.mapAsync(Array(0..<50), chunkSize: 3).get(timeout: patience) == (0..<50).map { $0 &* 3 })
        #expect(pool.watchdogReplacements == 0)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("a pool whose zygotes never prove themselves fails with workersCannotStart instead of hanging")
    func zygoteNeverReady() throws {
        let options = PoolOptions(stallingZygotes: Zygote.attempts, zygoteReadyLimit: 20_000_000)
        let error = #expect(throws: PoolError.self) {
            _ = try ProcessPool<Int, Int>.forkingCore(1, nil, { $0 }, nil, options)
        }
        guard case .workersCannotStart = error else {
            Issue.record("expected workersCannotStart, got \(String(describing: error))")
            return
        }
    }

    // The server wrote a child's go byte after sending its reply: a server killed between the two
    // (the forkserver test that kills it, running beside a test that starts children) left the
    // client a child it knew, which read the end of its go pipe and exited 1 without running.
    @Test("a zygote killed right after it answered a fork: the worker it forked runs, its go sent by the pool")
    func zygoteKilledAfterReply() throws {
        let options = PoolOptions(zygoteKilledAfterFirstReply: true)
        let core = try ProcessPool<Int, Int>.forkingCore(1, nil, { $0 &* 3 }, nil, options)
        let pool = ProcessPool<Int, Int>(core: core)
        let zygote = try #require(core.zygotePID)
        #expect(try pool.applyAsync(7).get(timeout: patience) == 21)
        #expect(try pool.applyAsync(8).get(timeout: patience) == 24)
        #expect(eventually(timeout: .seconds(10)) { processGone(zygote) })
        #expect(pool.watchdogReplacements == 0)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("claim protocol: a task claimed by a worker that died before consuming it is not run again")
    func claimedThenDied() throws {
        let channels = try PoolChannels(workers: 2)
        let q = channels.tasks.queue
        func put(_ id: UInt64) {
            withUnsafeBytes(of: Int(id)) { payload in
                withMessage(TaskHeader(id: id, count: 1, form: 1), size: TaskHeader.size, payload: payload) {
                    putMessage(q, $0)
                }
            }
        }
        put(1)
        put(2)
        // Worker 0 takes task 1, claims it, and dies holding the consumer lock, the message unconsumed.
        let dying = Process {
            let next = beginGet(q, .max)
            mp_pool_claim(channels.slots, next.first.loadUnaligned(as: TaskHeader.self).id)
            mp_exit_child(9)
        }
        try dying.start()
        #expect(try dying.join(timeout: patience))
        #expect(mp_pool_slot(channels.slots) == 1)
        let taker = TaskTaker(tasks: q, slots: channels.slots, slotCount: 2, index: 1)
        var taken: [UInt64] = []
        #expect(taker.take { header, _ in taken.append(header.id) })
        #expect(taken == [2])  // task 1 is the dead worker's: the parent fails it; nobody runs it
        #expect(mp_pool_slot(channels.slots + 1) == 2)

        // A worker that dies before claiming leaves its task to the next one.
        put(3)
        let early = Process {
            _ = beginGet(q, .max)
            mp_exit_child(9)
        }
        try early.start()
        #expect(try early.join(timeout: patience))
        #expect(taker.take { header, _ in taken.append(header.id) })
        #expect(taken == [2, 3])
    }
}
