import CMultiprocessing
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Pins `pid` (0: the calling thread) to CPU `cpu`.
private func pin(_ pid: Int32, to cpu: Int) {
    typealias SetAffinity = @convention(c) (Int32, Int, UnsafeRawPointer) -> Int32
    let setAffinity = unsafeBitCast(dlsym(nil, "sched_setaffinity")!, to: SetAffinity.self)
    var set = [UInt8](repeating: 0, count: 128)
    set[cpu / 8] = UInt8(1 << (cpu % 8))
    _ = set.withUnsafeBytes { setAffinity(pid, 128, $0.baseAddress!) }
}

/// Makes `pid` SCHED_IDLE: it runs only when nothing else wants its CPU.
private func makeIdle(_ pid: Int32) {
    var param = sched_param(sched_priority: 0)
    _ = sched_setscheduler(pid, 5 /* SCHED_IDLE */, &param)
}

/// A thread pinned to `cpu` that spins until stopped: with a SCHED_IDLE process pinned there too,
/// that process, once woken, does not run until the hog stops.
private final class Hog: @unchecked Sendable {
    let stop = Atomic<Bool>(false)
    let spinning = Atomic<Bool>(false)
    var thread: Multiprocessing.Thread!
    init(cpu: Int) throws {
        thread = Multiprocessing.Thread { [self] in
            pin(0, to: cpu)
            spinning.store(true, ordering: .releasing)
            while !stop.load(ordering: .relaxed) {}
        }
        try thread.start()
        while !spinning.load(ordering: .acquiring) { usleep(100) }
        usleep(20_000)  // the affinity change has moved it
    }
    func end() throws {
        stop.store(true, ordering: .relaxed)
        _ = try thread.join(timeout: .seconds(10))
    }
}

/// Waiters that die, arrive late or are left behind by a reset: each test failed before its fix
/// (a review of the synchronization primitives).
@Suite("Synchronization faults", .serialized)
struct SyncFaultTests {

    // MARK: - Condition: a notify taken by a waiter that arrived after it

    @Test("notify(1) wakes the waiter that was waiting, not one that arrives after the notify")
    func notifyGoesToTheWaiterThatWasWaiting() throws {
        let lock = Lock()
        let cond = Condition(lock: lock)
        var stolen = 0
        let rounds = 200
        for _ in 0..<rounds {
            let result = Atomic<Int>(0)  // 1: A notified, 2: A timed out
            let a = Multiprocessing.Thread {
                try cond.acquire()
                let r = try cond.wait(timeout: .milliseconds(300))
                try cond.release()
                result.store(r ? 1 : 2, ordering: .relaxed)
            }
            try a.start()
            // A waits: it has joined the waiters and released the lock.
            #expect(eventually(timeout: .seconds(5)) { mp_condition_waiting(cond.condition) == 1 && !lock.isLocked })
            try cond.acquire()
            try cond.notify(1)  // A is the only waiter: Python wakes A
            let mine = try cond.wait(timeout: .zero)  // Python: False (nobody notified after it began)
            try cond.release()
            #expect(try a.join(timeout: .seconds(10)))
            if mine || result.load(ordering: .relaxed) != 1 { stolen += 1 }
        }
        #expect(stolen == 0, "\(stolen) of \(rounds) notifies went to the later waiter; A timed out")
    }

    // MARK: - Condition: a token granted to a killed waiter

    @Test("a waiter killed while waiting: a later timed-out wait still returns false")
    func deadWaiterLeavesNoTokenBehind() throws {
        let lock = Lock()
        let cond = Condition(lock: lock)
        // What the child runs, run here first (fork hazard).
        try cond.acquire()
        _ = try cond.wait(timeout: .milliseconds(1))
        try cond.release()
        let child = Process {
            try cond.acquire()
            _ = try cond.wait(timeout: .seconds(30))
            try cond.release()
        }
        try child.start()
        #expect(eventually(timeout: .seconds(10)) { mp_condition_waiting(cond.condition) == 1 && !lock.isLocked })
        try child.kill()
        _ = try child.join(timeout: .seconds(10))
        try cond.acquire()
        try cond.notify(1)  // nobody alive waits: a no-op in Python
        let t0 = ContinuousClock.now
        let notified = try cond.wait(timeout: .milliseconds(200))  // Python: False after 200 ms
        let took = ContinuousClock.now - t0
        try cond.release()
        #expect(notified == false, "wait(timeout:) returned true after \(took) with no notify since it began")
    }

    // MARK: - Semaphore: a woken waiter killed before it takes the permit

