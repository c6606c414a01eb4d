import CMultiprocessing
import MultiprocessingTestTargets
import Synchronization
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The lanes of an unbounded queue of a fixed-size element (queue_lanes.c): each producer thread, in
/// any process, puts into a lock-free lane of its own; the ninth uses the ring; a dead owner's lane
/// is drained and taken over. Every wait has a deadline, and every check is of what arrives (each
/// item once, each producer's in order), never of how fast.
@Suite("Queue lanes")
struct QueueLaneTests {
    // MARK: Producers beyond the lanes

    @Test(
        "20 producers (12 threads here, 4 processes of 2 threads) over 8 lanes, 2 consumers: each item once, in order")
    func moreProducersThanLanes() throws {
        let perProducer = 10_000
        let threadProducers = 12
        let processes = 4
        let producers = threadProducers + processes * 2
        // Lanes of 1024 slots: every lane wraps many times.
        let q = try Queue<Int>(capacity: 1 << 16, ordering: .perProducer)
        let tally = try Tally(producers: producers, consumers: 2)
        let consumerProcess = Process { Self.consume(q, tally, consumer: 1) }
        let consumerThread = Thread { Self.consume(q, tally, consumer: 0) }
        try consumerProcess.start()
        try consumerThread.start()
        let putter: @Sendable (Int) -> Void = { p in
            do {
                for s in 0..<perProducer { try q.put(tag(p, s), timeout: .seconds(30)) }
            } catch {
                tally.fail()
            }
        }
        let startProducers: @Sendable (Range<Int>) throws -> [Thread] = { ids in
            let threads = ids.map { p in Thread { putter(p) } }
            for thread in threads { try thread.start() }
            return threads
        }
        // This process's producers first: the code a forked child runs has then run here once (a
        // child that needs a Swift runtime lock another thread held at the fork waits forever).
        let threads = try startProducers(0..<threadProducers)
        let children = (0..<processes).map { k in
            Process {
                let first = threadProducers + 2 * k
                // ThreadSanitizer cannot start threads in a child forked from a threaded process:
                // there the child's two producers take turns on its main thread.
                if mp_built_with_thread_sanitizer() != 0 {
                    putter(first)
                    putter(first + 1)
                    return
                }
                for thread in try startProducers(first..<(first + 2)) {
                    if try !thread.join(timeout: .seconds(60)) { tally.fail() }
                }
            }
        }
        for child in children { try child.start() }
        for thread in threads { #expect(try thread.join(timeout: .seconds(60))) }
        for child in children {
            #expect(try child.join(timeout: .seconds(60)))
            #expect(child.exitCode == 0)
        }
        tally.finish()  // every put has returned: a consumer that then finds the queue empty is done
        #expect(try consumerThread.join(timeout: .seconds(60)))
        #expect(try consumerProcess.join(timeout: .seconds(60)))
        #expect(consumerProcess.exitCode == 0)
        for p in children + [consumerProcess] where p.exitCode == nil {
            try p.kill()
            try p.join()
        }
        tally.check(perProducer: perProducer)
        let lanes = try #require(LaneHeaders(q))
        #expect(lanes.used == 8)
        #expect(lanes.owners.allSatisfy { $0 != 0 })
        #expect(q.count == 0)
    }

    @Test("a ninth producer uses the ring for good; consumers take turns between lanes and the ring")
    func ninthProducerUsesTheRingForGood() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        let release = Flag()
        let holders = (1...8).map { p in
            Thread {
                for s in 0..<200 { try q.put(tag(p, s)) }
                release.wait(upTo: .seconds(30))  // alive, so its lane stays its own
            }
        }
        for holder in holders { try holder.start() }
        #expect(eventually(timeout: .seconds(30)) { q.count == 1600 })
        #expect(lanes.used == 8)
        for s in 0..<200 { try q.put(tag(0, s)) }  // every lane has a live owner: the ring
        #expect((0..<8).map { lanes.tail($0) }.reduce(0, +) == 1600)
        // No producer waits for the others to drain: within two rounds of the lanes (64 each, with a
        // ring message between two lanes) every one of the nine has been heard from.
        var arrivals = try (0..<1200).map { _ in try q.get(timeout: .seconds(5)) }
        let heard = Set(arrivals.prefix(2 * 8 * 65).map(producer(of:)))
        #expect(heard == Set(0...8), "only \(heard.sorted()) were heard from")
        release.set()
        for holder in holders { #expect(try holder.join(timeout: .seconds(30))) }
        // Their lanes are free to take now, but this thread's messages wait in the ring: it stays there.
        for s in 200..<400 { try q.put(tag(0, s)) }
        #expect((0..<8).map { lanes.tail($0) }.reduce(0, +) == 1600)
        arrivals += try drain(q)
        expectSequences(arrivals, [0: 400, 1: 200, 2: 200, 3: 200, 4: 200, 5: 200, 6: 200, 7: 200, 8: 200])
    }

    // MARK: Dead owners

    @Test("lanes of producers that exited or were SIGKILLed mid-put are drained, then taken over; nothing lost")
    func deadOwnersLanesAreTakenOver() throws {
        let q = try Queue<Int>(capacity: 1 << 16, ordering: .perProducer)  // lanes of 1024 slots
        let lanes = try #require(LaneHeaders(q))
        let progress = try SharedCounters(count: 3)  // what each SIGKILLed producer knows it has put
        // Three producers put as fast as they can while a consumer drains; each is killed mid-flight.
        let first = Arrivals()
        let firstDone = Flag()
        let firstConsumer = Thread { first.drain(q, until: firstDone) }
        try firstConsumer.start()
        let killed = (0..<3).map { p in
            Process {
                for s in 0..<Int(Int32.max) {
                    try q.put(tag(p, s))
                    progress.atomicStore(p, s + 1)
                }
            }
        }
        for child in killed { try child.start() }
        #expect(eventually(timeout: .seconds(20)) { (0..<3).allSatisfy { progress.atomicLoad($0) > 2000 } })
        for child in killed { try child.kill() }
        for child in killed {
            #expect(try child.join(timeout: .seconds(20)))
            #expect(child.exitCode == -SIGKILL)
        }
        firstDone.set()
        #expect(try firstConsumer.join(timeout: .seconds(30)))
        let prefixes = expectSequences(first.items, nil)
        for p in 0..<3 {
            let known = progress.atomicLoad(p)
            // The item being put at the kill may have landed (its tail store) or not: no gap either way.
            #expect(
                prefixes[p, default: 0] == known || prefixes[p, default: 0] == known + 1,
                "producer \(p) had put \(known); \(prefixes[p, default: 0]) arrived")
        }
        // Five producers put 300 each and exit, nobody consuming: their lanes keep the items.
        let exited = (3..<8).map { p in Process { for s in 0..<300 { try q.put(tag(p, s)) } } }
        for child in exited { try child.start() }
        for child in exited {
            #expect(try child.join(timeout: .seconds(30)))
            #expect(child.exitCode == 0)
        }
        let oldOwners = lanes.owners
        #expect(lanes.used == 8)
        #expect(Set(oldOwners) == Set((killed + exited).map { UInt32($0.pid ?? 0) }))
        // Eight new producers: no lane is free, every owner is dead: each takes one over.
        let second = Arrivals()
        let secondDone = Flag()
        let secondConsumer = Thread { second.drain(q, until: secondDone) }
        try secondConsumer.start()
        let claimed = try SharedCounters(count: 1)
        let fresh = (8..<16).map { p in
            Process {
                try q.put(tag(p, 0), timeout: .seconds(30))
                // None exits before all have put once: each takes an old lane, not a new one's.
                claimed.atomicAdd(0, 1)
                let end = ContinuousClock.now + .seconds(20)
                while claimed.atomicLoad(0) < 8, ContinuousClock.now < end { usleep(1000) }
                for s in 1..<2000 { try q.put(tag(p, s), timeout: .seconds(30)) }
            }
        }
        for child in fresh { try child.start() }
        for child in fresh {
            #expect(try child.join(timeout: .seconds(30)))
            #expect(child.exitCode == 0)
        }
        secondDone.set()
        #expect(try secondConsumer.join(timeout: .seconds(30)))
        var expected: [Int: Int] = [:]
        for p in 3..<8 { expected[p] = 300 }
        for p in 8..<16 { expected[p] = 2000 }
        expectSequences(second.items, expected)
        let newOwners = lanes.owners
        #expect(Set(newOwners) == Set(fresh.map { UInt32($0.pid ?? 0) }), "the new producers did not take the lanes")
        // A lane's leftovers come before its new owner's items.
        let producerOf = Dictionary(
            uniqueKeysWithValues: zip((killed + exited + fresh).map { UInt32($0.pid ?? 0) }, 0..<16))
        for lane in 0..<8 {
            guard let old = producerOf[oldOwners[lane]], let new = producerOf[newOwners[lane]], old >= 3 else {
                continue
            }
            let lastOld = second.items.lastIndex { producer(of: $0) == old } ?? -1
            let firstNew = second.items.firstIndex { producer(of: $0) == new } ?? Int.max
            #expect(lastOld < firstNew, "lane \(lane): producer \(new) overtook the leftovers of \(old)")
        }
        #expect(q.count == 0)
    }

