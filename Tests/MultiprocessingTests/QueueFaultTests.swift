import CMultiprocessing
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
        #expect(eventually { mp_mutex_owner(&q.q.pointee.consumer) == consumer.pid! })
        try consumer.kill()
        try consumer.join()
        try q.put(1)
        #expect(try q.getNowait() == 1)

        // A producer waiting on the full queue holds the producer lock; kill it.
        try q.put(2)
        let producer = Process { try q.put(99) }
        try producer.start()
        #expect(eventually { mp_mutex_owner(&q.q.pointee.producer) == producer.pid! })
        try producer.kill()
        try producer.join()
        #expect(try q.get(timeout: .seconds(5)) == 2)
        try q.putNowait(3)
        #expect(try q.get(timeout: .seconds(5)) == 3)

        // The same with a timeout shorter than the owner-check period.
        let again = Process { _ = try q.get() }
        try again.start()
        #expect(eventually { mp_mutex_owner(&q.q.pointee.consumer) == again.pid! })
        try again.kill()
        try again.join()
        try q.put(4)
        #expect(try q.get(timeout: .milliseconds(2)) == 4)
        #expect(q.count == 0)
    }

    @Test("a record's u32 size can never overflow, whatever the capacity; too large a ring is a typed error")
    func recordSizeLimit() throws {
        var header = mp_queue_t()
        for shift in 12...40 {
            header.capacity = 1 << UInt64(shift)
            let max = mp_queue_max_record(&header)
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
