import Multiprocessing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Lock and RLock")
struct LockTests {
    @Test("4 forked processes × 100 000 increments under one Lock give exactly 400 000")
    func forkedIncrements() throws {
        let lock = Lock()
        let counters = try SharedCounters()
        let children = (0..<4).map { _ in
            Process {
                for _ in 0..<100_000 { try lock.withLock { counters[0] += 1 } }
            }
        }
        for child in children { try child.start() }
        for child in children {
            try child.join()
            #expect(child.exitCode == 0)
        }
        #expect(counters[0] == 400_000)
    }

    @Test("threads × increments under one Lock")
    func threadIncrements() throws {
        let lock = Lock()
        let counters = try SharedCounters()
        let threads = (0..<4).map { _ in
            Thread { for _ in 0..<50_000 { try lock.withLock { counters[0] += 1 } } }
        }
        for t in threads { try t.start() }
        for t in threads { try t.join() }
        #expect(counters[0] == 200_000)
    }

    @Test("tryAcquire, timeouts and locked state")
    func tryAndTimeout() throws {
        let lock = Lock()
        #expect(try lock.tryAcquire())
        #expect(lock.isLocked)
        #expect(try !lock.tryAcquire())
        let start = ContinuousClock.now
        #expect(try !lock.acquire(timeout: .milliseconds(50)))
        #expect(ContinuousClock.now - start >= .milliseconds(45))
        try lock.release()
        #expect(!lock.isLocked)
        #expect(try lock.acquire(timeout: .zero))
        try lock.release()
    }

    @Test("tryAcquire and timeouts shorter than the owner check take a lock over from a SIGKILLed holder")
    func tryAfterKilledHolder() throws {
        let lock = Lock()
        let rlock = RLock()
        let timed = Lock()
        let holder = Process {
            try lock.acquire()
            try rlock.acquire()
            try timed.acquire()
            while true { try sleep(for: .seconds(1)) }
        }
        try holder.start()
        #expect(eventually { timed.isLocked })
        try holder.kill()
        try holder.join()
        let pid = try #require(holder.pid)
        #expect(throws: SyncError.ownerDied(owner: pid)) { _ = try lock.tryAcquire() }
        #expect(lock.isLocked)  // held by us now
        try lock.release()
        #expect(throws: SyncError.self) { _ = try rlock.tryAcquire() }
        #expect(rlock.isOwnedByCurrentThread)
        try rlock.release()
        #expect(throws: SyncError.ownerDied(owner: pid)) { _ = try timed.acquire(timeout: .milliseconds(2)) }
        try timed.release()
        #expect(try lock.tryAcquire())  // and from now on, as usual
        try lock.release()
    }

    @Test("a Lock held by one thread may be released by another, as in Python")
    func releaseFromOtherThread() throws {
        let lock = Lock()
        try lock.acquire()
        let t = Thread { try lock.release() }
        try t.start()
        try t.join()
        #expect(!lock.isLocked)
    }

    @Test("bad input: releasing a free Lock, a negative timeout")
    func badInput() throws {
        let lock = Lock()
        #expect(throws: SyncError.notHeld) { try lock.release() }
        #expect(throws: SyncError.negativeTimeout(.seconds(-1))) { try lock.acquire(timeout: .seconds(-1)) }
        let rlock = RLock()
        #expect(throws: SyncError.notHeld) { try rlock.release() }
        #expect(throws: SyncError.negativeTimeout(.milliseconds(-5))) { try rlock.acquire(timeout: .milliseconds(-5)) }
    }