    @Test("a thread that exited leaves its lane to the next thread of this process, after its leftovers")
    func exitedThreadsLaneIsReused() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)  // lanes of 64 slots
        let lanes = try #require(LaneHeaders(q))
        let first = (0..<8).map { p in Thread { for s in 0..<50 { try q.put(tag(p, s)) } } }
        for thread in first { try thread.start() }
        for thread in first { #expect(try thread.join(timeout: .seconds(30))) }
        let oldOwners = lanes.owners
        #expect(q.count == 400)
        let late = Thread { for s in 0..<200 { try q.put(tag(8, s), timeout: .seconds(30)) } }  // wraps its lane
        try late.start()
        var arrivals: [Int] = []
        while late.isAlive || !q.isEmpty, arrivals.count < 600 {
            if let item = try take(q, timeout: .milliseconds(100)) { arrivals.append(item) }
        }
        #expect(try late.join(timeout: .seconds(30)))
        arrivals += try drain(q)
        expectSequences(arrivals, [0: 50, 1: 50, 2: 50, 3: 50, 4: 50, 5: 50, 6: 50, 7: 50, 8: 200])
        let taken = (0..<8).filter { lanes.owners[$0] != oldOwners[$0] }
        #expect(taken.count == 1, "the late thread took \(taken.count) lanes")
        if let lane = taken.first, let old = first.firstIndex(where: { UInt32($0.nativeID ?? 0) == oldOwners[lane] }) {
            let lastOld = arrivals.lastIndex { producer(of: $0) == old } ?? -1
            let firstNew = arrivals.firstIndex { producer(of: $0) == 8 } ?? Int.max
            #expect(lastOld < firstNew, "the new owner overtook the leftovers of lane \(lane)")
        }
    }

    // MARK: Fork

    @Test("a child forked from a thread that owns a lane takes a lane of its own; both sequences arrive whole")
    func forkedChildTakesItsOwnLane() throws {
        let q = try Queue<Int>(capacity: 1 << 16, ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        let arrivals = Arrivals()
        let done = Flag()
        let consumer = Thread { arrivals.drain(q, until: done) }
        try consumer.start()
        let perChild = 30_000
        var next = 0
        try q.put(tag(0, next))  // this thread's lane, and its last choice: what a forked child inherits
        next += 1
        let mine = lanes.owners.firstIndex(of: UInt32(mp_thread_id()))
        #expect(mine != nil)
        var children: [Process] = []
        for round in 1...3 {
            let child = Process { for s in 0..<perChild { try q.put(tag(round, s), timeout: .seconds(30)) } }
            try child.start()
            children.append(child)
            let end = ContinuousClock.now + .seconds(30)
            while ContinuousClock.now < end {  // this thread keeps putting into its lane meanwhile
                for _ in 0..<256 {
                    try q.put(tag(0, next), timeout: .seconds(30))
                    next += 1
                }
                if !child.isAlive { break }
            }
            #expect(try child.join(timeout: .seconds(30)))
            #expect(child.exitCode == 0)
            let childLane = lanes.owners.firstIndex(of: UInt32(child.pid ?? 0))
            #expect(childLane != nil && childLane != mine, "round \(round): the child put into lane \(childLane ?? -1)")
        }
        #expect(lanes.owners.firstIndex(of: UInt32(mp_thread_id())) == mine)
        done.set()
        #expect(try consumer.join(timeout: .seconds(60)))
        for child in children where child.exitCode == nil {
            try child.kill()
            try child.join()
        }
        expectSequences(arrivals.items, [0: next, 1: perChild, 2: perChild, 3: perChild])
    }

    // MARK: Sleeping consumers

    static let wakeRounds = 200

    @Test("a consumer asleep on an empty lane queue is woken by a thread's lane put, 200 times in a row")
    func sleeperWokenByThread() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let acks = try SharedCounters(count: 2)
        let producer = Thread { Self.putToSleeper(q, acks) }
        try producer.start()
        Self.takeAsSleeper(q, acks) { try q.get(timeout: .seconds(10)) }
        #expect(try producer.join(timeout: .seconds(30)))
        #expect(acks.atomicLoad(1) == 0, "\(acks.atomicLoad(1)) rounds found no sleeper")
    }

    @Test("a consumer asleep on an empty lane queue is woken by another process's lane put, 200 times in a row")
    func sleeperWokenByProcess() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let acks = try SharedCounters(count: 2)
        let producer = Process { Self.putToSleeper(q, acks) }
        try producer.start()
        Self.takeAsSleeper(q, acks) { try q.get(timeout: .seconds(10)) }
        #expect(try producer.join(timeout: .seconds(30)))
        #expect(producer.exitCode == 0)
        #expect(acks.atomicLoad(1) == 0, "\(acks.atomicLoad(1)) rounds found no sleeper")
        if producer.exitCode == nil {
            try producer.kill()
            try producer.join()
        }
    }

    @Test("an async get asleep on an event loop is woken by a thread's lane put, 200 times in a row")
    func asyncSleeperWoken() async throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let acks = try SharedCounters(count: 2)
        let producer = Thread { Self.putToSleeper(q, acks) }
        try producer.start()
        try await onLoop(limit: .seconds(60)) {
            for r in 0..<Self.wakeRounds {
                do {
                    let item = try await q.get(timeout: .seconds(10))
                    #expect(item == r)
                    acks.atomicStore(0, r + 1)
                } catch {
                    Issue.record("round \(r): \(error)")
                    acks.atomicStore(0, -1)  // the producer stops
                    return
                }
            }
        }
        let end = ContinuousClock.now + .seconds(30)
        while producer.isAlive, ContinuousClock.now < end { try await Task.sleep(for: .milliseconds(1)) }
        #expect(!producer.isAlive)
        #expect(acks.atomicLoad(1) == 0, "\(acks.atomicLoad(1)) rounds found no sleeper")
    }

    @Test("a producer asleep on a full lane is woken by a get, 200 times in a row")
    func fullLaneProducerWokenByGet() throws {
        // The smallest ring: lanes of 64 slots. The producer fills its lane, then each round puts
        // one more, which waits for room; the consumer takes one message (a lane get's straight
        // path, inline in Queue.get) once the producer sleeps on `space_seq`, at once or later.
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let slots = 64
        let done = try SharedCounters(count: 2)  // [0] puts returned, [1] rounds with no sleeper seen
        let producer = Thread {
            for i in 0..<(slots + Self.wakeRounds) {
                do { try q.put(i, timeout: .seconds(20)) } catch { return }
                done.atomicStore(0, i + 1)
            }
        }
        try producer.start()
        #expect(eventually(timeout: .seconds(20)) { done.atomicLoad(0) == slots })
        for r in 0..<Self.wakeRounds {
            let asleep = eventually(timeout: .seconds(10)) { sleepers(q, \.space_sleepers) > 0 }
            if !asleep { done.atomicStore(1, done.atomicLoad(1) + 1) }
            let delay: UInt32 = [0, 200, 1000, 5000][r % 4]
            if delay > 0 { usleep(delay) }
            #expect(try q.get(timeout: .seconds(10)) == r)
            // The put waiting for that slot returns: a lost wake-up would hold it for 20 s.
            #expect(eventually(timeout: .seconds(10)) { done.atomicLoad(0) == slots + r + 1 }, "round \(r)")
            if done.atomicLoad(0) != slots + r + 1 { break }
        }
        #expect(try producer.join(timeout: .seconds(30)))
        #expect(done.atomicLoad(1) == 0, "\(done.atomicLoad(1)) rounds found no sleeper")
        for i in Self.wakeRounds..<(slots + Self.wakeRounds) { #expect(try q.get(timeout: .seconds(10)) == i) }
        #expect(q.count == 0)
    }

    /// The consumer's side: takes round r's item, then acknowledges it (slot 0 = r + 1) and goes back
    /// to sleep in the next get. A get that fails stops both sides (slot 0 = -1).
    static func takeAsSleeper(_ q: Queue<Int>, _ acks: SharedCounters, get: () throws -> Int) {
        for r in 0..<wakeRounds {
            do {
                let item = try get()
                #expect(item == r)
                acks.atomicStore(0, r + 1)
            } catch {
                Issue.record("round \(r): \(error)")
                acks.atomicStore(0, -1)
                return
            }
        }
    }

    /// The producer's side: puts round r's item once the consumer has taken round r - 1 and announced
    /// itself asleep (`data_sleepers`), at once (inside the sleeper's last look), or 200 µs, 1 ms or
    /// 5 ms later (in its futex wait), and 50 ms later every 25th round. Counts in slot 1 the rounds
    /// where no sleeper showed up within 10 s.
    static func putToSleeper(_ q: Queue<Int>, _ acks: SharedCounters) {
        for r in 0..<wakeRounds {
            let end = ContinuousClock.now + .seconds(10)
            var ready = false
            while !ready, ContinuousClock.now < end {
                let acked = acks.atomicLoad(0)
                if acked < 0 { return }
                ready =
                    acked == r
                    && sleepers(q) > 0
                if !ready { sched_yield() }
            }
            if !ready { acks.atomicStore(1, acks.atomicLoad(1) + 1) }
            let delay: UInt32 = r % 25 == 24 ? 50_000 : [0, 200, 1000, 5000][r % 4]
            if delay > 0 { usleep(delay) }
            do { try q.put(r) } catch { return }
        }
    }

    // MARK: Consumers racing for a lane's messages

    @Test(
        "5 consumers take lane messages at once, by CAS, with and without the lock (get, get(max:), getNowait, async get, another process): each item once, in order"
    )
    func consumersRace() throws {
        let producers = 6
        let perProducer = 20_000
        // Lanes of 256 slots: each one wraps about 80 times, so that a consumer whose copy loses
        // its race often finds the producer writing the next lap in that slot.
        let q = try Queue<Int>(capacity: 1 << 14, ordering: .perProducer)
        let tally = try Tally(producers: producers, consumers: 5)
        // The process first, before this process has threads of its own (see moreProducersThanLanes).
        let consumerProcess = Process { Self.consume(q, tally, consumer: 4) }
        try consumerProcess.start()
        let consumers = [
            Thread { Self.consume(q, tally, consumer: 0) },
            Thread {  // batches: the first under the lock, the rest copied out by one CAS per run
                Self.consume(tally, consumer: 1) { () throws(QueueError) in
                    try q.get(max: 5, timeout: .milliseconds(100))
                }
            },
            Thread {  // no waiting at all: straight gets, and the lock's try
                Self.consume(tally, consumer: 2) { () throws(QueueError) in
                    do throws(QueueError) {
                        return [try q.getNowait()]
                    } catch .empty {
                        sched_yield()
                        return []
                    }
                }
            },
            Thread {  // a coroutine: the lock by its CAS alone, never a straight get
                try EventLoop.run {
                    let end = ContinuousClock.now + .seconds(90)
                    while ContinuousClock.now < end {
                        let finishing = tally.finished
                        do {
                            tally.record(3, try await q.get(timeout: .milliseconds(100)))
                        } catch QueueError.empty {
                            if finishing { return }
                        } catch {
                            return tally.fail()
                        }
                    }
                    tally.fail()
                }
            },
        ]
        for thread in consumers { try thread.start() }
        let threads = (0..<producers).map { p in
            Thread {
                do {
                    for s in 0..<perProducer { try q.put(tag(p, s), timeout: .seconds(30)) }
                } catch {
                    tally.fail()
                }
            }
        }
        for thread in threads { try thread.start() }
        for thread in threads { #expect(try thread.join(timeout: .seconds(60))) }
        tally.finish()
        for thread in consumers { #expect(try thread.join(timeout: .seconds(60))) }
        #expect(try consumerProcess.join(timeout: .seconds(60)))
        if consumerProcess.exitCode == nil {
            try consumerProcess.kill()
            try consumerProcess.join()
        }
        #expect(consumerProcess.exitCode == 0)
        tally.check(perProducer: perProducer)
        #expect(q.count == 0)
        // Each consumer took some: the test raced what it meant to race.
        for c in 0..<5 { #expect(tally.taken(by: c) > 0, "consumer \(c) took nothing") }
    }

    @Test(
        "lane consumers SIGKILLed at random while they take: no item twice, each producer's in order, at most one lost per kill"
    )
    func consumersKilledWhileTaking() throws {
        let producers = 3
        let perProducer = 20_000
        // Lanes of 65 536 slots: every item is in place before the first consumer starts, so that no
        // thread of this process is busy when the consumers are forked.
        let q = try Queue<Int>(capacity: 1 << 22, ordering: .perProducer)
        let tally = try Tally(producers: producers, consumers: 1)
        let threads = (0..<producers).map { p in
            Thread { for s in 0..<perProducer { try q.put(tag(p, s), timeout: .seconds(30)) } }
        }
        for thread in threads { try thread.start() }
        for thread in threads { #expect(try thread.join(timeout: .seconds(60))) }
        #expect(q.count == producers * perProducer)
        tally.finish()  // a consumer that finds the queue empty is done
        var kills = 0
        for round in 0..<30 {
            // Each consumer records every item it gets at once: what a killed one took and did not
            // record is the one it held when it died, never more (it takes them one at a time).
            // A few microseconds' work per item: the items last through most of the rounds.
            let consumer = Process {
                Self.consume(tally, consumer: 0) { () throws(QueueError) in
                    let item = try q.get(timeout: .milliseconds(100))
                    var work = item
                    for k in 0..<2_000 { work = work &* 31 &+ k }
                    return work == 42 ? [item, item] : [item]  // never 42: keeps the work
                }
            }
            try consumer.start()
            usleep(UInt32(200 + (round * 337) % 3000))
            try consumer.kill()
            #expect(try consumer.join(timeout: .seconds(30)))
            if consumer.exitCode == -SIGKILL { kills += 1 }
        }
        let beforeDrain = tally.taken(by: 0)
        #expect(beforeDrain > 0 && beforeDrain < producers * perProducer, "the killed consumers took \(beforeDrain)")
        Self.consume(q, tally, consumer: 0)  // the rest, here
        let got = tally.taken(by: 0)
        let all = producers * perProducer
        #expect(got >= all - kills && got <= all, "\(got) items, \(kills) kills")
        #expect(tally.failures == 0)
        for p in 0..<producers {
            #expect(tally.repeats(of: p, at: 0) == 0, "producer \(p): an item twice or out of order")
        }
        #expect(kills > 15)  // most consumers died while they took
        #expect(q.count == 0)
    }

    // MARK: A peer that writes garbage

    @Test(
        "a lane's positions more than a lane apart: the get throws corrupted in time, and the queue refuses after",
        arguments: [
            (
                "tail a lane and one ahead of head",
                { @Sendable (lanes: LaneHeaders, lane: Int) in
                    lanes.setTail(lane, lanes.head(lane) + lanes.slots + 1)
                }
            ),
            ("tail 2^63", { @Sendable lanes, lane in lanes.setTail(lane, 1 << 63) }),
            ("head one past tail", { @Sendable lanes, lane in lanes.setHead(lane, lanes.tail(lane) + 1) }),
            ("head 2^40", { @Sendable lanes, lane in lanes.setHead(lane, 1 << 40) }),
        ] as [(String, @Sendable (LaneHeaders, Int) -> Void)])
    func impossiblePositions(_ name: String, write: @escaping @Sendable (LaneHeaders, Int) -> Void) throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let sound = try FoundationJSON.decode(Queue<Int>.self, try FoundationJSON.encode(q))  // a handle of its own
        let lanes = try #require(LaneHeaders(q))
        for i in 0..<3 { try q.put(i) }
        let lane = try #require(lanes.owners.firstIndex(of: UInt32(mp_thread_id())))
        #expect(try runInChild(timeout: .seconds(20)) { write(lanes, lane) } == 0)
        #expect(q.count == 0)  // positions a lane apart count nothing
        #expect(throws: QueueError.corrupted) { try q.get(timeout: .seconds(5)) }
        #expect(throws: QueueError.corrupted) { try q.put(9, timeout: .seconds(5)) }
        // A message in a sound lane (another thread's, through the other handle): the corrupted
        // handle's straight get refuses it as well, and so does its straight put on that thread.
        let other = Thread {
            try sound.put(7, timeout: .seconds(5))
            #expect(throws: QueueError.corrupted) { try q.put(8, timeout: .seconds(5)) }
        }
        try other.start()
        #expect(try other.join(timeout: .seconds(20)))
        let soundLane = try #require(lanes.owners.indices.first { $0 != lane && lanes.owners[$0] != 0 })
        (lanes.cursor, lanes.budget) = (UInt32(soundLane), 64)  // the consumers' turn is the sound lane's
        #expect(throws: QueueError.corrupted) { try q.get(timeout: .seconds(5)) }
        #expect(throws: QueueError.corrupted) { try q.getNowait() }
        #expect(lanes.tail(soundLane) - lanes.head(soundLane) == 1)  // still there
    }

    @Test("a lane's tail moved ahead within a lane: the gets return values, then the queue goes on")
    func plausibleTail() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        for i in 0..<3 { try q.put(i) }
        let lane = try #require(lanes.owners.firstIndex(of: UInt32(mp_thread_id())))
        #expect(try runInChild(timeout: .seconds(20)) { lanes.setTail(lane, 5) } == 0)
        #expect(q.count == 5)
        #expect(try (0..<3).map { _ in try q.get(timeout: .seconds(5)) } == [0, 1, 2])
        for _ in 0..<2 { _ = try q.get(timeout: .seconds(5)) }  // what the slots held: values, whatever they are
        #expect(throws: QueueError.empty) { try q.get(timeout: .milliseconds(50)) }
        try q.put(9)
        #expect(try q.get(timeout: .seconds(5)) == 9)
    }

    @Test(
        "a producer whose lane's head is garbled waits for room and fails with full at its deadline, overwriting nothing",
        arguments: [1 << 40, 65, UInt64.max] as [UInt64])
    func garbledHeadStopsProducer(_ head: UInt64) throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        #expect(lanes.slots == 64)
        for i in 0..<64 { try q.put(i) }
        let lane = try #require(lanes.owners.firstIndex(of: UInt32(mp_thread_id())))
        #expect(throws: QueueError.full) { try q.putNowait(-1) }
        #expect(try runInChild(timeout: .seconds(20)) { lanes.setHead(lane, head) } == 0)
        let start = ContinuousClock.now
        #expect(throws: QueueError.full) { try q.put(-2, timeout: .milliseconds(200)) }
        #expect(ContinuousClock.now - start >= .milliseconds(200))  // it waited for its deadline
        #expect(throws: QueueError.full) { try q.put(contentsOf: [-3, -4], timeout: .milliseconds(50)) }
        #expect(try runInChild(timeout: .seconds(20)) { lanes.setHead(lane, 0) } == 0)
        #expect(try (0..<64).map { _ in try q.get(timeout: .seconds(5)) } == Array(0..<64))
        try q.put(64)
        #expect(try q.get(timeout: .seconds(5)) == 64)
    }

    @Test("garbled used, cursor and budget are clamped: every item arrives, in order")
    func garbledConsumerState() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        for s in 0..<10 { try q.put(tag(0, s)) }
        let other = Thread { for s in 0..<10 { try q.put(tag(1, s)) } }
        try other.start()
        #expect(try other.join(timeout: .seconds(10)))
        #expect(
            try runInChild(timeout: .seconds(20)) {
                lanes.used = .max
                lanes.cursor = 0xFFFF_FFF0
                lanes.budget = 0x8000_0000
            } == 0)
        #expect(q.count == 20)
        expectSequences(try drain(q), [0: 10, 1: 10])
        try q.put(tag(0, 10))
        #expect(try q.get(timeout: .seconds(5)) == tag(0, 10))
    }

    @Test("every lane owned by a live thread id a peer wrote: a new producer uses the ring, in order")
    func garbledOwners() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        let live = UInt32(getpid())  // this process's main thread: alive for the whole test
        #expect(try runInChild(timeout: .seconds(20)) { for i in 0..<8 { lanes.setOwner(i, live) } } == 0)
        let producer = Thread { for s in 0..<300 { try q.put(s, timeout: .seconds(10)) } }  // past a lane's 64
        try producer.start()
        var arrivals: [Int] = []
        while arrivals.count < 300 { arrivals.append(try q.get(timeout: .seconds(10))) }
        #expect(try producer.join(timeout: .seconds(10)))
        #expect(arrivals == Array(0..<300))
        #expect(lanes.used == 0)
        #expect((0..<8).allSatisfy { lanes.tail($0) == 0 })
    }

    @Test("random words over the lanes' header: every get and put ends in time, with a value or a typed error")
    func randomGarbageInLanes() throws {
        let rounds = runningUnderSanitizer ? 100 : 300
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<rounds {
            let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
            let lanes = try #require(LaneHeaders(q))
            for s in 0..<40 { try q.put(s) }
            let other = Thread { for s in 0..<40 { _ = try? q.put(s, timeout: .milliseconds(20)) } }
            try other.start()
            #expect(try other.join(timeout: .seconds(10)))
            for _ in 0..<Int.random(in: 1...6, using: &generator) {
                let offset = Int.random(in: 0..<(LaneHeaders.headerBytes / 4), using: &generator) * 4
                let word: UInt32 =
                    Bool.random(using: &generator) ? generator.next() : UInt32.random(in: 0...80, using: &generator)
                lanes.base.storeBytes(of: word, toByteOffset: offset, as: UInt32.self)
            }
            _ = q.count
            let end = ContinuousClock.now + .seconds(5)
            for _ in 0..<200 {
                do {
                    _ = try q.get(timeout: .milliseconds(2))
                } catch QueueError.empty, QueueError.corrupted {
                    break
                } catch {
                    Issue.record("a get threw \(error)")
                    break
                }
            }
            do {
                try q.put(1, timeout: .milliseconds(2))
            } catch QueueError.full, QueueError.corrupted {
            } catch {
                Issue.record("a put threw \(error)")
            }
            #expect(ContinuousClock.now < end, "a round took more than 5 s")
        }
    }

    // MARK: Queues with and without lanes

    @Test("bounded, joinable, encoded and oversized queues have no lanes and still keep each producer's order")
    func queuesWithoutLanes() throws {
        #expect(hasLanes(try Queue<Int>(ordering: .perProducer)))
        #expect(!hasLanes(try Queue<Int>()))  // causal, the default: the ring
        #expect(try Queue<Int>().copiesBits && Queue<Int>(ordering: .perProducer).copiesBits)  // never encoded
        #expect(hasLanes(try Queue<Block512>(ordering: .perProducer)))
        #expect(!hasLanes(try Queue<Int>(maxSize: 10)))
        #expect(!hasLanes(try JoinableQueue<Int>()))
        #expect(!hasLanes(try Queue<String>()))
        #expect(!hasLanes(try Queue<Block576>(ordering: .perProducer)))
        #expect(!hasLanes(try Queue<Int>(maxMessageSize: 4, ordering: .perProducer)))

        let bounded = try Queue<Odd13>(maxSize: 10)
        try expectRoundTrip(bounded, producers: 3, perProducer: 500, make: Odd13.init, read: { $0.read })
        for i in 0..<10 { try bounded.put(Odd13(0, i)) }
        #expect(throws: QueueError.full) { try bounded.putNowait(Odd13(0, 10)) }
        #expect(bounded.count == 10)

        let joinable = try JoinableQueue<Int>()
        try expectRoundTrip(
            joinable, producers: 3, perProducer: 500, make: tag, read: { (producer(of: $0), sequence(of: $0), true) })
        for _ in 0..<1500 { try joinable.taskDone() }
        #expect(try joinable.join(timeout: .seconds(5)))
    }

    @Test("elements of 1, 13 and 512 bytes travel in lanes whole, each producer's in order")
    func laneElementSizes() throws {
        try expectRoundTrip(
            try Queue<Odd13>(capacity: 4096, ordering: .perProducer), producers: 3, perProducer: 2000, make: Odd13.init,
            read: { $0.read })
        try expectRoundTrip(
            try Queue<Block512>(ordering: .perProducer), producers: 3, perProducer: 2000, make: Block512.init,
            read: { $0.read })
        let bytes = try Queue<UInt8>(capacity: 4096, ordering: .perProducer)
        #expect(hasLanes(bytes))
        let producer = Thread {
            for i in 0..<1000 { try bytes.put(UInt8(truncatingIfNeeded: i), timeout: .seconds(10)) }
        }
        try producer.start()
        for i in 0..<1000 { #expect(try bytes.get(timeout: .seconds(10)) == UInt8(truncatingIfNeeded: i)) }
        #expect(try producer.join(timeout: .seconds(10)))
    }

    @Test("a Queue<Int> handed to a spawned child: the child's puts go through a lane of its own")
    func spawnedChildUsesALane() throws {
        useTestHelper()
        let job = QueueJob(
            input: try Queue<Int>(ordering: .perProducer), output: try Queue<Int>(ordering: .perProducer))
        let child = Process(spawn: TestTargets.doubler, argument: job)
        try child.start()
        for i in 0..<1000 { try job.input.put(i) }
        try job.input.put(-1)
        var doubled: [Int] = []
        for _ in 0..<1000 { doubled.append(try job.output.get(timeout: .seconds(60))) }
        #expect(doubled == (0..<1000).map { 2 * $0 })
        #expect(try child.join(timeout: .seconds(60)))
        #expect(child.exitCode == 0)
        let lanes = try #require(LaneHeaders(job.output))
        #expect(lanes.used == 1)
        #expect(lanes.owners[0] != 0 && lanes.owners[0] != UInt32(mp_thread_id()))
        #expect(throws: QueueError.empty) { try job.output.get(timeout: .milliseconds(20)) }
    }

    @Test("a Queue<Int> decoded in a forked child: the child's puts go through a lane of its own, in order")
    func decodedInForkedChild() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let encoded = try SpawnCoding.encode(q)
        try q.put(tag(0, 0))
        _ = try SpawnCoding.decode(Queue<Int>.self, from: encoded)  // here first (the fork hazard: see lockMixed)
        let child = Process {
            let decoded = try SpawnCoding.decode(Queue<Int>.self, from: encoded)
            for s in 0..<5000 { try decoded.put(tag(1, s), timeout: .seconds(10)) }
        }
        try child.start()
        #expect(try child.join(timeout: .seconds(30)))
        #expect(child.exitCode == 0)
        let lanes = try #require(LaneHeaders(q))
        #expect(lanes.owners.contains(UInt32(child.pid ?? 0)))
        expectSequences(try drain(q), [0: 1, 1: 5000])
    }

    // MARK: Batches, counts and shutdown

    @Test("put(contentsOf:) through a lane: a run that fills the lane is published, the rest waits; order kept")
    func batchesThroughALane() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)  // 64 slots a lane
        #expect(try q.put(contentsOf: 0..<100, timeout: .milliseconds(100)) == 64)
        #expect(q.count == 64)
        #expect(throws: QueueError.full) { try q.put(contentsOf: [1, 2], timeout: .milliseconds(20)) }
        #expect(try q.get(max: 100, timeout: .seconds(5)) == Array(0..<64))
        let total = 50_000
        let producer = Thread {
            var next = 0
            while next < total {
                let chunk = Swift.min(1 + next % 150, total - next)
                precondition(try! q.put(contentsOf: next..<(next + chunk), timeout: .seconds(30)) == chunk)
                next += chunk
            }
        }
        try producer.start()
        var received: [Int] = []
        let end = ContinuousClock.now + .seconds(60)
        while received.count < total, ContinuousClock.now < end {
            received += try q.get(max: 97, timeout: .seconds(30))
        }
        #expect(try producer.join(timeout: .seconds(30)))
        #expect(received == Array(0..<total))
    }

    @Test("count includes the messages in lanes and in the ring")
    func countIncludesLanes() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let release = Flag()
        let threads = (1...8).map { p in
            Thread {
                for s in 0..<(10 * p) { try q.put(tag(p, s)) }
                release.wait(upTo: .seconds(30))
            }
        }
        for thread in threads { try thread.start() }
        #expect(eventually(timeout: .seconds(20)) { q.count == 360 })
        for s in 0..<7 { try q.put(tag(0, s)) }  // the ring: every lane's owner lives
        #expect(q.count == 367)
        _ = try q.get(max: 100, timeout: .seconds(5))
        #expect(q.count == 267)
        release.set()
        for thread in threads { #expect(try thread.join(timeout: .seconds(30))) }
        #expect(try drain(q).count == 267)
        #expect(q.count == 0)
    }

    @Test("an immediate shutdown discards the lanes' messages: count drops to 0, gets and puts throw shutDown")
    func immediateShutdownDiscardsLanes() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        let threads = (1...3).map { p in Thread { for s in 0..<50 { try q.put(tag(p, s)) } } }
        for thread in threads { try thread.start() }
        for thread in threads { #expect(try thread.join(timeout: .seconds(10))) }
        for s in 0..<50 { try q.put(tag(0, s)) }
        #expect(q.count == 200)
        q.shutdown(immediate: true)
        #expect(q.count == 0)
        #expect((0..<8).allSatisfy { lanes.head($0) == lanes.tail($0) })
        #expect(throws: QueueError.shutDown) { try q.get(timeout: .seconds(5)) }
        #expect(throws: QueueError.shutDown) { try q.getNowait() }
        #expect(throws: QueueError.shutDown) { try q.get(max: 10, timeout: .seconds(5)) }
        #expect(throws: QueueError.shutDown) { try q.put(1) }
        #expect(throws: QueueError.shutDown) { try q.put(contentsOf: [1, 2]) }
        let code = try runInChild(timeout: .seconds(20)) {
            do {
                _ = try q.get(timeout: .seconds(5))
                exit(2)
            } catch QueueError.shutDown {
                exit(0)
            }
        }
        #expect(code == 0)
    }

    @Test("a plain shutdown lets the lanes drain first; an immediate one wakes a sleeping consumer")
    func shutdownAndLanes() throws {
        let q = try Queue<Int>(capacity: 4096, ordering: .perProducer)
        let threads = (1...3).map { p in Thread { for s in 0..<50 { try q.put(tag(p, s)) } } }
        for thread in threads { try thread.start() }
        for thread in threads { #expect(try thread.join(timeout: .seconds(10))) }
        q.shutdown()
        #expect(throws: QueueError.shutDown) { try q.put(1) }
        var arrivals: [Int] = []
        for _ in 0..<150 { arrivals.append(try q.get(timeout: .seconds(5))) }
        expectSequences(arrivals, [1: 50, 2: 50, 3: 50])
        #expect(throws: QueueError.shutDown) { try q.get(timeout: .seconds(5)) }

        let empty = try Queue<Int>(ordering: .perProducer)
        let outcome = try SharedCounters(count: 1)
        let sleeper = Thread {
            do {
                _ = try empty.get(timeout: .seconds(10))
                outcome[0] = 1
            } catch QueueError.shutDown {
                outcome[0] = 2
            } catch {
                outcome[0] = 3
            }
        }
        try sleeper.start()
        #expect(
            eventually(timeout: .seconds(5)) { sleepers(empty) > 0 })
        empty.shutdown(immediate: true)
        #expect(try sleeper.join(timeout: .seconds(5)))
        #expect(outcome[0] == 2)
    }

    // MARK: Order between producers

    @Test(
        "a message put after another producer's put returned (a joined producer, then a sentinel) arrives after it",
        arguments: [false, true])
    func causallyOrderedPutsArriveInOrder(_ fromProcess: Bool) throws {
        // Python's pattern: join the producers, then put one sentinel per consumer. On the ring a
        // put that begins after another returned is read after it; here the producers' items are in
        // their lanes and the sentinel in this thread's: only the default (causal) ordering keeps it.
        let q = try Queue<Int>()
        let body: @Sendable () throws -> Void = { for s in 0..<100 { try q.put(tag(1, s)) } }
        if fromProcess {
            #expect(try runInChild(timeout: .seconds(20), body) == 0)
        } else {
            let producer = Thread { try body() }
            try producer.start()
            #expect(try producer.join(timeout: .seconds(20)))
        }
        try q.put(-1)  // the sentinel
        let arrivals = try drain(q)
        #expect(arrivals.count == 101)
        #expect(arrivals.last == -1, "the sentinel arrived at \(arrivals.firstIndex(of: -1) ?? -1) of 101")
    }

    @Test("a thread that put through the ring keeps to it through a second handle of the same queue")
    func secondHandleKeepsTheRingChoice() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let handle = try SpawnCoding.decode(Queue<Int>.self, from: try SpawnCoding.encode(q))  // another view
        let release = Flags(count: 8)
        let holders = (1...8).map { p in
            Thread {
                try q.put(tag(p, 0))
                release.wait(p - 1, upTo: .seconds(30))
            }
        }
        for holder in holders { try holder.start() }
        #expect(eventually(timeout: .seconds(20)) { q.count == 8 })
        for s in 0..<100 { try q.put(tag(0, s)) }  // every lane's owner lives: the ring
        release.set(0)
        #expect(try holders[0].join(timeout: .seconds(10)))  // a lane's owner is dead now
        for s in 100..<200 { try handle.put(tag(0, s)) }  // the same thread, the same queue
        for i in 1..<8 { release.set(i) }
        for holder in holders { #expect(try holder.join(timeout: .seconds(10))) }
        var expected = [0: 200]
        for p in 1...8 { expected[p] = 1 }
        expectSequences(try drain(q), expected)
    }

    @Test("batch gets through a handle of another size meet a lane message: a typed error, nothing misplaced")
    func batchLeaveThenRingGet() throws {
        let wide = try Queue<Int>(ordering: .perProducer)  // lanes of 8-byte slots
        let narrow = try FoundationJSON.decode(Queue<Int32>.self, try FoundationJSON.encode(wide))
        try wide.put(7)  // this thread's lane
        try narrow.put(100)  // 4 bytes: the ring
        try narrow.put(200)
        var received: [Int32] = []
        var failures = 0
        for _ in 0..<10 {
            do {
                received += try narrow.get(max: 10, timeout: .milliseconds(200))
            } catch QueueError.decodingFailed {
                failures += 1  // the 8-byte 7, reported once
            } catch {
                #expect(error == .empty, "\(error)")  // never .corrupted
                break
            }
        }
        #expect(received == [100, 200])
        #expect(failures == 1)
        #expect(wide.count == 0 && narrow.count == 0)
    }

    // MARK: Found on the way (Process, not lanes)

    @Test(
        "a join whose child has exited returns before its timeout, while other threads start children",
        .enabled(if: mp_built_with_thread_sanitizer() == 0, "TSan: closure children forked from 3 threads at once"))
    func joinWhileOthersStartChildren() throws {
        // join(timeout:) polls the pidfd it read under the state lock; a start() on another thread
        // reaps finished children (Children.reapFinished) and closes that pidfd, and the next pidfd
        // opened can take its number: the poll then watches another child, until the timeout.
        let stalls = try SharedCounters(count: 2)  // [0] joins that stalled, [1] joins
        let threads = (0..<3).map { _ in
            Thread {
                for _ in 0..<30 where stalls.atomicLoad(0) == 0 {
                    let child = Process {}
                    try child.start()
                    let start = ContinuousClock.now
                    _ = try child.join(timeout: .seconds(5))
                    if ContinuousClock.now - start >= .seconds(4) { stalls.atomicAdd(0, 1) }
                    stalls.atomicAdd(1, 1)
                }
            }
        }
        for thread in threads { try thread.start() }
        for thread in threads { #expect(try thread.join(timeout: .seconds(60))) }
        #expect(stalls.atomicLoad(1) >= 30)
        #expect(stalls.atomicLoad(0) == 0, "a join slept until its timeout although its child had exited")
    }
}

