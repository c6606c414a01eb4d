import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Runs the suite's scenarios both ways: on IORING_OP_FUTEX_WAIT, and on the helper-thread
/// fallback that kernels before 6.7 get.
enum WaitPath: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case ring, fallback
    var testDescription: String { rawValue }

    func use<T>(_ body: () throws -> T) rethrows -> T {
        try EventLoop.$futexFallback.withValue(self == .fallback) { try body() }
    }

    func use<T>(_ body: () async throws -> T) async rethrows -> T {
        try await EventLoop.$futexFallback.withValue(self == .fallback) { try await body() }
    }
}

@Suite("EventLoop: awaiting Lock, Semaphore, Event, Condition and Queue across processes")
struct EventLoopPrimitiveTests {
    @Test("1 000 coroutines on one loop thread wait on one Event; a set() in another process wakes all")
    func thousandEventWaiters() async throws {
        let event = Event()
        let loop = try EventLoop(name: "event-loop")
        let child = Process {
            // Set only once every coroutine has registered as a waiter.
            while event.event.pointee.waiters < 1000 { try sleep(for: .milliseconds(1)) }
            event.set()
        }
        try child.start()
        let woken = try await onLoop(loop) { () async throws -> Int in
            let bodies: [@Sendable () async throws -> Bool] = (0..<1000).map { _ in
                {
                    try await event.wait()
                    return EventLoop.current === loop
                }
            }
            return try await gather(bodies).filter { $0 }.count
        }
        #expect(woken == 1000)
        #expect(try child.join(timeout: .seconds(30)))
        #expect(child.exitCode == 0)
        #expect(event.event.pointee.waiters == 0)
    }

    @Test("a coroutine awaits a Queue fed by a forked producer: every item, in order", arguments: WaitPath.allCases)
    func queueFromAnotherProcess(path: WaitPath) async throws {
        try await path.use {
            let queue = try Queue<Int>(maxSize: 8)
            try warmForForkedChildren(queue)
            let producer = Process {
                for i in 1...2000 { try queue.put(i) }
                try queue.put(-1)
            }
            try producer.start()
            let received = try await onLoop { () async throws -> [Int] in
                var items: [Int] = []
                while true {
                    let x = try await queue.get()
                    if x < 0 { return items }
                    items.append(x)
                }
            }
            #expect(received == Array(1...2000))
            #expect(try producer.join(timeout: .seconds(30)))
        }
    }

    @Test("coroutines put into a bounded Queue that a forked consumer drains", arguments: WaitPath.allCases)
    func queueToAnotherProcess(path: WaitPath) async throws {
        try await path.use {
            let queue = try Queue<Int>(maxSize: 4)
            let results = try Queue<Int>()
            try warmForForkedChildren(queue)
            let consumer = Process {
                var sum = 0
                for _ in 0..<1000 { sum += try queue.get(timeout: .seconds(30)) }
                try results.put(sum)
            }
            try consumer.start()
            try await onLoop {
                let producers: [@Sendable () async throws -> Void] = (0..<10).map { p in
                    { for i in 0..<100 { try await queue.put(p * 100 + i) } }
                }
                _ = try await gather(producers)
            }
            #expect(try await results.get(timeout: .seconds(30)) == (0..<1000).reduce(0, +))
            #expect(try consumer.join(timeout: .seconds(30)))
        }
    }

