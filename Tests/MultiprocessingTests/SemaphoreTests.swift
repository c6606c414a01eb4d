import Multiprocessing
import Synchronization
import Testing

@Suite("Semaphore and BoundedSemaphore")
struct SemaphoreTests {
    private enum Failure: Error, Equatable { case inBody }

    @Test("withPermit throws exactly the body's error type, and gives the permit back on the way out")
    func withPermitTyped() throws {
        let s = try Semaphore(value: 1)
        do {
            try s.withPermit { () throws(Failure) in
                #expect(s.value == 0)
                throw .inBody
            }
            Issue.record("no error")
        } catch {
            let typed: Failure = error  // checked by the compiler
            #expect(typed == .inBody)
        }
        #expect(s.value == 1)
        #expect(s.withPermit { s.value } == 0)  // a body that throws nothing needs no try
        #expect(s.value == 1)
    }

    @Test("counts permits; tryAcquire and timeouts")
    func counting() throws {
        let s = try Semaphore(value: 2)
        #expect(s.value == 2)
        #expect(s.tryAcquire())
        #expect(try s.acquire(timeout: .milliseconds(10)))
        #expect(!s.tryAcquire())
        #expect(try !s.acquire(timeout: .milliseconds(20)))
        try s.release(2)
        #expect(s.value == 2)
    }

    @Test("bad input: negative value, too large, releasing a BoundedSemaphore past its value")
    func badInput() throws {
        #expect(throws: SyncError.invalidValue(-1)) { try Semaphore(value: -1) }
        #expect(throws: SyncError.invalidValue(Semaphore.maximumValue + 1)) {
            try Semaphore(value: Semaphore.maximumValue + 1)
        }
        #expect(throws: SyncError.invalidValue(-2)) { try BoundedSemaphore(value: -2) }
        let b = try BoundedSemaphore(value: 2)
        #expect(throws: SyncError.overflow) { try b.release() }
        #expect(b.value == 2)
        b.acquire()
        #expect(throws: SyncError.overflow) { try b.release(2) }
        #expect(b.value == 1)
        try b.release()
        #expect(b.value == 2)
        let zero = try BoundedSemaphore(value: 0)
        #expect(throws: SyncError.overflow) { try zero.release() }
        let s = try Semaphore(value: 0)
        #expect(throws: SyncError.invalidValue(0)) { try s.release(0) }
        #expect(throws: SyncError.negativeTimeout(.seconds(-3))) { try s.acquire(timeout: .seconds(-3)) }
        let full = try Semaphore(value: Semaphore.maximumValue)
        #expect(throws: SyncError.overflow) { try full.release() }
    }

    @Test("a release in another process wakes a waiter")
    func crossProcess() throws {
        let s = try Semaphore(value: 0)
        let done = try Semaphore(value: 0)
        let child = Process {
            for _ in 0..<1000 {
                s.acquire()
                try done.release()
            }
        }
        try child.start()
        for _ in 0..<1000 {
            try s.release()
            done.acquire()
        }
        try child.join()
        #expect(child.exitCode == 0)
        #expect(s.value == 0)
    }

    @Test("as a lock between threads: no lost permits")
    func threads() throws {
        let s = try Semaphore(value: 1)
        let counters = try SharedCounters()
        let threads = (0..<4).map { _ in Thread { for _ in 0..<20_000 { s.withPermit { counters[0] += 1 } } } }
        for t in threads { try t.start() }
        for t in threads { try t.join() }
        #expect(counters[0] == 80_000)
        #expect(s.value == 1)
    }
}

@Suite("Event")
struct EventTests {
    @Test("set, clear, isSet, timed wait")
    func basics() throws {
        let e = Event()
        #expect(!e.isSet)
        #expect(try !e.wait(timeout: .milliseconds(20)))
        e.set()
        #expect(e.isSet)
        #expect(try e.wait(timeout: .zero))
        e.wait()
        e.clear()
        #expect(!e.isSet)
        #expect(throws: SyncError.negativeTimeout(.seconds(-1))) { try e.wait(timeout: .seconds(-1)) }
    }

