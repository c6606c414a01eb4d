import CMultiprocessing
import Glibc
import Synchronization
import Testing

@testable import Multiprocessing

/// What the lanes' straight paths remember per thread (mp_queue_straight.h): a producer's choice
/// and a consumer's turn, each holding pointers into the view (the handle's mapping) it was made
/// through, and keyed by that view alone. These tests use several handles of one queue in one
/// process, release one while the thread's choice and turn point into it, and switch a consumer
/// between queues, which must neither lose order nor starve a lane.
@Suite("Queue lanes: a thread's choice and turn across handles and queues")
struct QueueLaneTurnTests {
    @Test("puts and gets alternating between two handles of one queue, one released midway: FIFO, nothing lost")
    func twoHandlesOneProcess() throws {
        let first = try Queue<Int>(ordering: .perProducer)
        var second: Queue<Int>? = try FoundationJSON.decode(Queue<Int>.self, try FoundationJSON.encode(first))
        var got: [Int] = []
        for round in 0..<20 {
            for s in 0..<64 {
                let handle = (s + round) % 2 == 0 ? first : second!
                try handle.put(round * 64 + s)
            }
            for s in 0..<32 {
                let handle = s % 3 == 0 ? second! : first
                got.append(try handle.get(timeout: .seconds(5)))
            }
        }
        // This thread's last choice and turn were made through `second`: released, its mapping may
        // go with it, and neither may be used again.
        second = nil
        for s in 1280..<1400 { try first.put(s) }
        while got.count < 1400 { got.append(try first.get(timeout: .seconds(5))) }
        #expect(got == Array(0..<1400))
        #expect(throws: QueueError.empty) { try first.getNowait() }
    }

    @Test("a put of another size through a lanes handle never lands in the lane another handle's choice points to")
    func otherSizeNeverMatchesAnotherHandlesChoice() throws {
        // The straight put's one test combines the handle's key with the message's size: a message
        // of another size than the slots' (a handle decoded with another element type, whose puts
        // reach mp_queue_put whenever the ring's straight put finds the producer lock busy) must
        // fail it, whatever the thread's last choice. Handles of 8-byte slots and 4-byte messages:
        // find one whose key, combined with 8 ^ 4, names another queue's handle, if keys allow it.
        let target = try Queue<Int64>(ordering: .perProducer)
        let encoded = try FoundationJSON.encode(target)
        // Handles made one by one until one of 4-byte elements has the number (its `lane_nonce`)
        // that a handle of 8-byte slots has, combined with 8 ^ 4: all kept alive to the end.
        var others: [Queue<Int64>] = []
        var narrow: [Queue<Int32>] = []
        var pair: (Queue<Int64>, Queue<Int32>)? = nil
        search: for _ in 0..<32 {
            let other = try Queue<Int64>(maxSize: nil, capacity: 1 << 16, ordering: .perProducer)
            others.append(other)
            let want = other.q.pointee.lane_nonce ^ (8 ^ 4)
            if want < other.q.pointee.lane_nonce { continue }
            while true {
                let handle = try FoundationJSON.decode(Queue<Int32>.self, encoded)
                narrow.append(handle)
                if handle.q.pointee.lane_nonce == want {
                    pair = (other, handle)
                    break search
                }
                if handle.q.pointee.lane_nonce > want { break }
            }
        }
        let (other, handle) = try #require(pair)
        let outcome = Locked<[String]>([])
        let producer = Thread {
            try other.put(7)  // claims a lane of `other`: the thread's last choice
            var value: Int32 = 42
            let status = mp_queue_put(handle.q, &value, 4, mp_monotonic_ns() + 5_000_000_000)
            outcome.withLock { $0.append(status == MP_OK ? "ok" : "status \(status)") }
        }
        try producer.start()
        #expect(try producer.join(timeout: .seconds(30)))
        #expect(outcome.withLock { $0 } == ["ok"])
        // The 4-byte message went to `target`'s ring, and `other` holds its one message alone.
        #expect((try? handle.getNowait()) == 42)
        var inOther: [Int64] = []
        while let item = try? other.getNowait() { inOther.append(item) }
        #expect(inOther == [7])
        withExtendedLifetime((others, narrow)) {}
    }

