import CMultiprocessing
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// CPU time the calling thread has used, in nanoseconds.
private func threadCPUNanoseconds() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
}

/// The cost of a queue's waits that must not wait: what a try (a nowait call, and the try steps an
/// awaiting coroutine takes on its loop's thread) costs when it finds nothing, and what contended
/// async gets and puts cost their loop threads. Exact counts are asserted; the costs are printed,
/// not gated (times vary with the host: compare two builds on one machine, or count the spin's
/// rounds with a uprobe on `mp_queue_wait_until`, as issue #14's report does).
@Suite("Queue: what a try costs its thread (measured)")
struct QueueParkMeasureTests {
    @Test("a try that finds nothing returns at once: getNowait, putNowait, async put(contentsOf:) on a full queue")
    func triesDoNotSpin() async throws {
        let calls = 2000
        let (getNs, putNs, full) = try Self.nowaitCosts(calls)

        // On a loop's thread: the batch put's first run (what fits now) and the single put's try.
        let batchNs = try await onLoop { () async throws -> Int64 in
            var refused = 0
            let start = threadCPUNanoseconds()
            for _ in 0..<calls {
                do { try await full.put(contentsOf: [9, 10], timeout: .zero) } catch QueueError.full { refused += 1 }
            }
            #expect(refused == calls)
            return (threadCPUNanoseconds() - start) / Int64(calls)
        }
        #expect(full.count == 8)
        print(
            "park-measure: CPU per failed try: getNowait \(getNs) ns, putNowait \(putNs) ns, async put(contentsOf:) on the loop thread \(batchNs) ns"
        )
    }

    /// The blocking API's tries, from a plain (synchronous) function; returns the full queue.
    private static func nowaitCosts(_ calls: Int) throws -> (Int64, Int64, Queue<Int>) {
        let empty = try Queue<Int>(maxSize: 8)
        var failed = 0
        var cpu = threadCPUNanoseconds()
        for _ in 0..<calls where (try? empty.getNowait()) == nil { failed += 1 }
        let getNs = (threadCPUNanoseconds() - cpu) / Int64(calls)
        #expect(failed == calls)

        let full = try Queue<Int>(maxSize: 8)
        for i in 0..<8 { try full.put(i) }
        failed = 0
        cpu = threadCPUNanoseconds()
        for _ in 0..<calls where (try? full.putNowait(9)) == nil { failed += 1 }
        let putNs = (threadCPUNanoseconds() - cpu) / Int64(calls)
        #expect(failed == calls)
        return (getNs, putNs, full)
    }

    @Test("two loops' coroutines contend for a forked producer's items: every item once; CPU of each loop thread")
    func contendedLoops() async throws {
        let queue = try Queue<Int>(maxSize: 64)
        try warmForForkedChildren(queue)
        let total = 40_000, getters = 8
        let put = try SharedCounters()  // how far the producer got, for a failure's message
        let producer = Process {
            for i in 0..<total {
                try queue.put(i, timeout: .seconds(60))
                put[0] = i + 1
                if i % 16 == 0 { usleep(50) }  // bursts: the getters run dry and race for each burst
            }
            for _ in 0..<(2 * getters) { try queue.put(-1, timeout: .seconds(60)) }
        }
        defer {
            if put[0] != total {
                Issue.record("the producer (alive: \(producer.isAlive)) put \(put[0]) of \(total) items")
            }
        }
        let loops = [try EventLoop(name: "park-a"), try EventLoop(name: "park-b")]
        defer { for loop in loops { loop.shutdown() } }
        let cpuBefore = try await loops.asyncMap(loopThreadCPU)
        let wall = ContinuousClock.now
        // The getters are tasks of their loops, made here, and the producer starts once they exist: from
        // then on nothing waits for Swift's cooperative pool, whose two threads other tests may hold for
        // minutes with blocking calls (a task group's children, which this test used to start its loops
        // with, then did not run, and the producer's puts timed out with no getter yet).
        let tasks = loops.map { loop in
            (0..<getters).map { _ in
                Task(executorPreference: loop) { () async throws -> [Int] in
                    var mine: [Int] = []
                    while true {
                        let x = try await queue.get(timeout: .seconds(60))
                        if x < 0 { return mine }
                        mine.append(x)
                    }
                }
            }
        }
        try producer.start()
        var perLoop: [[Int]] = []
        for loopTasks in tasks {
            var mine: [Int] = []
            for task in loopTasks { mine += try await task.value }
            perLoop.append(mine)
        }
        let elapsed = ContinuousClock.now - wall
        let cpu = zip(try await loops.asyncMap(loopThreadCPU), cpuBefore).map { $0 - $1 }
        #expect(try producer.join(timeout: .seconds(60)))
        let all = perLoop.flatMap { $0 }
        #expect(all.count == total)
        #expect(all.sorted() == Array(0..<total))
        let perItem = zip(cpu, perLoop).map { $1.isEmpty ? 0 : $0 / Int64($1.count) }
        print(
            "park-measure: contended: items per loop \(perLoop.map(\.count)), loop thread CPU \(cpu.map { $0 / 1_000_000 }) ms, per item \(perItem) ns, wall \(elapsed)"
        )
    }