    @Test("set in another process wakes every waiting thread")
    func crossProcessWakesAll() throws {
        let e = Event()
        let counters = try SharedCounters()
        let lock = Lock()
        let threads = (0..<4).map { _ in
            Thread {
                e.wait(); try lock.withLock { counters[0] += 1 }
            }
        }
        for t in threads { try t.start() }
        let setter = Process {
            try sleep(for: .milliseconds(30))
            e.set()
        }
        try setter.start()
        for t in threads { try t.join() }
        try setter.join()
        #expect(counters[0] == 4)
    }
}

@Suite("Condition")
struct ConditionTests {
    @Test("producer and consumer processes hand over through a Condition")
    func crossProcess() throws {
        let cond = Condition()
        let counters = try SharedCounters()  // [0]: items available, [1]: consumed
        let consumer = Process {
            for _ in 0..<500 {
                try cond.withLock {
                    try cond.wait(for: { counters[0] > 0 })
                    counters[0] -= 1
                    counters[1] += 1
                }
            }
        }
        try consumer.start()
        for _ in 0..<500 {
            try cond.withLock {
                counters[0] += 1
                try cond.notify()
            }
        }
        try consumer.join()
        #expect(consumer.exitCode == 0)
        #expect(counters[1] == 500)
        #expect(counters[0] == 0)
    }

    @Test("notifyAll wakes every thread; notify(n) wakes at most n", arguments: [false, true])
    func notifyAll(plainLock: Bool) throws {
        let cond = plainLock ? Condition(lock: Lock()) : Condition()
        let counters = try SharedCounters()
        let threads = (0..<4).map { _ in
            Thread {
                try cond.withLock {
                    counters[0] += 1
                    try cond.wait(for: { counters[1] > 0 })
                    counters[2] += 1
                }
            }
        }
        for t in threads { try t.start() }
        while try cond.withLock({ counters[0] }) < 4 { try sleep(for: .milliseconds(1)) }
        try cond.withLock {
            counters[1] = 1
            try cond.notifyAll()
        }
        for t in threads { try t.join() }
        #expect(counters[2] == 4)
    }

    @Test("wait times out; wait and notify need the lock")
    func timeoutsAndErrors() throws {
        let cond = Condition()
        try cond.acquire()
        let start = ContinuousClock.now
        #expect(try !cond.wait(timeout: .milliseconds(30)))
        #expect(ContinuousClock.now - start >= .milliseconds(25))
        #expect(try !cond.wait(for: { false }, timeout: .milliseconds(10)))
        try cond.release()
        #expect(throws: SyncError.notHeld) { try cond.wait(timeout: .milliseconds(1)) }
        #expect(throws: SyncError.notHeld) { try cond.notify() }
        #expect(throws: SyncError.notHeld) { try cond.notifyAll() }
        let plain = Condition(lock: Lock())
        #expect(throws: SyncError.notHeld) { try plain.wait() }
        try plain.acquire()
        #expect(throws: SyncError.negativeTimeout(.seconds(-1))) { try plain.wait(timeout: .seconds(-1)) }
        try plain.release()
    }

    @Test("a nested RLock is fully released while waiting and restored after")
    func rlockDepth() throws {
        let rlock = RLock()
        let cond = Condition(lock: rlock)
        try rlock.acquire()
        try rlock.acquire()
        let t = Thread {
            try rlock.withLock { try cond.notify() }
        }
        try t.start()
        #expect(try cond.wait(timeout: .seconds(10)))
        try t.join()
        try rlock.release()
        #expect(rlock.isOwnedByCurrentThread)
        try rlock.release()
        #expect(!rlock.isOwnedByCurrentThread)
    }
}