// MARK: - Helpers

/// An item that names its producer and its place in that producer's sequence.
private func tag(_ producer: Int, _ sequence: Int) -> Int { producer << 32 | sequence }
private func producer(of item: Int) -> Int { item >> 32 }
private func sequence(of item: Int) -> Int { item & 0xFFFF_FFFF }

/// A queue's lanes where queue_internal.h lays them out (`struct mp_queue_lanes`, fixed there by
/// `_Static_assert`s; the struct is private to the C code): `used` at 0, `cursor` and `budget` at
/// 64 and 68, then lane i's header at 128 + 128 i, with the producer's `tail` at +0 and `owner` at
/// +16, and the consumers' `head` at +64. Read at rest only (after the writers are joined); a forked
/// child writes through it as a peer would, through the mapping it inherited.
struct LaneHeaders: @unchecked Sendable {
    static let count = 8
    static let headerBytes = 128 + 128 * count
    /// Keeps the mapping (and the view) alive as long as these pointers are used.
    private let channel: Channel
    let base: UnsafeMutableRawPointer
    let slots: UInt64

    init?<Element>(_ queue: Queue<Element>) {
        channel = queue.channel
        guard let lanes = channel.queue.pointee.lanes else { return nil }
        base = UnsafeMutableRawPointer(lanes)
        slots = channel.queue.pointee.lane_slots
    }