    @Test("release(1) woke a waiter that was killed before taking the permit: the other waiter gets it")
    func semaphoreWokenWaiterKilled() throws {
        guard mp_cpu_affinity_count() >= 2 else { return }
        let sem = try Semaphore(value: 0)
        // What the children run, run here first (fork hazard).
        _ = try sem.acquire(timeout: .milliseconds(1))
        let x = Process { sem.acquire() }
        try x.start()
        let xPid = x.pid!
        pin(xPid, to: 0)
        makeIdle(xPid)
        #expect(eventually(timeout: .seconds(10)) { sem.semaphore.pointee.waiters == 1 && processState(xPid) == "S" })
        let y = Process { sem.acquire() }
        try y.start()
        let yPid = y.pid!
        pin(yPid, to: 1)
        #expect(eventually(timeout: .seconds(10)) { sem.semaphore.pointee.waiters == 2 && processState(yPid) == "S" })
        let hog = try Hog(cpu: 0)
        try sem.release()  // FUTEX_WAKE(1): X, the first sleeper, who cannot run on CPU 0
        try x.kill()
        try hog.end()
        _ = try x.join(timeout: .seconds(10))
        let valueAfterKill = sem.value
        let yGotIt = try y.join(timeout: .seconds(2))
        if !yGotIt {
            try y.kill()
            _ = try y.join(timeout: .seconds(10))
        }
        // If X took the permit before it died, the run says nothing (value 0 and Y stays asleep).
        #expect(yGotIt || valueAfterKill == 0, "a free permit (value \(valueAfterKill)) while Y sleeps for ever")
    }

    @Test("notify(1) to a waiter slow to run: a later timed-out wait does not take it")
    func notifyStolenFromASlowWaiter() throws {
        let lock = Lock()
        let cond = Condition(lock: lock)
        let counters = try SharedCounters()  // [0]: A's answer, 1 notified, 2 timed out
        try cond.acquire()
        _ = try cond.wait(timeout: .milliseconds(1))
        try cond.release()
        let a = Process {
            try cond.acquire()
            let r = try cond.wait(timeout: .seconds(2))
            try cond.release()
            counters[0] = r ? 1 : 2
        }
        try a.start()
        let aPid = a.pid!
        #expect(eventually(timeout: .seconds(10)) { mp_condition_waiting(cond.condition) == 1 && !lock.isLocked })
        #expect(eventually(timeout: .seconds(10)) { processState(aPid) == "S" })
        // A is still waiting (a stopped process waits as a descheduled one does); it just cannot run
        // until the SIGCONT, as a waiter on a busy machine may not for a while.
        kill(aPid, SIGSTOP)
        #expect(eventually(timeout: .seconds(10)) { processState(aPid) == "T" })
        try cond.acquire()
        try cond.notify(1)  // A is the only waiter: Python wakes A
        let mine = try cond.wait(timeout: .milliseconds(50))  // Python: False after 50 ms
        try cond.release()
        kill(aPid, SIGCONT)
        #expect(try a.join(timeout: .seconds(10)))
        #expect(mine == false, "the later waiter's timed-out wait took A's notify")
        #expect(counters[0] == 1, "A, notified while it waited, timed out instead (\(counters[0]))")
    }

    @Test("notify(1) woke a waiter that was killed before it re-took the lock: the other waiter is woken")
    func conditionWokenWaiterKilled() throws {
        guard mp_cpu_affinity_count() >= 2 else { return }
        let lock = Lock()
        let cond = Condition(lock: lock)
        let counters = try SharedCounters()  // [0]: Y's answer, 1 notified, 2 timed out
        try cond.acquire()
        _ = try cond.wait(timeout: .milliseconds(1))
        try cond.release()
        let x = Process {
            try cond.acquire()
            _ = try cond.wait(timeout: .seconds(30))
            try cond.release()
        }
        try x.start()
        let xPid = x.pid!
        pin(xPid, to: 0)
        makeIdle(xPid)
        #expect(eventually(timeout: .seconds(10)) { mp_condition_waiting(cond.condition) == 1 && !lock.isLocked })
        #expect(eventually(timeout: .seconds(10)) { processState(xPid) == "S" })
        let y = Process {
            try cond.acquire()
            let r = try cond.wait(timeout: .seconds(3))
            try cond.release()
            counters[0] = r ? 1 : 2
        }
        try y.start()
        let yPid = y.pid!
        pin(yPid, to: 1)
        #expect(eventually(timeout: .seconds(10)) { mp_condition_waiting(cond.condition) == 2 && !lock.isLocked })
        let hog = try Hog(cpu: 0)
        try cond.acquire()
        try cond.notify(1)  // FUTEX_WAKE(1): X, the first sleeper, who cannot run on CPU 0
        try x.kill()
        try cond.release()
        try hog.end()
        _ = try x.join(timeout: .seconds(10))
        let t0 = ContinuousClock.now
        #expect(try y.join(timeout: .seconds(10)))
        let took = ContinuousClock.now - t0
        #expect(took < .seconds(1), "Y, the live waiter, slept \(took) after notify(1) (answer \(counters[0]))")
    }

    // MARK: - JoinableQueue: an extra task_done racing a failed put

