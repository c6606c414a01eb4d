import CMultiprocessing
import Dispatch
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The lanes' fairness to the ring, a coroutine's order across threads, and choices a forked child
/// inherits: each test failed before its fix (a review of the lanes).
@Suite("Queue lanes: fairness, order, inherited choices", .serialized)
struct QueueLaneOrderTests {
    // MARK: 1. The ring starves while the lanes take turns by running empty

    /// lane_pick (queue_lanes.c) gives the ring a turn only when a lane's budget of 64 runs out
    /// (`budget == 0`) or when no lane has a message. When the cursor's lane runs empty first, it
    /// moves on to the next lane with a fresh budget and never looks at the ring. Eight lane
    /// producers that each have one message waiting when the cursor reaches them (a producer that
    /// puts a little slower than the consumer takes) keep a ninth producer's ring message waiting
    /// for ever. QueueInternals.md: "the ring gets a turn in between, so no producer starves another".
    @Test("a ring message is taken within two rounds of the lanes while every lane runs empty before its budget")
    func ringStarvesWhileLanesRunEmpty() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        let asked = (0..<8).map { _ in Word() }  // puts asked of each helper
        let done = (0..<8).map { _ in Word() }  // puts each helper has made
        let stop = Word()
        let helpers = (0..<8).map { p in
            Thread {
                try q.put(rtag(p, 0), timeout: .seconds(5))  // claims a lane; alive, so it stays its own
                done[p].store(1)
                var s = 1
                let end = ContinuousClock.now + .seconds(60)
                while stop.load() == 0, ContinuousClock.now < end {
                    if asked[p].load() >= s {
                        try q.put(rtag(p, s), timeout: .seconds(5))
                        s += 1
                        done[p].store(s)
                    } else {
                        usleep(50)
                    }
                }
            }
        }
        for helper in helpers { try helper.start() }
        defer {
            stop.store(1)
            for helper in helpers { _ = try? helper.join(timeout: .seconds(30)) }
        }
        #expect(eventually(timeout: .seconds(20)) { done.allSatisfy { $0.load() == 1 } })
        #expect(lanes.used == 8)
        // The first get picks a lane (the ring is empty), then the ninth producer (this thread, every
        // lane owned by a live thread) puts into the ring.
        var previous = rproducer(of: try q.get(timeout: .seconds(5)))
        try q.put(rtag(99, 0), timeout: .seconds(5))
        #expect((0..<8).map { lanes.tail($0) }.reduce(0, +) == 8, "the ninth producer's item went into a lane")
        var gets = 1
        var ringTaken = false
        while gets < 2000 {
            let item = try q.get(timeout: .seconds(5))
            gets += 1
            let p = rproducer(of: item)
            if p == 99 {
                ringTaken = true
                break
            }
            // The lane the cursor just left gets one more item (its producer is a little slower than
            // the consumer): every lane has one waiting when the cursor comes round again.
            if p != previous {
                let want = done[previous].load()
                asked[previous].store(want)
                #expect(eventually(timeout: .seconds(5)) { done[previous].load() == want + 1 })
            }
            previous = p
        }
        #expect(ringTaken, "the ring's item was still waiting after \(gets) gets (8 lanes x 65 = 520 per round)")
        #expect(gets <= 2 * 8 * 65, "the ring's item came only after \(gets) gets")
    }

    // MARK: 2. An awaited put(contentsOf:) that waits for room resumes on another thread's lane

    /// Queue+Async.swift `put(contentsOf:)`: the runs go in through mp_queue_put_batch, which puts
    /// into the *calling thread's* lane (lane_of_caller); where the lane is full, the coroutine waits
    /// (putBytes → waitOnWord) and, in a Task on the global executor, resumes on whichever
    /// cooperative thread is free, whose lane (or a new one) takes the rest. The consumers take the
    /// lanes in turns, so later items of one call overtake earlier ones still in the first lane. The
    /// doc: "Puts `items` in order". The same holds for a loop of awaited single puts.
    /// The tasks run on threads of their own that take turns as the global executor's do (see
    /// ``ThreadsTaskExecutor``): in the parallel suite, on the global executor, it ran out of time.
    @Test("an awaited put(contentsOf:) from a Task on a pool of threads: its items arrive in order")
    func asyncBatchFromGlobalTaskKeepsOrder() async throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)  // lanes of 64 slots
        let perTask = 20_000
        let tasks = 3
        let finished = Word()
        let (consumer, got) = try startDraining(q, until: finished)
        let threadsSeen = Guarded<Set<Int32>>([])
        let executor = ThreadsTaskExecutor()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in 0..<tasks {
                group.addTask(executorPreference: executor) {
                    let items = (0..<perTask).map { rtag(p, $0) }
                    threadsSeen.withLock { _ = $0.insert(mp_thread_id()) }
                    // One call: its items must arrive in order.
                    let done = try await q.put(contentsOf: items, timeout: .seconds(60))
                    threadsSeen.withLock { _ = $0.insert(mp_thread_id()) }
                    #expect(done == perTask)
                }
            }
            try await group.waitForAll()
        }
        finished.store(1)
        #expect(try consumer.join(timeout: .seconds(150)))
        let items = got.withLock { $0 }
        var next = [Int](repeating: 0, count: tasks)
        var outOfOrder = 0
        for item in items {
            let p = rproducer(of: item)
            let s = rsequence(of: item)
            guard p < tasks else {
                outOfOrder += 1
                continue
            }
            if s != next[p] { outOfOrder += 1 }
            next[p] = max(next[p], s + 1)
        }
        #expect(items.count == tasks * perTask)
        #expect(
            outOfOrder == 0,
            "\(outOfOrder) items out of their task's order (the tasks ran on \(threadsSeen.withLock { $0.count }) threads)"
        )
    }

    // MARK: 3. A grandchild whose pid reuses a dead producer's tid puts into that lane unclaimed

    /// queue_lanes.c keeps each thread's lane choices in a thread-local table keyed by (queue id,
    /// tid) and never trims it; a forked child inherits the forking thread's table (only
    /// `mp_last_lane_choice` is forgotten at the fork). The table's entries are "kept by their tid
    /// test", but tids are reused: a process forked (or cloned by a zygote) from a process that
    /// inherited the entry of thread `t`, once `t` has exited and its lane has been taken over by
    /// another thread, gets pid `t` sooner or later (pid_max is 32768 here), finds the stale entry
    /// in lane_of_caller and puts into the lane without claiming it: two producers on one
    /// single-producer ring, and items are overwritten (lost) or read twice.
    /// The pid reuse is forced here through /proc/sys/kernel/ns_last_pid (root only, run alone).
    @Test(
        "a grandchild with the pid of a dead lane owner does not put into that lane; nothing lost",
        .enabled(if: pidRewindAllowed, pidRewindComment))
    func inheritedChoiceAndTidReuse() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)  // lanes of 64 slots
        let lanes = try #require(LaneHeaders(q))
        let words = try SharedCounters(count: 8)  // 0: go, 1: grandchild's exit code, 2: its pid, 3: t
        let perProducer = 20_000
        // What the children run, here first (a forked child runs only code its parent ran).
        let warm = try Queue<Int>(capacity: 4096, ordering: .perProducer)  // not `q`: no lane of it taken here
        try warm.put(rtag(7, 0), timeout: .seconds(5))
        _ = try warm.get(timeout: .seconds(5))
        _ = words[0]
        usleep(1)
        // Thread T: claims a lane, forks X (X's main thread inherits T's choice table), and exits.
        let t = Thread {
            try q.put(rtag(1, 0), timeout: .seconds(5))
            let tid = mp_thread_id()
            words[3] = Int(tid)
            let last = Array("\(tid - 1)".utf8)
            _ = last.withUnsafeBytes { $0.count }  // here first
            let x = mp_fork(0)
            if x == 0 {
                // X: waits for the go, makes the next pid `tid`, forks G, reports.
                var waited = 0
                while words[0] == 0, waited < 60_000 {
                    usleep(1000)
                    waited += 1
                }
                // Other processes (the tests beside this one) may take the pid first: try again.
                for _ in 0..<200 {
                    let fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY)
                    if fd < 0 { mp_exit_child(4) }
                    _ = last.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    close(fd)
                    let g = mp_fork(0)
                    if g == 0 {
                        if getpid() != tid { mp_exit_child(77) }  // not the pid wanted: X tries again
                        // G: its main thread's tid is `tid`: the inherited entry matches.
                        for s in 0..<perProducer {
                            do { try q.put(rtag(2, s), timeout: .seconds(5)) } catch { mp_exit_child(5) }
                            words[5] = s + 1
                        }
                        mp_exit_child(0)
                    }
                    var code: Int32 = 0
                    if g != tid {
                        _ = mp_wait_child(g, -1, 0, &code)
                        continue
                    }
                    words[2] = Int(g)
                    _ = mp_wait_child(g, -1, 0, &code)
                    words[1] = Int(code)
                    break
                }
                mp_exit_child(0)
            }
            words[4] = Int(x)
        }
        try t.start()
        #expect(try t.join(timeout: .seconds(10)))
        let tid = Int32(words[3])
        let x = Int32(words[4])
        let tl = try #require(lanes.owners.firstIndex(of: UInt32(tid)))
        // Seven live threads take the other lanes; an eighth, Y, then takes over the lane of T, now dead.
        let release = Word()
        let holders = (3..<10).map { p in
            Thread {
                try q.put(rtag(p, 0), timeout: .seconds(5))
                let end = ContinuousClock.now + .seconds(60)
                while release.load() == 0, ContinuousClock.now < end { usleep(1000) }
            }
        }
        for h in holders { try h.start() }
        defer {
            release.store(1)
            for h in holders { _ = try? h.join(timeout: .seconds(30)) }
        }
        #expect(eventually(timeout: .seconds(10)) { lanes.used == 8 && lanes.owners.allSatisfy { $0 != 0 } })
        let yReady = Word()
        let go = Word()
        let y = Thread {
            try q.put(rtag(10, 0), timeout: .seconds(5))  // takes over T's lane (owner dead)
            yReady.store(Int(mp_thread_id()))
            let end = ContinuousClock.now + .seconds(30)
            while go.load() == 0, ContinuousClock.now < end { usleep(100) }
            for s in 1..<perProducer { try q.put(rtag(10, s), timeout: .seconds(30)) }
        }
        try y.start()
        #expect(eventually(timeout: .seconds(10)) { yReady.load() != 0 })
        #expect(lanes.owner(tl) == UInt32(yReady.load()), "Y did not take over T's lane \(tl)")
        // A consumer, then Y and G put at once.
        let finished = Word()
        let (consumer, got) = try startDraining(q, until: finished)
        go.store(1)
        words[0] = 1
        #expect(try y.join(timeout: .seconds(60)))
        var code: Int32 = -1
        let end = ContinuousClock.now + .seconds(60)
        var reaped = false
        while ContinuousClock.now < end {
            if mp_wait_child(x, -1, 1, &code) != 0 {
                reaped = true
                break
            }
            usleep(1000)
        }
        finished.store(1)
        #expect(try consumer.join(timeout: .seconds(150)))
        let g = Int32(words[2])
        if !reaped {
            Issue.record("G (pid \(g)) had put \(words[5]) of \(perProducer) after 60 s: stuck")
            if g > 0 { _ = mp_signal(g, SIGKILL) }
            _ = mp_signal(x, SIGKILL)
            _ = mp_wait_child(x, -1, 0, &code)
        }
        #expect(words[1] == 0, "G exited with \(words[1]) after \(words[5]) puts")
        guard g == tid else {
            Issue.record("could not give the grandchild pid \(tid) (it got \(g)): inconclusive")
            return
        }
        let items = got.withLock { $0 }
        var count: [Int: Int] = [:]
        var seen = Set<Int>()
        var repeats = 0
        for item in items {
            count[rproducer(of: item), default: 0] += 1
            if !seen.insert(item).inserted { repeats += 1 }
        }
        #expect(count[2, default: 0] == perProducer, "G's items: \(count[2, default: 0]) of \(perProducer)")
        #expect(count[10, default: 0] == perProducer, "Y's items: \(count[10, default: 0]) of \(perProducer)")
        #expect(repeats == 0, "\(repeats) items arrived twice")
    }
}