    var used: UInt32 {
        get { base.load(as: UInt32.self) }
        nonmutating set { base.storeBytes(of: newValue, as: UInt32.self) }
    }
    var cursor: UInt32 {
        get { base.load(fromByteOffset: 64, as: UInt32.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 64, as: UInt32.self) }
    }
    var budget: UInt32 {
        get { base.load(fromByteOffset: 68, as: UInt32.self) }
        nonmutating set { base.storeBytes(of: newValue, toByteOffset: 68, as: UInt32.self) }
    }
    var owners: [UInt32] { (0..<Self.count).map(owner) }

    private func lane(_ i: Int) -> Int { 128 + 128 * i }
    func tail(_ i: Int) -> UInt64 { base.load(fromByteOffset: lane(i), as: UInt64.self) }
    func owner(_ i: Int) -> UInt32 { base.load(fromByteOffset: lane(i) + 16, as: UInt32.self) }
    func head(_ i: Int) -> UInt64 { base.load(fromByteOffset: lane(i) + 64, as: UInt64.self) }
    func setTail(_ i: Int, _ value: UInt64) { base.storeBytes(of: value, toByteOffset: lane(i), as: UInt64.self) }
    func setOwner(_ i: Int, _ value: UInt32) { base.storeBytes(of: value, toByteOffset: lane(i) + 16, as: UInt32.self) }
    func setHead(_ i: Int, _ value: UInt64) { base.storeBytes(of: value, toByteOffset: lane(i) + 64, as: UInt64.self) }
}