    @Test("RLock re-enters, counts levels, and only its owner releases it")
    func rlockRecursion() throws {
        let rlock = RLock()
        #expect(rlock.recursionCount == 0)
        try rlock.acquire()
        try rlock.acquire()
        #expect(try rlock.tryAcquire())
        #expect(rlock.isOwnedByCurrentThread)
        #expect(rlock.recursionCount == 3)
        let other = Thread { () throws in
            #expect(rlock.recursionCount == 0)  // not the owner: nothing held here
            #expect(throws: SyncError.notHeld) { try rlock.release() }
            #expect(try !rlock.acquire(timeout: .milliseconds(20)))
        }
        try other.start()
        #expect(try other.join(timeout: .seconds(10)))
        try rlock.release()
        try rlock.release()
        #expect(rlock.isOwnedByCurrentThread)
        #expect(rlock.recursionCount == 1)
        try rlock.release()
        #expect(!rlock.isOwnedByCurrentThread)
        #expect(rlock.recursionCount == 0)
        #expect(throws: SyncError.notHeld) { try rlock.release() }
        try rlock.withLock { try rlock.withLock { #expect(rlock.recursionCount == 2) } }
        #expect(rlock.recursionCount == 0)
    }

    @Test("RLock between processes")
    func rlockProcesses() throws {
        let rlock = RLock()
        let counters = try SharedCounters()
        let children = (0..<2).map { _ in
            Process {
                for _ in 0..<20_000 {
                    try rlock.withLock { try rlock.withLock { counters[0] += 1 } }
                }
            }
        }
        for c in children { try c.start() }
        for c in children { try c.join(); #expect(c.exitCode == 0) }
        #expect(counters[0] == 40_000)
    }

    @Test("owner death: a SIGKILLed holder's Lock goes to the next acquirer, who is told", arguments: [false, true])
    func ownerDeath(recursive: Bool) throws {
        let lock = Lock()
        let rlock = RLock()
        let ready = Event()
        let holder = Process {
            if recursive { try rlock.acquire(); try rlock.acquire() } else { try lock.acquire() }
            ready.set()
            while true { try sleep(for: .seconds(1)) }
        }
        try holder.start()
        ready.wait()
        let holderPID = holder.pid!
        try holder.kill()
        let killedAt = ContinuousClock.now
        var died: SyncError?
        do {
            if recursive { try rlock.acquire() } else { try lock.acquire() }
        } catch {
            died = error
        }
        let waited = ContinuousClock.now - killedAt
        // A Lock names the dead process; an RLock its thread: the holder's only one, tid == pid.
        #expect(died == .ownerDied(owner: holderPID))
        #expect(waited < .seconds(2))  // generous: the mechanism checks every 20 ms
        if recursive {
            #expect(rlock.isOwnedByCurrentThread)
            try rlock.release()
            #expect(throws: SyncError.notHeld) { try rlock.release() }
        } else {
            #expect(lock.isLocked)
            try lock.release()
            #expect(try lock.tryAcquire())
            try lock.release()
        }
        try holder.join()
        #expect(holder.exitCode == -SIGKILL)
    }

    @Test(
        "withLock(recoveringFrom:) hands the lock and the dead owner to recover, then runs the body",
        arguments: [false, true])
    func withLockRecovers(recursive: Bool) throws {
        let lock = Lock()
        let rlock = RLock()
        let shared = try SharedCounters(count: 2)  // [0]: a value the holder leaves half-updated
        let ready = Event()
        let holder = Process {
            let hold = {
                shared[0] = -1; ready.set(); while true { try sleep(for: .seconds(1)) }
            }
            if recursive { try rlock.withLock(hold) } else { try lock.withLock(hold) }
        }
        try holder.start()
        #expect(try ready.wait(timeout: .seconds(20)))
        let holderPID = holder.pid!
        try holder.kill()
        #expect(try holder.join(timeout: .seconds(20)))
        var told: Int32? = nil
        let recover: (Int32) throws -> Void = { owner in
            told = owner
            #expect(recursive ? rlock.isOwnedByCurrentThread : lock.isLocked)  // under the lock
            shared[0] = 0  // repaired
        }
        let seen =
            try recursive
            ? rlock.withLock(recoveringFrom: recover) { shared[0] }
            : lock.withLock(recoveringFrom: recover) { shared[0] }
        #expect(told == holderPID)
        #expect(seen == 0)  // the body ran after the repair
        #expect(recursive ? !rlock.isOwnedByCurrentThread : !lock.isLocked)  // released after
        // Once recovered, later calls neither recover nor throw.
        told = nil
        #expect(
            try
                (recursive
                ? rlock.withLock(recoveringFrom: recover) { 1 } : lock.withLock(recoveringFrom: recover) { 1 }) == 1)
        #expect(told == nil)
    }

    @Test("withLock without recover: a dead owner is thrown, the body does not run, the lock is free after")
    func withLockThrowsOwnerDied() throws {
        let lock = Lock()
        let ready = Event()
        let holder = Process {
            try lock.acquire()
            ready.set()
            while true { try sleep(for: .seconds(1)) }
        }
        try holder.start()
        #expect(try ready.wait(timeout: .seconds(20)))
        let holderPID = holder.pid!
        try holder.kill()
        #expect(try holder.join(timeout: .seconds(20)))
        var ran = false
        #expect(throws: SyncError.ownerDied(owner: holderPID)) { try lock.withLock { ran = true } }
        #expect(!ran)
        #expect(!lock.isLocked)
        #expect(try lock.withLock { 7 } == 7)
    }

    private enum Repair: Error, Equatable { case failed, bodyFailed }

    @Test("withLock's error types: SyncError for a body that throws nothing, the body's own with a recovery")
    func withLockTypedErrors() throws {
        let lock = Lock()
        let rlock = RLock()
        let condition = Condition(lock: rlock)
        var count = 0
        // Checked by the compiler: each `catch` binds the exact error type.
        do { try lock.withLock { count += 1 } } catch { let _: SyncError = error }
        do { try rlock.withLock { count += 1 } } catch { let _: SyncError = error }
        do { try condition.withLock { count += 1 } } catch { let _: SyncError = error }
        #expect(count == 3)
        // With a recovery, only the body's (or the recovery's) error comes out, and the lock is
        // released after it.
        let failing: () throws(Repair) -> Int = { () throws(Repair) -> Int in throw .bodyFailed }
        let noRepair: (Int32) throws(Repair) -> Void = { (_: Int32) throws(Repair) in }
        do {
            _ = try lock.withLock(recoveringFrom: noRepair, failing)
            Issue.record("no error")
        } catch {
            let typed: Repair = error
            #expect(typed == .bodyFailed)
        }
        #expect(!lock.isLocked)
        do {
            _ = try rlock.withLock(recoveringFrom: noRepair, failing)
            Issue.record("no error")
        } catch {
            let typed: Repair = error
            #expect(typed == .bodyFailed)
        }
        #expect(rlock.recursionCount == 0)
        // An unannotated body with a `try` is inferred to throw `any Error`: the untyped form, and
        // its error comes out as itself.
        let repairFails = { () throws(Repair) in throw Repair.failed }
        #expect(throws: Repair.failed) { try lock.withLock { try repairFails() } }
        #expect(!lock.isLocked)
        // A body throwing some other error: it comes out as itself through the untyped form.
        #expect(throws: Repair.failed) { try lock.withLock { () throws -> Void in throw Repair.failed } }
        #expect(!lock.isLocked)
    }

    @Test("withLock(recoveringFrom:) with a typed recovery that fails: its error, the body not run, the lock released")
    func withLockRecoveryFails() throws {
        let lock = Lock()
        let ready = Event()
        let holder = Process {
            try lock.acquire()
            ready.set()
            while true { try sleep(for: .seconds(1)) }
        }
        try holder.start()
        #expect(try ready.wait(timeout: .seconds(20)))
        let holderPID = holder.pid!
        try holder.kill()
        #expect(try holder.join(timeout: .seconds(20)))
        var told: Int32? = nil
        var ran = false
        let recover: (Int32) throws(Repair) -> Void = { (owner: Int32) throws(Repair) in
            told = owner
            throw .failed
        }
        do {
            try lock.withLock(recoveringFrom: recover) { () throws(Repair) in ran = true }
            Issue.record("no error")
        } catch {
            let typed: Repair = error
            #expect(typed == .failed)
        }
        #expect(told == holderPID)
        #expect(!ran)
        #expect(!lock.isLocked)
        // The death was reported once: the next holder is not told again.
        told = nil
        try lock.withLock(recoveringFrom: recover) { () throws(Repair) in ran = true }
        #expect(told == nil && ran)
    }

    @Test("owner death while others sleep on the lock: exactly one is told, all get through")
    func ownerDeathWithSleepers() throws {
        let lock = Lock()
        let ready = Event()
        let counters = try SharedCounters()
        let holder = Process {
            try lock.acquire()
            ready.set()
            while true { try sleep(for: .seconds(1)) }
        }
        try holder.start()
        ready.wait()
        let waiters = (0..<3).map { i in
            Process {
                do {
                    try lock.acquire()
                } catch SyncError.ownerDied {
                    counters[4 + i] = 1
                }
                counters[i] = 1
                try lock.release()
            }
        }
        for w in waiters { try w.start() }
        try sleep(for: .milliseconds(50))
        try holder.kill()
        for w in waiters { try w.join(); #expect(w.exitCode == 0) }
        #expect(counters[0] + counters[1] + counters[2] == 3)
        #expect(counters[4] + counters[5] + counters[6] == 1)
        try holder.join()
    }
}