// MARK: - Helpers

private func rtag(_ producer: Int, _ sequence: Int) -> Int { producer << 32 | sequence }
private func rproducer(of item: Int) -> Int { item >> 32 }
private func rsequence(of item: Int) -> Int { item & 0xFFFF_FFFF }

/// Starts a thread that gets from `q` until `finished` is set and a get then finds nothing for
/// 100 ms (or 60 s pass); what it got is in the box once it has ended.
private func startDraining(_ q: Queue<Int>, until finished: Word) throws -> (Thread, Guarded<[Int]>) {
    let got = Guarded<[Int]>([])
    let consumer = Thread {
        var items: [Int] = []
        let end = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < end {
            let finishing = finished.load() != 0
            do {
                items.append(try q.get(timeout: .milliseconds(100)))
            } catch {
                if finishing { break }
            }
        }
        got.withLock { $0 = items }
    }
    try consumer.start()
    return (consumer, got)
}

/// A task executor over threads that take turns, as the global executor's cooperative threads do:
/// a task resumes on whichever thread is free. Not the global executor itself: the parallel suite's
/// blocking tests hold its threads (two on this machine) for seconds at a time, and a test of
/// 60 000 awaited puts that takes 0.2 s alone ran out of its 30 s there.
private final class ThreadsTaskExecutor: TaskExecutor {
    private let queue = DispatchQueue(label: "queue-lane-order", attributes: .concurrent)

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}

/// One atomic word shared by this process's threads.
private final class Word: Sendable {
    private let value = Atomic<Int>(0)
    func load() -> Int { value.load(ordering: .acquiring) }
    func store(_ v: Int) { value.store(v, ordering: .releasing) }
}