extension SharedCounters {
    /// Slot `i` as an atomic: a flag or a handshake word between threads and processes.
    fileprivate func atomicLoad(_ i: Int) -> Int { atomic(i).pointee.load(ordering: .acquiring) }
    fileprivate func atomicStore(_ i: Int, _ value: Int) { atomic(i).pointee.store(value, ordering: .releasing) }
    fileprivate func atomicAdd(_ i: Int, _ value: Int) {
        atomic(i).pointee.wrappingAdd(value, ordering: .acquiringAndReleasing)
    }
    private func atomic(_ i: Int) -> UnsafeMutablePointer<Atomic<Int>> {
        (memory.buffer.baseAddress! + i * MemoryLayout<Int>.stride).assumingMemoryBound(to: Atomic<Int>.self)
    }
}

/// A one-way flag between the threads of this process.
private final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
    /// Waits until the flag is set or `limit` passes.
    func wait(upTo limit: Duration) {
        let end = ContinuousClock.now + limit
        while !isSet, ContinuousClock.now < end { usleep(1000) }
    }
}

/// One flag per thread.
private final class Flags: Sendable {
    private let flags: [Flag]
    init(count: Int) { flags = (0..<count).map { _ in Flag() } }
    func set(_ i: Int) { flags[i].set() }
    func wait(_ i: Int, upTo limit: Duration) { flags[i].wait(upTo: limit) }
}