    @Test(
        "two loops, each with producer and consumer coroutines, on one bounded Queue: every item once; CPU of each loop thread"
    )
    func contendedPutsAndGets() async throws {
        let queue = try Queue<Int>(maxSize: 8)
        let perLoop = 10_000, producers = 8, consumers = 8
        let loops = [try EventLoop(name: "park-pa"), try EventLoop(name: "park-pb")]
        let wall = ContinuousClock.now
        let results = try await withThrowingTaskGroup(of: ([Int], Int64).self) { group in
            for (l, loop) in loops.enumerated() {
                group.addTask {
                    try await onLoop(loop, limit: .seconds(120)) { () async throws -> ([Int], Int64) in
                        let start = threadCPUNanoseconds()
                        let taking = (0..<consumers).map { _ in
                            Task(executorPreference: loop) { () async throws -> [Int] in
                                var mine: [Int] = []
                                while true {
                                    let x = try await queue.get(timeout: .seconds(60))
                                    if x < 0 { return mine }
                                    mine.append(x)
                                }
                            }
                        }
                        let putting: [@Sendable () async throws -> Void] = (0..<producers).map { p in
                            {
                                let first = l * perLoop + p * (perLoop / producers)
                                for i in first..<(first + perLoop / producers) {
                                    try await queue.put(i, timeout: .seconds(60))
                                }
                            }
                        }
                        _ = try await gather(putting)
                        for _ in 0..<consumers { try await queue.put(-1, timeout: .seconds(60)) }
                        var all: [Int] = []
                        for task in taking { all += try await task.value }
                        return (all, threadCPUNanoseconds() - start)
                    }
                }
            }
            var results: [([Int], Int64)] = []
            for try await result in group { results.append(result) }
            return results
        }
        let elapsed = ContinuousClock.now - wall
        let all = results.flatMap { $0.0 }
        #expect(all.count == 2 * perLoop)
        #expect(all.sorted() == Array(0..<(2 * perLoop)))
        let cpu = results.map { $0.1 / 1_000_000 }
        print(
            "park-measure: puts and gets: items per loop \(results.map { $0.0.count }), loop thread CPU \(cpu) ms, wall \(elapsed)"
        )
    }
}

/// The CPU time `loop`'s thread has used so far, read on that thread.
private func loopThreadCPU(_ loop: EventLoop) async throws -> Int64 {
    try await Task(executorPreference: loop) { threadCPUNanoseconds() }.value
}

extension Array {
    fileprivate func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var result: [T] = []
        for element in self { result.append(try await transform(element)) }
        return result
    }
}
