import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Coroutines, blocking threads and other processes on the same words at once: nothing is lost,
/// nothing is taken twice, nobody sleeps through a wake-up.
@Suite("EventLoop: mixed coroutine, thread and process waiters")
struct EventLoopStressTests {
    @Test("the kernel's futex waits are used where it has them (Linux 6.7 and later)")
    func ringPathInUse() throws {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        let modern = parts.count >= 2 && (parts[0], parts[1]) >= (6, 7)
        let loop = try EventLoop()
        #expect(loop.supportsFutexWait == modern)
        loop.shutdown()
    }

    @Test(
        "one Lock, 3 processes × 2 threads blocking and 200 coroutines awaiting: exact count",
        arguments: WaitPath.allCases)
    func lockMixed(path: WaitPath) async throws {
        try await path.use { try await lockMixed() }
    }

    private func lockMixed() async throws {
        let lock = Lock()
        let counters = try SharedCounters()
        let child: @Sendable (_ rounds: Int) throws -> Void = { rounds in
            let work: @Sendable () throws -> Void = { for _ in 0..<rounds { try lock.withLock { counters[0] += 1 } } }
            // ThreadSanitizer cannot follow threads started in a forked child: one thread there.
            if runningUnderThreadSanitizer {
                for _ in 0..<2 { try work() }
                return
            }
            let threads = (0..<2).map { _ in Thread(target: work) }
            for t in threads { try t.start() }
            for t in threads { try t.join() }
        }
        // The children are forked from this busy process: they run only code it has run already (a
        // generic type instantiated first in a child waits forever for a runtime lock that another
        // thread held at the fork; a run lost a child that way).
        try child(1)
        counters[0] = 0
        let children = (0..<3).map { _ in Process { try child(2000) } }
        for child in children { try child.start() }
        try await onLoop {
            let workers: [@Sendable () async throws -> Void] = (0..<200).map { _ in
                {
                    for _ in 0..<20 {
                        try await lock.acquire()
                        counters[0] += 1
                        if counters[1] % 7 == 0 { await Task.yield() }  // hold it across a suspension
                        counters[1] += 1
                        try lock.release()
                    }
                }
            }
            _ = try await gather(workers)
        }
        for child in children {
            #expect(try child.join(timeout: .seconds(60)))
            #expect(child.exitCode == 0)
        }
        #expect(counters[0] == 3 * 2 * 2000 + 200 * 20)
    }

    @Test(
        "one Queue: 2 forked producers, a blocking consumer thread and 50 consuming coroutines: every item once",
        arguments: WaitPath.allCases)
    func queueMixed(path: WaitPath) async throws {
        try await path.use { try await queueMixed() }
    }

    private func queueMixed() async throws {
        let queue = try Queue<Int>(maxSize: 16)
        try warmForForkedChildren(queue)
        let producers = (0..<2).map { p in
            Process { for i in 0..<3000 { try queue.put(p * 100_000 + i) } }
        }
        for p in producers { try p.start() }
        let takenByThread = Locked<[Int]>([])
        let stop = -1
        let thread = Thread {
            while true {
                let x = try queue.get(timeout: .seconds(60))
                if x == stop { return }
                takenByThread.withLock { $0.append(x) }
            }
        }
        try thread.start()
        let takenByCoroutines = try await onLoop { () async throws -> [Int] in
            let consumers: [@Sendable () async throws -> [Int]] = (0..<50).map { _ in
                {
                    var mine: [Int] = []
                    while true {
                        let x = try await queue.get(timeout: .seconds(60))
                        if x == stop { return mine }
                        mine.append(x)
                    }
                }
            }
            return try await withThrowingTaskGroup(of: [Int].self) { group in
                for consumer in consumers { group.addTask(operation: consumer) }
                // Once the producers are done and the queue drained, one stop for each consumer.
                for p in producers { _ = try await toThread { try p.join(timeout: .seconds(60)) } }
                while !queue.isEmpty { try await sleep(for: .milliseconds(1)) }
                for _ in 0..<51 { try await queue.put(stop) }
                var all: [Int] = []
                for try await part in group { all += part }
                return all
            }
        }
        #expect(try thread.join(timeout: .seconds(60)))
        let all = (takenByCoroutines + takenByThread.withLock { $0 }).sorted()
        #expect(all == ((0..<3000).map { $0 } + (0..<3000).map { 100_000 + $0 }).sorted())
        // The split between the thread and the coroutines is not promised (the thread may win
        // every race for the consumer lock); each coroutine did take its stop message.
    }

    @Test("Condition.notify(1) from another process releases exactly one of three waiting coroutines")
    func conditionNotifyOne() async throws {
        let condition = Condition(lock: Lock())
        let counters = try SharedCounters()
        let loop = try EventLoop()
        let notifier = Process {
            while counters[0] < 3 { try sleep(for: .milliseconds(1)) }
            try condition.withLock { try condition.notify(1) }
            while counters[1] < 1 { try sleep(for: .milliseconds(1)) }
            try sleep(for: .milliseconds(50))
            counters[2] = counters[1]  // how many returned for notify(1)
            try condition.withLock { try condition.notifyAll() }
        }
        try notifier.start()
        try await onLoop(loop) {
            let waiters: [@Sendable () async throws -> Void] = (0..<3).map { _ in
                {
                    try await condition.acquire()
                    counters[0] += 1
                    try await condition.wait(timeout: .seconds(60))
                    counters[1] += 1
                    try condition.release()
                }
            }
            _ = try await gather(waiters)
        }
        #expect(try notifier.join(timeout: .seconds(60)))
        #expect(counters[2] == 1)
        #expect(counters[1] == 3)
    }
}