/// What one consumer thread took, in order (written by that thread only; read once it is joined).
private final class Arrivals: @unchecked Sendable {
    var items: [Int] = []

    /// Takes items until `done` was set before a get that found the queue empty (every producer had
    /// returned from its last put by then), or 60 s pass.
    func drain(_ q: Queue<Int>, until done: Flag) {
        let end = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < end {
            let finishing = done.isSet
            do {
                items.append(try q.get(timeout: .milliseconds(100)))
            } catch QueueError.empty {
                if finishing { return }
            } catch {
                Issue.record("a get threw \(error)")
                return
            }
        }
        Issue.record("the consumer was still taking items after 60 s")
    }
}

/// The consumers that have announced themselves asleep on `queue` (its header's `data_sleepers`).
private func sleepers(_ queue: Queue<Int>, _ field: KeyPath<mp_queue_t, UInt32> = \.data_sleepers) -> UInt32 {
    withExtendedLifetime(queue) {
        let word = UnsafeMutableRawPointer(queue.channel.header) + MemoryLayout<mp_queue_t>.offset(of: field)!
        return word.assumingMemoryBound(to: Atomic<UInt32>.self).pointee.load(ordering: .relaxed)
    }
}

/// Whether `queue` has lanes (read while the queue, which owns its view, is alive).
private func hasLanes<Element>(_ queue: Queue<Element>) -> Bool {
    withExtendedLifetime(queue) { queue.channel.queue.pointee.lanes != nil }
}