    @Test("async Queue edge cases: timeouts, shutdown, large messages, JoinableQueue counts")
    func queueEdges() async throws {
        try await onLoop {
            let queue = try Queue<[UInt8]>(capacity: 4096)
            await #expect(throws: QueueError.empty) { try await queue.get(timeout: .milliseconds(10)) }
            await #expect(throws: QueueError.negativeTimeout(.seconds(-1))) {
                try await queue.get(timeout: .seconds(-1))
            }
            let big = (0..<20_000).map { UInt8(truncatingIfNeeded: $0) }  // larger than the ring: in pieces
            async let got = queue.get()
            try await queue.put(big)
            #expect(try await got == big)

            let waiter = Task(executorPreference: EventLoop.current!) { try await queue.get() }
            try await sleep(for: .milliseconds(10))
            queue.shutdown()
            await #expect(throws: QueueError.shutDown) { try await waiter.value }

            let joinable = try JoinableQueue<Int>()
            try await joinable.put(1)
            #expect(joinable.unfinishedTasks == 1)
            #expect(try await joinable.get() == 1)
            try joinable.taskDone()
            #expect(joinable.unfinishedTasks == 0)

            let full = try Queue<Int>(maxSize: 1)
            try await full.put(1)
            await #expect(throws: QueueError.full) { try await full.put(2, timeout: .milliseconds(10)) }
        }
    }

    @Test(
        "Lock: mutual exclusion between coroutines and a forked holder; timeouts; cancellation",
        arguments: WaitPath.allCases)
    func lock(path: WaitPath) async throws {
        try await path.use {
            let lock = Lock()
            let counters = try SharedCounters()
            // The holder keeps the lock until told to let go (a sleep would race a slow machine).
            let holder = Process {
                try lock.acquire()
                counters[0] = 1
                _ = eventually { counters[1] == 1 }
                try lock.release()
            }
            try holder.start()
            #expect(eventually { counters[0] == 1 })
            let loop = try EventLoop()
            try await onLoop(loop) {
                #expect(try await lock.acquire(timeout: .milliseconds(1)) == false)
                counters[1] = 1
                try await lock.acquire()  // woken by the other process's release
                try lock.release()
                let inside = Locked((now: 0, most: 0, total: 0))
                let workers: [@Sendable () async throws -> Void] = (0..<50).map { _ in
                    {
                        try await lock.acquire()
                        inside.withLock {
                            $0.now += 1; $0.most = max($0.most, $0.now); $0.total += 1
                        }
                        try await sleep(for: .microseconds(200))
                        inside.withLock { $0.now -= 1 }
                        try lock.release()
                    }
                }
                _ = try await gather(workers)
                let seen = inside.withLock { $0 }
                #expect(seen.most == 1 && seen.total == 50)

                try await lock.acquire()
                let blocked = Task(executorPreference: loop) { try await lock.acquire() }
                try await sleep(for: .milliseconds(10))
                blocked.cancel()
                await #expect(throws: CancellationError.self) { try await blocked.value }
                try lock.release()
                #expect(try await lock.acquire(timeout: .seconds(5)))
                try lock.release()
            }
            #expect(try holder.join(timeout: .seconds(30)))
        }
    }

    @Test("a Lock whose holder process died is taken over with ownerDied")
    func lockOwnerDied() async throws {
        let lock = Lock()
        let holder = Process {
            try lock.acquire()
            _exit(0)  // dies holding it
        }
        try holder.start()
        #expect(try holder.join(timeout: .seconds(30)))
        try await onLoop {
            await #expect(throws: SyncError.ownerDied(owner: holder.pid!)) { try await lock.acquire() }
            try lock.release()
        }
    }

    @Test(
        "Semaphore: at most `value` coroutines inside; a release from another process wakes",
        arguments: WaitPath.allCases)
    func semaphore(path: WaitPath) async throws {
        try await path.use {
            let semaphore = try Semaphore(value: 3)
            try await onLoop {
                let inside = Locked((now: 0, most: 0))
                let workers: [@Sendable () async throws -> Void] = (0..<30).map { _ in
                    {
                        try await semaphore.acquire()
                        inside.withLock {
                            $0.now += 1; $0.most = max($0.most, $0.now)
                        }
                        try await sleep(for: .milliseconds(1))
                        inside.withLock { $0.now -= 1 }
                        try semaphore.release()
                    }
                }
                _ = try await gather(workers)
                #expect(inside.withLock { $0.most } == 3)
                #expect(semaphore.value == 3)
                for _ in 0..<3 { try await semaphore.acquire() }
                #expect(try await semaphore.acquire(timeout: .milliseconds(5)) == false)
                let releaser = Process {
                    try sleep(for: .milliseconds(20))
                    try semaphore.release()
                }
                try releaser.start()
                try await semaphore.acquire()
                #expect(semaphore.value == 0)
                #expect(try releaser.join(timeout: .seconds(30)))
                try semaphore.release(3)
            }
        }
    }

    @Test(
        "Condition over a Lock: a coroutine waits for a forked notifier; timeouts; RLock is refused",
        arguments: WaitPath.allCases)
    func condition(path: WaitPath) async throws {
        try await path.use {
            let condition = Condition(lock: Lock())
            let counters = try SharedCounters()
            let notifier = Process {
                try sleep(for: .milliseconds(30))
                try condition.withLock {
                    counters[0] = 42
                    try condition.notifyAll()
                }
            }
            try notifier.start()
            try await onLoop {
                try await condition.acquire()
                let ready = try await condition.wait(for: { counters[0] == 42 }, timeout: .seconds(30))
                #expect(ready)
                #expect(try await condition.wait(timeout: .milliseconds(10)) == false)  // the lock is held again
                try condition.release()
                await #expect(throws: SyncError.notHeld) { try await condition.wait() }
                await #expect(throws: EventLoopError.self) { try await Condition().wait() }
            }
            #expect(try notifier.join(timeout: .seconds(30)))
        }
    }

    @Test("Event: timeouts and cancellation leave no waiter behind", arguments: WaitPath.allCases)
    func eventTimeoutAndCancel(path: WaitPath) async throws {
        try await path.use {
            let event = Event()
            let loop = try EventLoop()
            try await onLoop(loop) {
                #expect(try await event.wait(timeout: .milliseconds(5)) == false)
                let waiter = Task(executorPreference: loop) { try await event.wait() }
                try await sleep(for: .milliseconds(10))
                waiter.cancel()
                await #expect(throws: CancellationError.self) { try await waiter.value }
                #expect(event.event.pointee.waiters == 0)
                event.set()
                try await event.wait()
                #expect(try await event.wait(timeout: .zero))
            }
        }
    }
}