    @Test("extra task_done calls racing failed puts never wrap the count, and join still ends")
    func taskDoneTooManyRacingFailedPut() throws {
        let q = try JoinableQueue<Int>(maxSize: 1)
        try q.put(1)
        try q.taskDone()  // unfinished 0, the queue full
        let stop = Atomic<Bool>(false)
        let producer = Multiprocessing.Thread {
            while !stop.load(ordering: .relaxed) { _ = try? q.putNowait(2) }
        }
        try producer.start()
        var wrongly = 0
        let end = ContinuousClock.now + .seconds(2)
        while ContinuousClock.now < end {
            if (try? q.taskDone()) != nil { wrongly += 1 }
        }
        stop.store(true, ordering: .relaxed)
        _ = try producer.join(timeout: .seconds(10))
        // An extra task_done that lands between a failed put's count and its undo takes that count
        // (the caller's bug, caught only outside that window: `wrongly` says how often it was not).
        // What must hold: the count never wraps, so join still ends.
        _ = wrongly
        #expect(q.unfinishedTasks == 0, "unfinished tasks: \(q.unfinishedTasks)")
        #expect(try q.join(timeout: .milliseconds(100)))
    }

    // MARK: - Barrier: reset() right after a pass

    @Test("reset() after the barrier tripped does not break the parties it released (Python's reset)")
    func resetAfterPassKeepsThePassedParties() throws {
        let rounds = 200
        var broken = 0
        for _ in 0..<rounds {
            let barrier = try Barrier(parties: 2)
            let result = Atomic<Int>(0)  // 1 passed, 2 broken, 3 timed out
            let a = Multiprocessing.Thread {
                do {
                    let index = try barrier.wait(timeout: .seconds(10))
                    result.store(index == nil ? 3 : 1, ordering: .relaxed)
                } catch {
                    result.store(2, ordering: .relaxed)
                }
            }
            try a.start()
            #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })
            #expect(try barrier.wait(timeout: .seconds(10)) != nil)  // the last party: the pass
            barrier.reset()  // after the pass: nobody is waiting any more
            #expect(try a.join(timeout: .seconds(10)))
            if result.load(ordering: .relaxed) != 1 { broken += 1 }
        }
        #expect(broken == 0, "\(broken) of \(rounds) released parties got brokenBarrier from a later reset()")
    }

    // MARK: - Barrier: the guard is taken without the caller's deadline

    @Test("wait(timeout:) returns by its timeout even when a peer holds (or garbled) the barrier's guard")
    func barrierTimeoutWithGuardHeld() throws {
        let barrier = try Barrier(parties: 2)
        // A live process holds the guard: here this very process (a peer could write any live pid,
        // or be stopped by a debugger or SIGSTOP while it holds the guard).
        barrier.barrier.pointee.guard.word = UInt32(getpid())
        let done = Atomic<Int>(0)  // 1: returned nil (timed out)
        let t = Multiprocessing.Thread {
            let r = try barrier.wait(timeout: .milliseconds(100))
            done.store(r == nil ? 1 : 2, ordering: .relaxed)
        }
        try t.start()
        let returned = try t.join(timeout: .seconds(3))
        // Let the thread go: free the guard (it re-reads the word every 20 ms).
        barrier.barrier.pointee.guard.word = 0
        _ = try t.join(timeout: .seconds(10))
        #expect(returned, "wait(timeout: 100 ms) still blocked after 3 s")
    }

    // MARK: - Barrier: a joined waiter re-takes the guard without its deadline

    @Test("a joined wait(timeout:) returns by its timeout while a stopped peer holds the barrier's guard")
    func barrierJoinedWaiterTimeoutWithGuardHeld() throws {
        let barrier = try Barrier(parties: 2)
        // The guard's futex word leads the barrier (a _Static_assert in barrier.c).
        let guardWord = UnsafeMutableRawPointer(barrier.barrier).assumingMemoryBound(to: mp_mutex_t.self)
        let done = Atomic<Int>(0)  // 1: returned nil (timed out), 2: passed, 3: threw
        let t = Multiprocessing.Thread {
            do {
                done.store(try barrier.wait(timeout: .seconds(1)) == nil ? 1 : 2, ordering: .relaxed)
            } catch {
                done.store(3, ordering: .relaxed)
            }
        }
        try t.start()
        #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })  // joined, asleep
        // A peer takes the guard (as abort(), reset() or its own wait do) and is stopped holding it.
        let peer = Process {
            _ = mp_mutex_lock(guardWord, Int64(MP_FOREVER))
            raise(SIGSTOP)
            mp_mutex_unlock(guardWord)
        }
        try peer.start()
        #expect(eventually(timeout: .seconds(10)) { processState(peer.pid!) == "T" })
        let returned = try t.join(timeout: .seconds(4))
        kill(peer.pid!, SIGCONT)
        #expect(try peer.join(timeout: .seconds(10)))
        _ = try t.join(timeout: .seconds(10))
        #expect(returned, "wait(timeout: 1 s) still blocked 4 s after its peer stopped holding the guard")
        #expect(done.load(ordering: .relaxed) == 1)
        #expect(barrier.isBroken, "a timed-out wait breaks the barrier (Python's Barrier.wait(timeout))")
        barrier.reset()
        #expect(barrier.waiting == 0 && !barrier.isBroken)
    }
}
