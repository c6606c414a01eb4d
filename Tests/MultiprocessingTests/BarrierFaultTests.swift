import CMultiprocessing
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The barrier's guard, as a peer process sees it (its futex word leads the barrier: a
/// `_Static_assert` in barrier.c).
private func guardOf(_ barrier: Barrier) -> UnsafeMutablePointer<mp_mutex_t> {
    UnsafeMutableRawPointer(barrier.barrier).assumingMemoryBound(to: mp_mutex_t.self)
}

/// A wait in a forked child, by the C call: its outcome (1 passed, 2 timed out, 3 broken) and the
/// arrival index. No Swift error is thrown in the child: a throw runs swift-testing's hook for
/// thrown errors, whose lock a thread of the parallel suite may have held at the fork, and the
/// child then waits on that lock for ever (seen in `stoppedAndKilledParties`).
private func waitInChild(_ barrier: Barrier, milliseconds: Int64) -> (outcome: Int, index: UInt32) {
    var index: UInt32 = 0
    let status = mp_barrier_wait(barrier.barrier, mp_monotonic_ns() + milliseconds * 1_000_000, &index, nil, nil)
    return (status == MP_OK ? 1 : status == MP_TIMED_OUT ? 2 : 3, index)
}

/// A process that takes `barrier`'s guard and stops holding it (as a debugger or SIGSTOP can stop
/// any party between two of its steps); started and seen stopped.
private func stoppedHolder(of barrier: Barrier) throws -> Multiprocessing.Process {
    let guardWord = guardOf(barrier)
    let holder = Process {
        _ = mp_mutex_lock(guardWord, Int64(MP_FOREVER))
        raise(SIGSTOP)
        mp_mutex_unlock(guardWord)
    }
    try holder.start()
    #expect(eventually(timeout: .seconds(10)) { processState(holder.pid!) == "T" })
    return holder
}

/// Faults of the barrier's protocol: parties stopped or killed while they hold its guard, leave
/// without it, or sleep beside one that does. Each test failed before its fix.
@Suite("Barrier faults", .serialized)
struct BarrierFaultTests {

    @Test("waiting and isBroken are read without waiting for a guard that a stopped peer holds")
    func readsDoNotWaitForTheGuard() throws {
        let barrier = try Barrier(parties: 2)
        let holder = try stoppedHolder(of: barrier)
        let read = Atomic<Int>(-1)
        let reader = Multiprocessing.Thread {
            read.store(barrier.waiting + (barrier.isBroken ? 10 : 0), ordering: .relaxed)
        }
        try reader.start()
        let returned = try reader.join(timeout: .seconds(3))
        kill(holder.pid!, SIGCONT)
        #expect(try holder.join(timeout: .seconds(10)))
        #expect(try reader.join(timeout: .seconds(10)))
        #expect(returned, "reading waiting and isBroken still blocked 3 s after a peer stopped holding the guard")
        #expect(read.load(ordering: .relaxed) == 0)
    }