/// Everything left in a queue whose producers have all returned.
private func drain(_ q: Queue<Int>) throws(QueueError) -> [Int] {
    var items: [Int] = []
    while items.count < 10_000_000, let item = try take(q, timeout: .milliseconds(100)) { items.append(item) }
    return items
}

/// The next item, or nil if none came within `timeout`.
private func take(_ q: Queue<Int>, timeout: Duration) throws(QueueError) -> Int? {
    do {
        return try q.get(timeout: timeout)
    } catch {
        if error == .empty { return nil }
        throw error
    }
}

/// Checks that `items` holds each producer's sequence 0, 1, 2, ... without a gap or a repeat, and,
/// with `expected`, exactly that many of each producer and no other; returns the count of each.
@discardableResult
private func expectSequences(
    _ items: [Int], _ expected: [Int: Int]?, sourceLocation: SourceLocation = #_sourceLocation
) -> [Int: Int] {
    var next: [Int: Int] = [:]
    var faults = 0
    for (index, item) in items.enumerated() {
        let p = producer(of: item)
        let s = sequence(of: item)
        if let expected, expected[p] == nil || item < 0 {
            faults += 1
            if faults <= 5 { Issue.record("item \(index) is \(item): no producer's", sourceLocation: sourceLocation) }
            continue
        }
        if s != next[p, default: 0] {
            faults += 1
            if faults <= 5 {
                Issue.record(
                    "item \(index): producer \(p)'s \(s) where \(next[p, default: 0]) was due",
                    sourceLocation: sourceLocation)
            }
        }
        next[p] = max(next[p, default: 0], s + 1)
    }
    for (p, count) in expected ?? [:] {
        #expect(
            next[p, default: 0] == count, "producer \(p): \(next[p, default: 0]) of \(count)",
            sourceLocation: sourceLocation)
    }
    #expect(faults == 0, "\(faults) items out of place", sourceLocation: sourceLocation)
    return next
}