@Suite("Barrier")
struct BarrierTests {
    @Test("parties across processes pass together with distinct indices")
    func crossProcess() throws {
        let barrier = try Barrier(parties: 3)
        let counters = try SharedCounters(count: 16)
        let children = (0..<3).map { c in
            Process {
                for round in 0..<50 {
                    let index = try barrier.wait()
                    counters[c * 4 + 0] += index
                    _ = round
                }
            }
        }
        for c in children { try c.start() }
        for c in children { try c.join(); #expect(c.exitCode == 0) }
        // Each round hands out 0, 1 and 2 once: the indices of all rounds add up to 50 × 3.
        #expect(counters[0] + counters[4] + counters[8] == 150)
    }

    @Test("bad input, abort, reset, and a timeout that breaks it")
    func states() throws {
        #expect(throws: SyncError.invalidParties(0)) { try Barrier(parties: 0) }
        #expect(throws: SyncError.invalidParties(-4)) { try Barrier(parties: -4) }
        let single = try Barrier(parties: 1)
        #expect(try single.wait() == 0)

        let b = try Barrier(parties: 2)
        #expect(b.parties == 2)
        #expect(try b.wait(timeout: .milliseconds(20)) == nil)  // timing out breaks it, as in Python
        #expect(b.isBroken)
        #expect(throws: SyncError.brokenBarrier) { try b.wait() }
        b.reset()
        #expect(!b.isBroken)
        let t = Thread { _ = try b.wait() }
        try t.start()
        #expect(try b.wait(timeout: .seconds(10)) != nil)
        try t.join()

        let waiter = Thread { #expect(throws: SyncError.brokenBarrier) { try b.wait() } }
        try waiter.start()
        while b.waiting < 1 { try sleep(for: .milliseconds(1)) }
        b.abort()
        try waiter.join()
        #expect(b.isBroken)
        b.reset()

        let resetWaiter = Thread { #expect(throws: SyncError.brokenBarrier) { try b.wait() } }
        try resetWaiter.start()
        while b.waiting < 1 { try sleep(for: .milliseconds(1)) }
        b.reset()
        try resetWaiter.join()
        #expect(!b.isBroken)
        #expect(throws: SyncError.negativeTimeout(.seconds(-1))) { try b.wait(timeout: .seconds(-1)) }
    }

    @Test("the action runs once per pass, in the last to arrive, before anyone passes (threads)")
    func actionBetweenThreads() throws {
        let rounds = 200
        let parties = 3
        let state = Guarded<(actions: Int, lastIndexRan: Int, early: Int)>((0, 0, 0))
        let barrier = try Barrier(
            parties: parties,
            action: {
                state.withLock { $0.actions += 1 }
            }, timeout: .seconds(30))
        let threads = (0..<parties).map { _ in
            Thread {
                for round in 1...rounds {
                    let index = try barrier.wait()
                    // Everyone passes only after this round's action has run.
                    state.withLock {
                        // This round's first action has run, its second cannot have (we have not arrived).
                        if $0.actions != 2 * round - 1 { $0.early += 1 }
                        if index == parties - 1 { $0.lastIndexRan += 1 }
                    }
                    // Nobody may run ahead into the next round's action before all have looked.
                    try barrier.wait()
                }
            }
        }
        for t in threads { try t.start() }
        for t in threads { #expect(try t.join(timeout: .seconds(60))) }
        let final = state.withLock { $0 }
        #expect(final.actions == 2 * rounds)  // two passes a round
        #expect(final.early == 0)
        #expect(final.lastIndexRan == rounds)  // each pass has exactly one last arrival
    }

    @Test("the action runs once per pass across forked processes, in the releasing party's process")
    func actionAcrossProcesses() throws {
        let rounds = 40
        let counters = try SharedCounters(count: 8)  // [0]: actions run, [1]: passes seen early
        let guardLock = Lock()
        let barrier = try Barrier(
            parties: 3, action: { try guardLock.withLock { counters[0] += 1 } }, timeout: .seconds(30))
        let children = (0..<3).map { _ in
            Process {
                for round in 1...rounds {
                    try barrier.wait()
                    try guardLock.withLock { if counters[0] != 2 * round - 1 { counters[1] += 1 } }
                    _ = try barrier.wait(timeout: .seconds(30))  // the round's second pass (its action runs too)
                }
            }
        }
        for c in children { try c.start() }
        for c in children {
            #expect(try c.join(timeout: .seconds(60)))
            #expect(c.exitCode == 0)
        }
        for c in children where c.exitCode == nil { try c.kill() }
        // The second wait of each round runs the action too: two per round, never fewer or more.
        #expect(counters[0] == 2 * rounds)
        #expect(counters[1] == 0)
    }

    @Test("an action that throws breaks the barrier: its runner is told why, the others that it broke")
    func actionThrows() throws {
        struct Refused: Error {}
        let barrier = try Barrier(parties: 2, action: { throw Refused() })
        let other = Thread {
            #expect(throws: SyncError.brokenBarrier) { try barrier.wait(timeout: .seconds(30)) }
        }
        try other.start()
        #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })
        #expect(throws: SyncError.barrierActionFailed(String(describing: Refused()))) { try barrier.wait() }
        #expect(try other.join(timeout: .seconds(10)))
        #expect(barrier.isBroken)
        barrier.reset()
        #expect(!barrier.isBroken)
    }

    @Test("the action may look at its barrier and abort it; another handle carries its own action")
    func actionSeesItsBarrier() throws {
        let seen = Guarded<[Int]>([])
        let plain = try Barrier(parties: 2)
        let withAction = Barrier(sharing: plain, action: { seen.withLock { $0.append(plain.waiting) } })
        let other = Thread { () throws in _ = try plain.wait(timeout: .seconds(30)) }  // no action in this handle
        try other.start()
        #expect(eventually(timeout: .seconds(10)) { plain.waiting == 1 })
        #expect(try withAction.wait() == 1)  // the last to arrive, with the action
        #expect(try other.join(timeout: .seconds(10)))
        #expect(seen.withLock { $0 } == [2])  // both counted while it ran, as Python's n_waiting

        let aborting = Barrier(sharing: plain, action: { plain.abort() })
        let loser = Thread { #expect(throws: SyncError.brokenBarrier) { try plain.wait(timeout: .seconds(30)) } }
        try loser.start()
        #expect(eventually(timeout: .seconds(10)) { plain.waiting == 1 })
        #expect(throws: SyncError.brokenBarrier) { try aborting.wait() }
        #expect(try loser.join(timeout: .seconds(10)))
        #expect(plain.isBroken)
    }

    @Test("a default timeout breaks the barrier in wait(), travels with the handle, and a negative one is refused")
    func defaultTimeout() throws {
        #expect(throws: SyncError.negativeTimeout(.milliseconds(-1))) {
            try Barrier(parties: 2, timeout: .milliseconds(-1))
        }
        let b = try Barrier(parties: 2, timeout: .milliseconds(30))
        #expect(b.timeout == .milliseconds(30))
        #expect(try Barrier(parties: 2).timeout == nil)
        #expect(throws: SyncError.brokenBarrier) { try b.wait() }  // nobody else came in 30 ms
        #expect(b.isBroken)
        b.reset()
        // An explicit timeout replaces the default.
        let t = Thread { () throws in #expect(try b.wait(timeout: .seconds(30)) != nil) }
        try t.start()
        #expect(eventually(timeout: .seconds(10)) { b.waiting == 1 })
        try sleep(for: .milliseconds(60))  // past the default: the waiter's own timeout holds
        #expect(try b.wait() == 1)
        #expect(try t.join(timeout: .seconds(10)))
        let decoded = try FoundationJSON.decode(Barrier.self, try FoundationJSON.encode(b))
        #expect(decoded.timeout == .milliseconds(30))
        #expect(decoded.parties == 2)
    }
}
