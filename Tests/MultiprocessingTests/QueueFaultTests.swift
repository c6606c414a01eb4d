import CMultiprocessing
import MultiprocessingTestTargets
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// A message that spans about a hundred records of a 4 KiB ring (whose records hold 1016 bytes).
private let streamed = [UInt8](repeating: 7, count: 100_000)

/// Queues whose other side stops, gives up or dies at the worst moment.
@Suite("Queue faults")
struct QueueFaultTests {
    @Test("shutdown while a message is half-streamed and its producer gave up: the reader drops it")
    func shutdownAfterProducerGaveUp() throws {
        let q = try Queue<[UInt8]>(capacity: 4096)
        let producer = Thread { #expect(throws: QueueError.shutDown) { try q.put(streamed) } }
        try producer.start()
        #expect(eventually { q.count == 1 })  // the message has started: the ring fills, the producer waits
        try sleep(for: .milliseconds(50))
        q.shutdown()  // the producer gives up midway: nobody will write the rest
        #expect(try producer.join(timeout: .seconds(20)))
        let code = try runInChild(timeout: .seconds(20)) {
            do {
                _ = try q.get(timeout: .seconds(5))
                exit(2)  // a message that was never completed
            } catch QueueError.shutDown {
                exit(0)  // the fragments were dropped; then the drained queue reports the shutdown
            }
        }
        #expect(code == 0)
    }

    @Test("shutdown while a live producer is stopped mid-message: the reader waits asleep, not spinning")
    func shutdownWhileProducerStopped() throws {
        let q = try Queue<[UInt8]>(capacity: 4096)
        let outcome = try SharedCounters(count: 2)
        // What the children run, run here first (the fork hazard: see lockMixed).
        try q.put([7], timeout: .seconds(5))
        _ = try q.get(timeout: .seconds(5)) == streamed
        let producer = Process { try? q.put(streamed) }
        try producer.start()
        #expect(eventually { q.count == 1 })
        try sleep(for: .milliseconds(50))
        try producer.signal(SIGSTOP)  // alive, holding the producer lock, midway through the message
        q.shutdown()
        let consumer = Process {
            do {
                outcome[0] = try q.get(timeout: .seconds(30)) == streamed ? 1 : 2
            } catch QueueError.shutDown {
                outcome[0] = 3
            }
        }
        try consumer.start()
        try sleep(for: .milliseconds(100))  // the consumer has read what the ring held and waits for more
        let before = cpuTicks(consumer.pid!)
        try sleep(for: .milliseconds(500))
        let used = cpuTicks(consumer.pid!) - before
        #expect(used < 10, "a waiting consumer used \(used) ticks of CPU in 500 ms")
        try producer.signal(SIGCONT)
        if try !consumer.join(timeout: .seconds(30)) { try consumer.kill() }
        _ = try producer.join(timeout: .seconds(30))
        #expect(consumer.exitCode == 0)
        #expect(outcome[0] == 1 || outcome[0] == 3)  // the whole message, or dropped after the shutdown
    }

    @Test("a producer killed mid-message: the next put keeps its timeout; nothing is lost or doubled")
    func killedProducerKeepsTimeouts() throws {
        let q = try Queue<[UInt8]>(capacity: 4096)
        let producer = Process { try q.put(streamed) }
        try producer.start()
        #expect(eventually { q.count == 1 })
        try sleep(for: .milliseconds(50))
        try producer.kill()
        try producer.join()
        // The ring is full of the dead producer's fragments: no room for the record that drops them.
        let code = try runInChild(timeout: .seconds(20)) {
            do {
                try q.put([1], timeout: .milliseconds(200))
                exit(2)
            } catch QueueError.full {
                exit(0)
            }
        }
        #expect(code == 0)
        #expect(throws: QueueError.empty) { _ = try q.get(timeout: .milliseconds(300)) }  // fragments dropped
        try q.put([3], timeout: .seconds(5))
        #expect(try q.get(timeout: .seconds(5)) == [3])
        #expect(throws: QueueError.empty) { _ = try q.getNowait() }
        #expect(q.count == 0)
    }

    @Test("getNowait, putNowait and short timeouts take a queue's locks over from a SIGKILLed holder")
    func nowaitAfterKilledHolder() throws {
        let q = try Queue<Int>(maxSize: 1)
        // A consumer waiting on the empty queue holds the consumer lock; kill it.
        let consumer = Process { _ = try q.get() }
        try consumer.start()
        #expect(eventually { mp_mutex_owner(&q.channel.header.pointee.consumer) == consumer.pid! })
        try consumer.kill()
        try consumer.join()
        try q.put(1)
        #expect(try q.getNowait() == 1)

        // A producer waiting on the full queue holds the producer lock; kill it.
        try q.put(2)
        let producer = Process { try q.put(99) }
        try producer.start()
        #expect(eventually { mp_mutex_owner(&q.channel.header.pointee.producer) == producer.pid! })
        try producer.kill()
        try producer.join()
        #expect(try q.get(timeout: .seconds(5)) == 2)
        try q.putNowait(3)
        #expect(try q.get(timeout: .seconds(5)) == 3)

        // The same with a timeout shorter than the owner-check period.
        let again = Process { _ = try q.get() }
        try again.start()
        #expect(eventually { mp_mutex_owner(&q.channel.header.pointee.consumer) == again.pid! })
        try again.kill()
        try again.join()
        try q.put(4)
        #expect(try q.get(timeout: .milliseconds(2)) == 4)
        #expect(q.count == 0)
    }

    @Test("a record's u32 size can never overflow, whatever the capacity; too large a ring is a typed error")
    func recordSizeLimit() throws {
        var view = mp_queue_view_t()
        for shift in 12...40 {
            view.capacity = 1 << UInt64(shift)
            let max = mp_queue_max_record(&view)
            #expect(max < 1 << 31, "a ring of 2^\(shift) bytes allows records of \(max) bytes")
            #expect(max % 8 == 0)
        }
        let tooLarge = Channel.maximumCapacity + 1
        #expect(throws: QueueError.invalidCapacity(tooLarge)) { try Queue<Int>(capacity: tooLarge) }
    }

    @Test(
        "a consumer killed between counting a message and releasing it: the message comes again, counted once",
        .enabled(if: mp_fault_arm(0) == 1))
    func consumerKilledWhileCounting() throws {
        let q = try Queue<Int>(maxSize: 2)
        try q.put(1)
        try q.put(2)
        let consumer = Process {
            _ = mp_fault_arm(MP_FAULT_QUEUE_COUNTED)
            _ = try q.get()
        }
        try consumer.start()
        #expect(try consumer.join(timeout: .seconds(20)))
        #expect(consumer.exitCode == -SIGKILL)
        // Until the message is read again the count is one low (the dead consumer's count landed).
        #expect(try q.get(timeout: .seconds(5)) == 1)  // never returned to the dead consumer: delivered again
        #expect(q.count == 1)  // and not counted a second time
        try q.put(3)
        #expect(throws: QueueError.full) { try q.putNowait(4) }  // two messages: the bound holds exactly
        #expect(try q.get(timeout: .seconds(5)) == 2)
        #expect(try q.get(timeout: .seconds(5)) == 3)
        #expect(q.count == 0)
    }

    @Test(
        "a batch get killed between counting its messages and releasing them: the next gets take them all again, counted once",
        .enabled(if: mp_fault_arm(0) == 1))
    func batchKilledWhileCounting() throws {
        // A ring batch counts its messages, the first one included, once at its end: killed there.
        let q = try Queue<Int>(maxSize: 4)
        try killOneBatchAsItCounts(q, bound: 4, batch: 3) { $0 }
        for i in 5...8 { try q.put(i, timeout: .seconds(5)) }
        #expect(throws: QueueError.full) { try q.putNowait(9) }  // four messages: the bound holds exactly
        #expect(try q.get(max: 8, timeout: .seconds(5)) == [5, 6, 7, 8])  // and a batch counts them
        #expect(q.count == 0)
        try q.put(10)
        #expect(try q.get(timeout: .seconds(5)) == 10)
    }

    @Test(
        "an encoded batch get killed as it counts: it has taken none of its messages; the next batch takes them, counted once",
        .enabled(if: mp_fault_arm(0) == 1))
    func encodedBatchKilledWhileCounting() throws {
        // A batch of encoded messages reads them ahead of the head, decoding each where it lies,
        // and counts them once, at its end: killed there.
        let q = try Queue<String>(maxSize: 6)
        try killOneBatchAsItCounts(q, bound: 6, batch: 4) { "m\($0)" }
        try q.put("m13", timeout: .seconds(5))
        #expect(try q.get(max: 3, timeout: .seconds(5)) == ["m13"])
    }

    /// A queue bounded at `bound` filled with messages 1...bound (`message`), a consumer process
    /// killed as its `get(max: batch)` counts: the count, the bound, and the next batches' messages.
    private func killOneBatchAsItCounts<E: Sendable & Equatable>(
        _ q: Queue<E>, bound: Int, batch: Int, _ message: (Int) -> E
    ) throws {
        // What the child runs, run here first (the fork hazard: see lockMixed).
        try q.put(message(0), timeout: .seconds(5))
        _ = try q.get(max: batch, timeout: .seconds(5))
        for i in 1...bound { try q.put(message(i), timeout: .seconds(5)) }
        let consumer = Process {
            _ = mp_fault_arm(MP_FAULT_QUEUE_COUNTED)
            _ = try q.get(max: batch)
        }
        try consumer.start()
        #expect(try consumer.join(timeout: .seconds(20)))
        #expect(consumer.exitCode == -SIGKILL)
        #expect(q.count == bound - batch)  // the dead consumer's count of its batch landed
        // Until they are taken again, its messages are off the count: the bound admits that many more.
        for i in bound + 1...bound + batch { try q.put(message(i), timeout: .seconds(5)) }
        #expect(throws: QueueError.full) { try q.putNowait(message(0)) }
        // A batch takes the dead one's messages again, not counting them again, and ends with them
        // (it counts nothing while they are at the head); the next batch counts the rest.
        #expect(try q.get(max: 2 * bound, timeout: .seconds(5)) == (1...batch).map(message))
        #expect(q.count == bound)
        #expect(try q.get(max: 2 * bound, timeout: .seconds(5)) == (batch + 1...bound + batch).map(message))
        #expect(q.count == 0)
    }

    @Test(
        "a batch get killed after its first messages: none of them is lost, each is counted once",
        .enabled(if: mp_fault_arm(0) == 1))
    func batchKilledMidway() throws {
        // A consumer is killed as it counts each of its batches (sizes 1 to 7): the next consumer
        // finds the batch's messages still there, and the count drops once for them. 16-byte values
        // in 24-byte records through a 4 KiB ring: batches wrap at its end, past PAD records.
        try killBatchesAsTheyCount(try Queue<Pair>(maxSize: 100, capacity: 4096), bound: 100, total: 400, Pair.init)
    }

    @Test(
        "encoded batch gets killed as they count: none of their messages is lost, each is counted once",
        .enabled(if: mp_fault_arm(0) == 1))
    func encodedBatchKilledMidway() throws {
        // The same with strings of 2 to 40 bytes: records of many sizes, PADs where they wrap.
        try killBatchesAsTheyCount(try Queue<String>(maxSize: 60, capacity: 4096), bound: 60, total: 300) {
            "\($0):" + String(repeating: "x", count: $0 % 37)
        }
    }

    /// 40 rounds: the queue filled up to `bound` (from `total` messages made by `message`), then a
    /// consumer process killed as it counts its `get(max:)` of 1 to 7, and the same batch taken
    /// again; at the end, every message has arrived once, in order, whole.
    private func killBatchesAsTheyCount<E: Sendable & Equatable>(
        _ q: Queue<E>, bound: Int, total: Int, _ message: (Int) -> E
    ) throws {
        var next = 0
        var received: [E] = []
        // What the children run, run here first (the fork hazard: see lockMixed).
        try q.put(message(0), timeout: .seconds(5))
        _ = try q.get(max: 1, timeout: .seconds(5))
        for round in 0..<40 {
            while q.count < bound && next < total {
                try q.put(message(next), timeout: .seconds(5))
                next += 1
            }
            let batch = 1 + round % 7
            let before = q.count
            let consumer = Process {
                _ = mp_fault_arm(MP_FAULT_QUEUE_COUNTED)
                _ = try q.get(max: batch)
            }
            try consumer.start()
            #expect(try consumer.join(timeout: .seconds(20)))
            #expect(consumer.exitCode == -SIGKILL)
            #expect(q.count == before - batch)  // the dead batch's count landed
            received += try q.get(max: batch, timeout: .seconds(5))  // the same messages, whole
            #expect(q.count == before - batch)  // and they are not counted again
        }
        while q.count > 0 { received += try q.get(max: 64, timeout: .seconds(5)) }
        #expect(received == (0..<next).map(message))  // in order, none lost, none twice, none torn
        #expect(q.count == 0)
        #expect(throws: QueueError.empty) { try q.getNowait() }
    }

    /// A 16-byte value (a 24-byte record, which does not divide a ring's size: PADs).
    struct Pair: BitwiseCopyable, Sendable, Equatable {
        var value: Int
        var check: Int
        init(_ value: Int) { (self.value, check) = (value, ~value) }
    }

    @Test(
        "a lanes queue's batch get killed as it counts a run of ring messages: the next batch takes the run again, counted once",
        .enabled(if: mp_fault_arm(0) == 1))
    func lanesBatchKilledWhileCounting() throws {
        let q = try Queue<Int>(ordering: .perProducer)
        let lanes = try #require(LaneHeaders(q))
        // Every lane owned by a live thread (this process's main one, as a peer would write it): a
        // new producer thread finds none free and puts into the ring.
        let live = UInt32(getpid())
        #expect(try runInChild(timeout: .seconds(20)) { for i in 0..<8 { lanes.setOwner(i, live) } } == 0)
        let producer = Thread { for i in 1...12 { try q.put(i, timeout: .seconds(10)) } }
        try producer.start()
        #expect(try producer.join(timeout: .seconds(10)))
        #expect(lanes.used == 0)
        #expect((0..<8).allSatisfy { lanes.tail($0) == 0 })  // all twelve are in the ring
        #expect(q.count == 12)
        let consumer = Process {
            // A lanes batch counts its first message alone as it hands it back (the first pass),
            // then the ring run after it at once (the second): killed there, 2...4 counted, not taken.
            _ = mp_fault_arm_after(MP_FAULT_QUEUE_COUNTED, 1)
            _ = try q.get(max: 4)
        }
        try consumer.start()
        #expect(try consumer.join(timeout: .seconds(20)))
        #expect(consumer.exitCode == -SIGKILL)
        #expect(q.count == 8)  // 1 taken, and the dead consumer's count of the run 2...4 landed
        // The next batch takes 2...4 again one by one, uncounted, then counts a run of the rest:
        // a run from inside the counted ones would have left 5...7 uncounted.
        #expect(try q.get(max: 6, timeout: .seconds(5)) == Array(2...7))
        #expect(q.count == 5)
        #expect(try q.get(max: 8, timeout: .seconds(5)) == Array(8...12))
        #expect(q.count == 0)
        #expect(throws: QueueError.empty) { try q.getNowait() }
    }

    @Test(
        "a consumer killed at every step of a streamed message: the next consumer gets it whole, once",
        .enabled(if: mp_fault_arm(0) == 1))
    func consumerKilledAtEveryStreamStep() throws {
        useTestHelper()
        // 20 000 bytes through a 4 KiB ring: a FIRST and about 20 fragments. The steps are the
        // reader's announcement, reading the FIRST, each record read, and handing back part of it
        // to wait; 24 steps is a few more than that, so a few consumers live through their message.
        let message = StreamedMessages.block
        // 1 000 rounds; fewer under the sanitizers, which slow every process start a lot.
        let rounds =
            getenv("MP_STREAM_FAULT_ROUNDS").flatMap { Int(String(cString: $0)) }
            ?? (runningUnderSanitizer ? 96 : 1_000)
        let steps = 24
        let q = try Queue<[UInt8]>(capacity: 4096)
        let seen = try SharedMemory(size: 64)
        var killed = 0
        for round in 0..<rounds {
            let producer = Thread { try q.put(message) }
            try producer.start()
            seen.buffer.storeBytes(of: 0, as: Int.self)
            let job = StreamConsumerJob(
                queue: q, seen: seen, row: 0, count: 1, dieAfter: UInt32(round % steps), single: true)
            let consumer = Process(name: "stream-consumer", target: TestTargets.streamConsumer, argument: job)
            try consumer.start()
            if try !consumer.join(timeout: .seconds(30)) {
                Issue.record("round \(round): the consumer did not finish")
                try consumer.kill()
                try consumer.join()
            }
            if consumer.exitCode == 0 {
                #expect(seen.buffer.load(as: Int.self) == 1, "round \(round): the consumer got it whole")
            } else {
                #expect(consumer.exitCode == -SIGKILL)
                killed += 1
                #expect(try q.get(timeout: .seconds(20)) == message, "round \(round): the message is whole")
            }
            #expect(try producer.join(timeout: .seconds(20)), "round \(round): the put returned")
            #expect(throws: QueueError.empty) { try q.getNowait() }  // and it came once
            #expect(q.count == 0)
        }
        #expect(killed > rounds * 3 / 4)  // the fault points were passed: most consumers died
    }

    @Test(
        "2 000 streamed messages, consumers SIGKILLed at random points of their streams: none lost, none doubled",
        .enabled(if: mp_fault_arm(0) == 1))
    func randomConsumerKills() throws {
        useTestHelper()
        let count = runningUnderSanitizer ? 300 : 2_000
        let lives = runningUnderSanitizer ? 40 : 200
        let q = try Queue<[UInt8]>(capacity: 4096)
        let seen = try SharedMemory(size: lives * count * MemoryLayout<Int>.stride)  // a row per life
        let producer = Thread { for i in 0..<count { try q.put(StreamedMessages.message(i)) } }
        try producer.start()
        var random = SplitMix(seed: 0x5EED)
        var life = 0
        func consumer(dieAfter passes: UInt32?) throws -> Process {
            let job = StreamConsumerJob(queue: q, seen: seen, row: life, count: count, dieAfter: passes, single: false)
            life += 1
            let p = Process(name: "stream-consumer", target: TestTargets.streamConsumer, argument: job)
            try p.start()
            return p
        }
        var running = [try consumer(dieAfter: UInt32(random.next() % 300)), try consumer(dieAfter: 7)]
        let end = ContinuousClock.now + .seconds(600)  // a stall fails the test, not the suite
        while life < lives - 1 && ContinuousClock.now < end {
            for (k, p) in running.enumerated() where try p.join(timeout: .milliseconds(5)) {
                #expect(p.exitCode == -SIGKILL || p.exitCode == 0, "a consumer saw a torn message")
                running[k] = try consumer(dieAfter: UInt32(random.next() % 300))
                if life == lives - 1 { break }
            }
            if try producer.join(timeout: .zero) { break }
        }
        running.append(try consumer(dieAfter: nil))  // one that lives: it drains what is left
        #expect(try producer.join(timeout: .seconds(120)))
        for p in running where try !p.join(timeout: .seconds(60)) {
            try p.kill()
            try p.join()
            Issue.record("a consumer did not finish")
        }
        let counts = seen.buffer.bindMemory(to: Int.self)
        var lost = 0
        var doubled = 0
        for id in 0..<count {
            let n = (0..<life).reduce(0) { $0 + counts[$1 * count + id] }
            if n == 0 { lost += 1 }
            if n > 1 { doubled += 1 }
        }
        #expect(lost == 0)
        #expect(doubled == 0)
        #expect(life > 10, "consumers were killed along the way")
        #expect(q.count == 0)
    }

    @Test("32 MiB through a 64 KiB ring, its consumer SIGKILLed while it streams: the next one gets it")
    func consumerKilledMidStream() throws {
        let big = (0..<(32 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 12) }
        let q = try Queue<[UInt8]>(capacity: 64 << 10, maxMessageSize: 64 << 20)
        // What the child runs, run here first (the fork hazard: see lockMixed).
        try q.put([7])
        _ = try q.get(timeout: .seconds(20))
        let producer = Thread { try q.put(big) }
        try producer.start()
        let consumer = Process { _ = try q.get(timeout: .seconds(20)) }
        try consumer.start()
        let pid = try #require(consumer.pid)
        // Killed 5 ms after it announced itself as the message's reader: in the middle of the stream.
        #expect(eventually { UInt32(truncatingIfNeeded: q.channel.header.pointee.reader) == UInt32(bitPattern: pid) })
        try sleep(for: .milliseconds(5))
        try consumer.kill()
        #expect(try consumer.join(timeout: .seconds(20)))
        #expect(try q.get(timeout: .seconds(20)) == big)
        #expect(try producer.join(timeout: .seconds(20)))
        #expect(throws: QueueError.empty) { try q.getNowait() }
        #expect(q.count == 0)
    }

    @Test("JoinableQueue.shutdown(immediate:) discards what is left and marks its tasks done")
    func joinableImmediateShutdown() throws {
        let q = try JoinableQueue<Int>()
        for i in 0..<5 { try q.put(i) }
        #expect(try q.get() == 0)  // taken, not yet done
        let joined = try SharedCounters(count: 1)
        let joiner = Thread { joined[0] = try q.join(timeout: .seconds(20)) ? 1 : 2 }
        try joiner.start()
        try sleep(for: .milliseconds(50))
        q.shutdown(immediate: true)
        #expect(q.count == 0)
        #expect(q.unfinishedTasks == 1)  // the four discarded are done; the one taken is not
        #expect(throws: QueueError.shutDown) { _ = try q.get(timeout: .seconds(1)) }
        try q.taskDone()
        #expect(try joiner.join(timeout: .seconds(30)))
        #expect(joined[0] == 1)
        #expect(try q.join(timeout: .zero))
        #expect(throws: QueueError.taskDoneTooManyTimes) { try q.taskDone() }
    }
}
