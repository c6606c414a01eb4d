import Multiprocessing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Stress")
struct StressTests {
    @Test("SIGKILL a holder mid-critical-section, 20 times: never a hang, the count is exact")
    func killHoldersRepeatedly() throws {
        let lock = Lock()
        let counters = try SharedCounters()  // [0]: committed increments, [1]: the scratch value
        var expected = 0
        for round in 0..<20 {
            let worker = Process {
                while true {
                    do { try lock.acquire() } catch SyncError.ownerDied { counters[1] = counters[0] }
                    counters[1] += 1  // work in progress: only committed by the next line
                    counters[0] = counters[1]
                    try lock.release()
                }
            }
            try worker.start()
            try sleep(for: .milliseconds(Int64(2 + round % 5)))
            try worker.kill()
            try worker.join()
            var died = false
            do { try lock.acquire() } catch SyncError.ownerDied { died = true }
            if died { counters[1] = counters[0] }  // repair: drop the half-done increment
            #expect(counters[1] == counters[0])
            expected = counters[0]
            try lock.release()
        }
        #expect(expected == counters[0])
    }

    @Test("Semaphores and a Lock between 4 processes × 20 000 rounds")
    func pingPongProcesses() throws {
        let items = try Semaphore(value: 0)
        let slots = try Semaphore(value: 4)
        let lock = Lock()
        let counters = try SharedCounters()
        let producers = (0..<2).map { _ in
            Process {
                for _ in 0..<20_000 {
                    slots.acquire()
                    try lock.withLock { counters[0] += 1 }
                    try items.release()
                }
            }
        }
        let consumers = (0..<2).map { _ in
            Process {
                for _ in 0..<20_000 {
                    items.acquire()
                    try lock.withLock { counters[1] += 1 }
                    try slots.release()
                }
            }
        }
        for p in producers + consumers { try p.start() }
        for p in producers + consumers { try p.join(); #expect(p.exitCode == 0) }
        #expect(counters[0] == 40_000)
        #expect(counters[1] == 40_000)
        #expect(items.value == 0)
        #expect(slots.value == 4)
    }

    @Test("notify(1) releases at most one waiter each time")
    func notifyAtMostN() throws {
        let cond = Condition(lock: Lock())
        let counters = try SharedCounters()  // [0] waiting, [1] returned
        let waiters = (0..<4).map { _ in
            Thread {
                try cond.withLock {
                    counters[0] += 1
                    try cond.wait()
                    counters[1] += 1
                }
            }
        }
        for w in waiters { try w.start() }
        while try cond.withLock({ counters[0] }) < 4 { try sleep(for: .milliseconds(1)) }
        for expected in 1...4 {
            try cond.withLock { try cond.notify(1) }
            while try cond.withLock({ counters[1] }) < expected { try sleep(for: .milliseconds(1)) }
            try sleep(for: .milliseconds(5))
            #expect(try cond.withLock { counters[1] } == expected)
        }
        for w in waiters { try w.join() }
    }

    @Test("Barrier: 3 processes × 300 cycles, and reset() frees a barrier a dead party left")
    func barrierCyclesAndDeadParty() throws {
        let barrier = try Barrier(parties: 3)
        let counters = try SharedCounters(count: 4)
        let children = (0..<3).map { c in
            Process { for _ in 0..<300 { counters[c] += try barrier.wait() >= 0 ? 1 : 0 } }
        }
        for c in children { try c.start() }
        for c in children { try c.join(); #expect(c.exitCode == 0) }
        #expect(counters[0] + counters[1] + counters[2] == 900)

        let pair = try Barrier(parties: 2)
        let doomed = Process { _ = try pair.wait() }
        try doomed.start()
        while pair.waiting < 1 { try sleep(for: .milliseconds(1)) }
        try doomed.kill()
        try doomed.join()
        pair.reset()  // the dead party's arrival is forgotten
        let partner = Thread { _ = try pair.wait() }
        try partner.start()
        #expect(try pair.wait(timeout: .seconds(30)) != nil)
        try partner.join()
    }

    @Test("nothing is left in /dev/shm by this process")
    func noLeftovers() throws {
        do {
            let m = try SharedMemory(create: "mp-test-\(getpid())-leftover", size: 10)
            _ = m
        }
        let prefix = "mp-test-\(getpid())-"
        guard let dir = opendir("/dev/shm") else { return }
        defer { closedir(dir) }
        var left: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix(prefix) { left.append(name) }
        }
        #expect(left.isEmpty)
    }
}