    @Test("a consumer that alternates between two queues still takes every lane of each in turn")
    func alternatingConsumerRotates() throws {
        let a = try Queue<Int>(ordering: .perProducer)
        let b = try Queue<Int>(ordering: .perProducer)
        let release = TurnFlag()
        // Two producers fill a lane each of `a`, one fills a lane of `b`; all stay alive (their lanes
        // stay theirs) until the end.
        let producers = [(a, 1), (a, 2), (b, 3)].map { queue, p in
            Thread {
                for s in 0..<1000 { try queue.put(p << 32 | s) }
                release.wait(upTo: .seconds(60))
            }
        }
        for producer in producers { try producer.start() }
        defer {
            release.set()
            for producer in producers { _ = try? producer.join(timeout: .seconds(30)) }
        }
        #expect(eventually(timeout: .seconds(30)) { a.count == 2000 && b.count == 1000 })
        // Taking from `a` and `b` in turn: every get from `a` is a new turn there. Both of its lanes
        // are heard from within two lanes' budgets (64 each) and a few more.
        var fromA: [Int] = []
        for _ in 0..<300 {
            fromA.append(try a.get(timeout: .seconds(5)))
            _ = try b.get(timeout: .seconds(5))
        }
        let heard = Set(fromA.prefix(2 * 65 + 8).map { $0 >> 32 })
        #expect(heard == [1, 2], "only \(heard.sorted()) heard from in \(2 * 65 + 8) gets")
        // Per producer, FIFO.
        for p in [1, 2] {
            let mine = fromA.filter { $0 >> 32 == p }.map { $0 & 0xFFFF_FFFF }
            #expect(mine == Array(0..<mine.count))
        }
    }

    @Test("a turn renewed while nothing else waits still yields to a ring message within one budget")
    func renewedTurnYieldsToTheRing() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        // A thread that stays alive owns lanes 1 to 7 (written as a claim would), so that a second
        // producer finds no lane and puts into the ring, while consumers look at lane 0 alone.
        let holderTid = TurnWord()
        let release = TurnFlag()
        let holder = Thread {
            holderTid.store(Int(mp_thread_id()))
            release.wait(upTo: .seconds(60))
        }
        try holder.start()
        defer {
            release.set()
            _ = try? holder.join(timeout: .seconds(30))
        }
        #expect(eventually(timeout: .seconds(20)) { holderTid.load() != 0 })
        for s in 0..<1000 { try q.put(s) }  // this thread claims lane 0
        #expect(lanes.used == 1)
        for i in 1..<LaneHeaders.count {
            lanes.base.storeBytes(of: UInt32(holderTid.load()), toByteOffset: 128 + 128 * i + 16, as: UInt32.self)
        }
        // Past several budgets with nothing else waiting: the turn on lane 0 is renewed.
        for s in 0..<300 { #expect(try q.get(timeout: .seconds(5)) == s) }
        let ringProducer = Thread { try q.put(-1) }
        try ringProducer.start()
        #expect(try ringProducer.join(timeout: .seconds(30)))
        #expect(lanes.used == 1, "the second producer took a lane")
        var gets = 0
        var next = 300
        var ringTaken = false
        while gets < 700 {
            let item = try q.get(timeout: .seconds(5))
            gets += 1
            if item == -1 {
                ringTaken = true
                break
            }
            #expect(item == next)
            next += 1
        }
        #expect(ringTaken)
        #expect(gets <= 65, "the ring's message waited \(gets) gets")
        while next < 1000 {
            #expect(try q.get(timeout: .seconds(5)) == next)
            next += 1
        }
    }
}

private final class TurnFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    /// Waits until the flag is set or `limit` passes.
    func wait(upTo limit: Duration) {
        let end = ContinuousClock.now + limit
        while !value.load(ordering: .acquiring), ContinuousClock.now < end { usleep(1000) }
    }
}

private final class TurnWord: Sendable {
    private let value = Atomic<Int>(0)
    func load() -> Int { value.load(ordering: .acquiring) }
    func store(_ v: Int) { value.store(v, ordering: .releasing) }
}