/// Per consumer and producer, in shared memory: [count, last sequence + 1, sum of sequences, order
/// violations]; then a "producers done" word and a failure count.
private struct Tally: @unchecked Sendable {
    static let width = 4
    let stats: SharedCounters
    let producers: Int
    let consumers: Int
    private var doneSlot: Int { consumers * producers * Self.width }

    init(producers: Int, consumers: Int) throws {
        stats = try SharedCounters(count: consumers * producers * Self.width + 2)
        self.producers = producers
        self.consumers = consumers
    }

    func record(_ consumer: Int, _ item: Int) {
        let p = producer(of: item)
        let s = sequence(of: item)
        guard item >= 0, p < producers else { return fail() }
        let base = (consumer * producers + p) * Self.width
        stats[base] += 1
        if s + 1 <= stats[base + 1] { stats[base + 3] += 1 }  // out of order, or a repeat
        stats[base + 1] = s + 1
        stats[base + 2] += s
    }

    func fail() { stats.atomicStore(doneSlot + 1, stats.atomicLoad(doneSlot + 1) + 1) }
    func finish() { stats.atomicStore(doneSlot, 1) }
    var finished: Bool { stats.atomicLoad(doneSlot) != 0 }
    var failures: Int { stats.atomicLoad(doneSlot + 1) }
    /// Items of producer `p` that consumer `c` got twice or out of order.
    func repeats(of p: Int, at c: Int) -> Int { stats[(c * producers + p) * Self.width + 3] }
    /// The items consumer `c` took (read after the consumers are joined).
    func taken(by c: Int) -> Int { (0..<producers).reduce(0) { $0 + stats[(c * producers + $1) * Self.width] } }

    func check(perProducer n: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(
            stats.atomicLoad(doneSlot + 1) == 0, "failed puts, joins or foreign items", sourceLocation: sourceLocation)
        for p in 0..<producers {
            var count = 0
            var sum = 0
            for c in 0..<consumers {
                let base = (c * producers + p) * Self.width
                count += stats[base]
                sum += stats[base + 2]
                #expect(
                    stats[base + 3] == 0, "producer \(p)'s order broken at consumer \(c)",
                    sourceLocation: sourceLocation)
            }
            #expect(count == n, "producer \(p): \(count) of \(n) arrived", sourceLocation: sourceLocation)
            #expect(sum == n * (n - 1) / 2, "producer \(p): lost or repeated items", sourceLocation: sourceLocation)
        }
    }
}

extension QueueLaneTests {
    /// A consumer of `tally` that takes items `take` at a time until the producers
    /// are done and the queue is empty (`take` returns none or throws `empty`).
    fileprivate static func consume(_ tally: Tally, consumer: Int, take: () throws(QueueError) -> [Int]) {
        let end = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < end {
            let finishing = tally.finished
            do {
                let items = try take()
                for item in items { tally.record(consumer, item) }
                if items.isEmpty, finishing { return }
            } catch .empty {
                if finishing { return }
            } catch {
                return tally.fail()
            }
        }
        tally.fail()
    }

    /// A consumer of `tally`: takes items until the producers are done and the queue is empty.
    fileprivate static func consume(_ q: Queue<Int>, _ tally: Tally, consumer: Int) {
        let end = ContinuousClock.now + .seconds(90)
        while ContinuousClock.now < end {
            let finishing = tally.finished
            do {
                tally.record(consumer, try q.get(timeout: .milliseconds(100)))
            } catch QueueError.empty {
                if finishing { return }
            } catch {
                return tally.fail()
            }
        }
        tally.fail()
    }
}

/// Puts `perProducer` items from each of `producers` threads while this thread takes them; checks
/// each item whole and each producer's in order.
private func expectRoundTrip<E: Sendable>(
    _ q: Queue<E>, producers: Int, perProducer: Int, make: @escaping @Sendable (Int, Int) -> E,
    read: (E) -> (producer: Int, sequence: Int, valid: Bool), sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let threads = (0..<producers).map { p in
        Thread { for s in 0..<perProducer { try q.put(make(p, s), timeout: .seconds(30)) } }
    }
    for thread in threads { try thread.start() }
    var next = [Int](repeating: 0, count: producers)
    var faults = 0
    for _ in 0..<(producers * perProducer) {
        let (p, s, valid) = read(try q.get(timeout: .seconds(30)))
        if !valid || p < 0 || p >= producers || next[p] != s {
            faults += 1
            continue
        }
        next[p] += 1
    }
    for thread in threads { #expect(try thread.join(timeout: .seconds(30)), sourceLocation: sourceLocation) }
    #expect(faults == 0, "\(faults) items torn or out of place", sourceLocation: sourceLocation)
    #expect(next == [Int](repeating: perProducer, count: producers), sourceLocation: sourceLocation)
}

/// 13 bytes (an odd slot size, 16 apart in a lane).
private struct Odd13 {
    var word: UInt64
    var half: UInt32
    var byte: UInt8
    init(_ producer: Int, _ sequence: Int) {
        word = UInt64(producer) << 32 | UInt64(sequence)
        half = UInt32(truncatingIfNeeded: sequence &* 7)
        byte = UInt8(truncatingIfNeeded: producer &+ sequence)
    }
    var read: (producer: Int, sequence: Int, valid: Bool) {
        let p = Int(word >> 32)
        let s = Int(word & 0xFFFF_FFFF)
        return (p, s, half == UInt32(truncatingIfNeeded: s &* 7) && byte == UInt8(truncatingIfNeeded: p &+ s))
    }
}

/// 512 bytes, the largest element that travels in lanes; every word names its producer and sequence.
private struct Block512 {
    var words: SIMD64<UInt64>
    init(_ producer: Int, _ sequence: Int) {
        words = SIMD64(repeating: UInt64(producer) << 32 | UInt64(sequence))
        for i in 0..<64 { words[i] &+= UInt64(i) << 56 }
    }
    var read: (producer: Int, sequence: Int, valid: Bool) {
        let first = words[0]
        let valid = (0..<64).allSatisfy { words[$0] == first &+ UInt64($0) << 56 }
        return (Int(first >> 32 & 0xFF_FFFF), Int(first & 0xFFFF_FFFF), valid)
    }
}

/// 576 bytes: over the lanes' limit of 512.
private struct Block576 {
    var words: SIMD64<UInt64>
    var more: SIMD8<UInt64>
}
