import CMultiprocessing
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The two shapes of queue a coroutine can wait on: an unbounded queue of `Int` (lanes: each
/// producer thread its own ring) and a bounded one (the shared ring only, and full waits).
enum ParkQueueKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case lanes, ring
    var testDescription: String { rawValue }

    func make() throws -> Queue<Int> {
        switch self {
        case .lanes: try Queue<Int>()
        case .ring: try Queue<Int>(maxSize: 8)
        }
    }
}

/// Polls `condition` every millisecond on the current loop (suspending, not blocking) for up to
/// `timeout`; returns whether it came true.
func eventuallyOnLoop(timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if condition() { return true }
        try await sleep(for: .milliseconds(1))
    }
    return condition()
}

@Suite("Queue: a coroutine that waits parks on its loop (no spin); async JoinableQueue.join")
struct QueueParkTests {
    @Test(
        "coroutines waiting on an empty Queue hold no thread: 1 000 others of their loop finish first; then a forked producer's items arrive, each once",
        arguments: ParkQueueKind.allCases)
    func waitersLetTheLoopRun(kind: ParkQueueKind) async throws {
        let queue = try kind.make()
        try warmForForkedChildren(queue)
        let gate = try SharedCounters()
        let total = 2000, getters = 8
        let producer = Process {
            // Puts nothing until the test says every counting coroutine has finished.
            guard eventually(timeout: .seconds(60), { gate[0] == 1 }) else { _exit(3) }
            for i in 0..<total { try queue.put(i) }
            for _ in 0..<getters { try queue.put(-1) }
        }
        try producer.start()
        let loop = try EventLoop(name: "park-loop")
        let (received, early, counted) = try await onLoop(loop) { () async throws -> ([[Int]], Int, Int) in
            let arrived = Guarded(0)
            let tasks = (0..<getters).map { _ in
                Task(executorPreference: loop) { () async throws -> [Int] in
                    var mine: [Int] = []
                    while true {
                        let x = try await queue.get(timeout: .seconds(60))
                        if x < 0 { return mine }
                        arrived.withLock { $0 += 1 }
                        mine.append(x)
                    }
                }
            }
            // Every getter announced as a data sleeper: parked on data_seq through the ring.
            let header = queue.channel.header
            #expect(try await eventuallyOnLoop { header.pointee.data_sleepers == UInt32(getters) })
            let counter = Guarded(0)
            let counters: [@Sendable () async throws -> Bool] = (0..<1000).map { _ in
                {
                    counter.withLock { $0 += 1 }
                    await Task.yield()  // lets the others (and the getters, were they runnable) run
                    counter.withLock { $0 += 1 }
                    return EventLoop.current === loop
                }
            }
            let onThisLoop = try await gather(counters).filter { $0 }.count
            #expect(onThisLoop == 1000)
            let early = arrived.withLock { $0 }  // items that arrived before every counter finished
            #expect(header.pointee.data_sleepers == UInt32(getters))  // still parked, not spinning
            gate[0] = 1
            var received: [[Int]] = []
            for task in tasks { received.append(try await task.value) }
            return (received, early, counter.withLock { $0 })
        }
        #expect(counted == 2000)
        #expect(early == 0)
        let all = received.flatMap { $0 }
        #expect(all.count == total)
        #expect(all.sorted() == Array(0..<total))  // no loss, no duplicate
        for mine in received { #expect(mine == mine.sorted()) }  // one producer: its order holds
        #expect(try producer.join(timeout: .seconds(60)))
        #expect(producer.exitCode == 0)
        #expect(queue.channel.header.pointee.data_sleepers == 0)
    }

    @Test(
        "many producer and consumer coroutines and a forked process that puts and gets on one Queue: every item once",
        arguments: ParkQueueKind.allCases)
    func coroutinesAndAProcess(kind: ParkQueueKind) async throws {
        let queue = try kind.make()
        try warmForForkedChildren(queue)
        let producers = 12, perProducer = 400, consumers = 12
        let processItems = 3000
        let base = producers * perProducer  // the process's items follow the coroutines'
        let total = base + processItems
        let seenByProcess = try SharedCounters(count: total)
        let progress = try SharedCounters()
        let process = Process {
            // Puts its items and, between them, takes what it finds; then takes until a sentinel.
            for i in 0..<processItems {
                try queue.put(base + i)
                if i % 3 == 0, let x = try? queue.get(timeout: .milliseconds(1)) {
                    precondition(x >= 0, "a sentinel before the producers finished")
                    seenByProcess[x] += 1
                }
            }
            progress[0] = 1  // done putting
            while true {
                let x = try queue.get(timeout: .seconds(60))
                if x < 0 { return }
                seenByProcess[x] += 1
            }
        }
        try process.start()
        let loop = try EventLoop(name: "park-mix")
        let received = try await onLoop(loop) { () async throws -> [Int] in
            let consumerTasks = (0..<consumers).map { _ in
                Task(executorPreference: loop) { () async throws -> [Int] in
                    var mine: [Int] = []
                    while true {
                        let x = try await queue.get(timeout: .seconds(60))
                        if x < 0 { return mine }
                        mine.append(x)
                    }
                }
            }
            let producerBodies: [@Sendable () async throws -> Void] = (0..<producers).map { p in
                {
                    for i in 0..<perProducer {
                        try await queue.put(p * perProducer + i, timeout: .seconds(60))
                        if i % 50 == 0 { await Task.yield() }
                    }
                }
            }
            _ = try await gather(producerBodies)
            #expect(try await eventuallyOnLoop(timeout: .seconds(60)) { progress[0] == 1 })
            // One sentinel per consumer, the process included.
            for _ in 0..<(consumers + 1) { try await queue.put(-1, timeout: .seconds(60)) }
            var all: [Int] = []
            for task in consumerTasks { all += try await task.value }
            return all
        }
        #expect(try process.join(timeout: .seconds(60)))
        #expect(process.exitCode == 0)
        var counts = [Int](repeating: 0, count: total)
        for x in received { counts[x] += 1 }
        for x in 0..<total { counts[x] += seenByProcess[x] }
        #expect(counts.filter { $0 == 0 }.count == 0)  // nothing lost
        #expect(counts.filter { $0 > 1 }.count == 0)  // nothing twice
        #expect(received.count + (0..<total).reduce(0) { $0 + seenByProcess[$1] } == total)
        #expect(queue.count == 0)
    }

    @Test(
        "async JoinableQueue.join returns once every item is task-done, while the loop's other coroutines run; timeout and cancellation leave no joiner behind",
        arguments: WaitPath.allCases)
    func asyncJoin(path: WaitPath) async throws {
        try await path.use {
            let queue = try JoinableQueue<Int>()
            try warmForForkedChildren(queue)
            let gate = try SharedCounters()
            let items = 300
            let worker = Process {
                guard eventually(timeout: .seconds(60), { gate[0] == 1 }) else { _exit(3) }
                for _ in 0..<items {
                    _ = try queue.get(timeout: .seconds(60))
                    usleep(100)  // the work
                    try queue.taskDone()
                }
            }
            try worker.start()
            let loop = try EventLoop(name: "park-join")
            try await onLoop(loop) {
                for i in 0..<items { try await queue.put(i) }
                #expect(queue.unfinishedTasks == items)
                let header = queue.channel.header

                // A timeout: nothing is done yet; the joiner leaves the count as it found it.
                #expect(try await queue.join(timeout: .milliseconds(20)) == false)
                #expect(header.pointee.join_sleepers == 0)
                // A cancellation, the same.
                let cancelled = Task(executorPreference: loop) { try await queue.join() }
                #expect(try await eventuallyOnLoop { header.pointee.join_sleepers == 1 })
                cancelled.cancel()
                await #expect(throws: CancellationError.self) { try await cancelled.value }
                #expect(header.pointee.join_sleepers == 0)

                // The join proper: parked while 1 000 coroutines of its loop run, then woken by the
                // worker process's last taskDone.
                let joined = Guarded<Int?>(nil)
                let joiner = Task(executorPreference: loop) { () async throws -> Bool in
                    let done = try await queue.join(timeout: .seconds(60))
                    joined.withLock { $0 = queue.unfinishedTasks }
                    return done
                }
                #expect(try await eventuallyOnLoop { header.pointee.join_sleepers == 1 })
                let counter = Guarded(0)
                let counters: [@Sendable () async throws -> Void] = (0..<1000).map { _ in
                    {
                        counter.withLock { $0 += 1 }
                        await Task.yield()
                    }
                }
                _ = try await gather(counters)
                #expect(counter.withLock { $0 } == 1000)
                #expect(joined.withLock { $0 } == nil)  // still waiting: the worker has not begun
                gate[0] = 1
                let ticks = Guarded(0)
                let ticker = Task(executorPreference: loop) {
                    while joined.withLock({ $0 }) == nil {
                        ticks.withLock { $0 += 1 }
                        try await sleep(for: .milliseconds(1))
                    }
                }
                #expect(try await joiner.value)
                try await ticker.value
                #expect(joined.withLock { $0 } == 0)  // returned only once every task was done
                #expect(ticks.withLock { $0 } > 0)  // the loop ran another coroutine meanwhile
                #expect(header.pointee.join_sleepers == 0)
                #expect(try await queue.join(timeout: .zero))  // nothing unfinished: at once
            }
            #expect(try worker.join(timeout: .seconds(60)))
            #expect(worker.exitCode == 0)
        }
    }

    enum Kill: String, CaseIterable, CustomTestStringConvertible, Sendable {
        case external, midMessage
        var testDescription: String { rawValue }
    }

    @Test(
        "a consumer process SIGKILLed while coroutines wait (parked in its get, or between counting a message and handing it back): nothing lost, nothing twice",
        arguments: Kill.allCases)
    func consumerKilled(kill: Kill) async throws {
        let queue = try Queue<Int>(maxSize: 32)
        try warmForForkedChildren(queue)
        let total = 3000, getters = 8
        let taken = try SharedCounters()
        let loop = try EventLoop(name: "park-kill")
        let consumer = Process {
            // midMessage: dies inside its first get, the message counted but still in the ring.
            if kill == .midMessage { precondition(mp_fault_arm(MP_FAULT_QUEUE_COUNTED) == 1, "a debug build") }
            while true {
                _ = try queue.get(timeout: .seconds(60))
                taken[0] += 1
            }
        }
        let received = try await onLoop(loop) { () async throws -> [Int] in
            let header = queue.channel.header
            let tasks = (0..<getters).map { _ in
                Task(executorPreference: loop) { () async throws -> [Int] in
                    var mine: [Int] = []
                    while true {
                        let x = try await queue.get(timeout: .seconds(60))
                        if x < 0 { return mine }
                        mine.append(x)
                    }
                }
            }
            #expect(try await eventuallyOnLoop { header.pointee.data_sleepers == UInt32(getters) })
            // The process's blocking get spins, then sleeps, holding the consumer lock (queue_get.c):
            // the coroutines, when they look, wait for the lock's word, and must take the lock over
            // from the dead process.
            try consumer.start()
            let pid = consumer.pid!
            #expect(try await eventuallyOnLoop { mp_mutex_owner(&header.pointee.consumer) == pid })
            if kill == .external { try consumer.kill() }
            let producer = Process {
                for i in 0..<total {
                    try queue.put(i, timeout: .seconds(60))
                    if i % 64 == 0 { usleep(300) }
                }
            }
            try producer.start()
            #expect(try await eventuallyOnLoop(timeout: .seconds(60)) { !consumer.isAlive })
            #expect(try await eventuallyOnLoop(timeout: .seconds(60)) { !producer.isAlive })
            try producer.join()
            #expect(producer.exitCode == 0)
            for _ in 0..<getters { try await queue.put(-1, timeout: .seconds(60)) }
            var all: [Int] = []
            for task in tasks { all += try await task.value }
            return all
        }
        try consumer.join()
        #expect(consumer.exitCode == -SIGKILL)
        #expect(taken[0] == 0)  // it died inside its first get, and returned nothing
        #expect(received.count == total)
        #expect(received.sorted() == Array(0..<total))  // nothing lost, nothing twice
        #expect(queue.count == 0)
    }
}