    @Test("abort() breaks the barrier while a stopped peer holds its guard; the stopped party then finds it broken")
    func abortDoesNotWaitForTheGuard() throws {
        let barrier = try Barrier(parties: 2)
        let holder = try stoppedHolder(of: barrier)
        let aborter = Multiprocessing.Thread { barrier.abort() }
        try aborter.start()
        let returned = try aborter.join(timeout: .seconds(3))
        #expect(returned, "abort() still blocked 3 s after a peer stopped holding the guard")
        if returned { #expect(barrier.isBroken) }  // read while the peer is still stopped
        kill(holder.pid!, SIGCONT)
        #expect(try holder.join(timeout: .seconds(10)))
        #expect(try aborter.join(timeout: .seconds(10)))
        #expect(barrier.isBroken)
        #expect(throws: SyncError.brokenBarrier) { try barrier.wait(timeout: .seconds(10)) }
        barrier.reset()
        #expect(!barrier.isBroken)
    }

    @Test("reset() and abort() take over the guard of a process that died holding it")
    func deadHolderIsTakenOver() throws {
        let barrier = try Barrier(parties: 2)
        let guardWord = guardOf(barrier)
        let holder = Process {
            _ = mp_mutex_lock(guardWord, Int64(MP_FOREVER))
            mp_test_exit_now()  // dies holding it
        }
        try holder.start()
        #expect(try holder.join(timeout: .seconds(10)))
        let resetter = Multiprocessing.Thread {
            barrier.abort()
            barrier.reset()
        }
        try resetter.start()
        #expect(try resetter.join(timeout: .seconds(5)), "reset() blocked on a dead holder's guard")
        #expect(!barrier.isBroken && barrier.waiting == 0)
        let partner = Multiprocessing.Thread { _ = try barrier.wait(timeout: .seconds(10)) }
        try partner.start()
        #expect(try barrier.wait(timeout: .seconds(10)) != nil)
        #expect(try partner.join(timeout: .seconds(10)))
    }

    @Test(
        "a party that leaves without the guard breaks only its own cycle, not one a reset() began meanwhile",
        .enabled(if: mp_fault_arm(0) == 1))
    func leaverBreaksOnlyItsCycle() throws {
        let barrier = try Barrier(parties: 2)
        let outcome = try SharedCounters(count: 1)  // 1 passed, 2 timed out, 3 broken
        let leaver = Process {
            _ = mp_fault_arm(MP_FAULT_BARRIER_LEAVE | MP_FAULT_STOP)
            outcome[0] = waitInChild(barrier, milliseconds: 200).outcome
        }
        try leaver.start()
        #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })  // joined, asleep
        // A live process holds the guard (this one, its pid in the word): the leaver's timeout
        // passes, it cannot retake the guard and leaves without it, and stops just before its CAS.
        barrier.barrier.pointee.guard.word = UInt32(getpid())
        let stopped = eventually(timeout: .seconds(10)) { processState(leaver.pid!) == "T" }
        barrier.barrier.pointee.guard.word = 0
        #expect(stopped)
        barrier.reset()  // a new cycle, filling, as the leaver's was
        kill(leaver.pid!, SIGCONT)
        #expect(try leaver.join(timeout: .seconds(10)))
        #expect(outcome[0] == 3, "its cycle was reset while it waited")
        #expect(!barrier.isBroken, "the leaver broke the cycle that the reset began")
        let partner = Multiprocessing.Thread { _ = try barrier.wait(timeout: .seconds(10)) }
        try partner.start()
        #expect(try barrier.wait(timeout: .seconds(10)) != nil)
        #expect(try partner.join(timeout: .seconds(10)))
    }

    @Test(
        "a party that found the barrier filling is woken when another leaves without the guard before it sleeps",
        .enabled(if: mp_fault_arm(0) == 1))
    func leaverWakesAWaiterAboutToSleep() throws {
        let barrier = try Barrier(parties: 3)
        let outcome = try SharedCounters(count: 2)  // 1 passed, 2 timed out, 3 broken
        let leaver = Process {
            outcome[0] = waitInChild(barrier, milliseconds: 2000).outcome
        }
        try leaver.start()
        #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })
        // It joins, finds the barrier filling and stops there, holding the guard; the leaver's
        // timeout passes meanwhile and it breaks the barrier without the guard.
        let sleeper = Process {
            _ = mp_fault_arm(MP_FAULT_BARRIER_SLEEP | MP_FAULT_STOP)
            outcome[1] = waitInChild(barrier, milliseconds: 30_000).outcome
        }
        try sleeper.start()
        #expect(eventually(timeout: .seconds(10)) { processState(sleeper.pid!) == "T" })
        #expect(try leaver.join(timeout: .seconds(10)))
        #expect(outcome[0] == 2)
        kill(sleeper.pid!, SIGCONT)
        let woken = try sleeper.join(timeout: .seconds(5))
        if !woken {
            try sleeper.kill()
            _ = try sleeper.join(timeout: .seconds(10))
        }
        #expect(woken, "the waiter slept on through the break (its deadline is 30 s away)")
        #expect(outcome[1] == 3)
    }

    @Test(
        "a party killed holding the guard as the last to arrive breaks the barrier (its change is unknown)",
        .enabled(if: mp_fault_arm(0) == 1))
    func lastArrivalKilledHoldingTheGuard() throws {
        let barrier = try Barrier(parties: 2)
        let first = Atomic<Int>(0)  // 1 passed, 2 timed out, 3 broken
        let waiter = Multiprocessing.Thread {
            do {
                first.store(try barrier.wait(timeout: .seconds(5)) == nil ? 2 : 1, ordering: .relaxed)
            } catch {
                first.store(3, ordering: .relaxed)
            }
        }
        try waiter.start()
        #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })
        let last = Process {
            _ = mp_fault_arm(MP_FAULT_BARRIER_JOINED)
            _ = waitInChild(barrier, milliseconds: 5000)
        }
        try last.start()
        #expect(try last.join(timeout: .seconds(10)))
        // Whoever takes the guard over from the dead party breaks the barrier: a later arrival is
        // told so at once, instead of joining as a third party of two and timing out.
        #expect(throws: SyncError.brokenBarrier) { try barrier.wait(timeout: .seconds(1)) }
        #expect(try waiter.join(timeout: .seconds(10)))
        #expect(first.load(ordering: .relaxed) == 3)
        barrier.reset()
        #expect(!barrier.isBroken && barrier.waiting == 0)
    }

    @Test("the cycle wraps (30 bits beside the phase): resets across it still tell passed parties from broken ones")
    func cycleWrap() throws {
        let barrier = try Barrier(parties: 2)
        barrier.barrier.pointee.state = UInt32.max & ~3  // the last cycle before the wrap, filling
        for _ in 0..<3 {
            let outcome = Atomic<Int>(0)  // 1 passed, 2 timed out, 3 broken
            let waitOnce: @Sendable () -> Void = {
                do {
                    outcome.store(try barrier.wait(timeout: .seconds(10)) == nil ? 2 : 1, ordering: .relaxed)
                } catch {
                    outcome.store(3, ordering: .relaxed)
                }
            }
            let resetWhileWaiting = Multiprocessing.Thread(target: waitOnce)
            try resetWhileWaiting.start()
            #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })
            barrier.reset()
            #expect(try resetWhileWaiting.join(timeout: .seconds(10)))
            #expect(outcome.load(ordering: .relaxed) == 3)
            let resetAfterPass = Multiprocessing.Thread(target: waitOnce)
            try resetAfterPass.start()
            #expect(eventually(timeout: .seconds(10)) { barrier.waiting == 1 })
            #expect(try barrier.wait(timeout: .seconds(10)) != nil)
            barrier.reset()
            #expect(try resetAfterPass.join(timeout: .seconds(10)))
            #expect(outcome.load(ordering: .relaxed) == 1)
        }
        #expect(barrier.barrier.pointee.state >> 2 == 5, "six resets from the last cycle before the wrap")
        #expect(!barrier.isBroken && barrier.waiting == 0)
    }

    @Test("stress: parties stopped and killed at random points; every wait returns by its deadline, reset() recovers")
    func stoppedAndKilledParties() throws {
        let parties = 5
        let cycles = 30
        var generator = SystemRandomNumberGenerator()
        for round in 0..<12 {
            let barrier = try Barrier(parties: parties)
            let children = (0..<parties).map { _ in
                Process {
                    for _ in 0..<cycles { _ = waitInChild(barrier, milliseconds: 200) }
                }
            }
            for c in children { try c.start() }
            let victim = children[Int.random(in: 0..<parties, using: &generator)]
            usleep(UInt32.random(in: 0..<20_000, using: &generator))
            switch round % 3 {
            case 0: try victim.kill()
            case 1:
                kill(victim.pid!, SIGSTOP)
                for _ in 0..<20 {  // reads never wait for a guard that a stopped party may hold
                    #expect((0...parties).contains(barrier.waiting))
                    _ = barrier.isBroken
                    usleep(10_000)
                }
                kill(victim.pid!, SIGCONT)
            default:
                kill(victim.pid!, SIGSTOP)
                usleep(UInt32.random(in: 0..<50_000, using: &generator))
                barrier.abort()  // never waits, even for a guard that the stopped party holds
                #expect(barrier.isBroken)
                kill(victim.pid!, SIGCONT)
            }
            // Each wait returns by its deadline (plus an owner check), so every survivor ends.
            for c in children { #expect(try c.join(timeout: .seconds(60))) }
            barrier.reset()
            let final = try SharedCounters(count: parties + 1)
            let again = (0..<parties).map { c in
                Process {
                    for _ in 0..<50 {
                        let (outcome, index) = waitInChild(barrier, milliseconds: 20_000)
                        if outcome != 1 { return }  // its exit code is 0, its count short
                        final[c] += 1
                        if index == 0 { final[parties] += 1 }
                    }
                }
            }
            for c in again { try c.start() }
            for c in again {
                #expect(try c.join(timeout: .seconds(60)))
                #expect(c.exitCode == 0)
            }
            #expect((0..<parties).map { final[$0] } == Array(repeating: 50, count: parties))
            #expect(final[parties] == 50, "one index 0 per pass")
            #expect(!barrier.isBroken && barrier.waiting == 0)
        }
    }
}
