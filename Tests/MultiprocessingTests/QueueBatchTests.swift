import Multiprocessing
import MultiprocessingTestTargets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `put(contentsOf:)` and `get(max:)`: many messages under one hold of a lock.
@Suite("Queue batches")
struct QueueBatchTests {
    @Test("fixed-size batches through a small ring, a thread each side: every item once, in order")
    func fixedSizeThroughSmallRing() throws {
        let q = try Queue<Int>(capacity: 4096)
        let total = 200_000
        let producer = Multiprocessing.Thread {
            var next = 0
            while next < total {
                let chunk = Swift.min(1 + next % 300, total - next)  // batches of 1 to 300, larger than the ring
                let put = try! q.put(contentsOf: next..<(next + chunk), timeout: .seconds(30))
                precondition(put == chunk)
                next += chunk
            }
        }
        try producer.start()
        var expected = 0
        var batches = 0
        while expected < total {
            let items = try q.get(max: 64, timeout: .seconds(30))
            #expect(!items.isEmpty && items.count <= 64)
            for item in items {
                #expect(item == expected)
                if item != expected { return }
                expected += 1
            }
            batches += 1
        }
        #expect(try producer.join(timeout: .seconds(30)))
        #expect(batches < total)  // some gets took more than one
        #expect(q.count == 0)
    }

    @Test("Codable batches, with a message that travels in pieces in the middle: in order, whole")
    func encodedWithStreamedMessage() throws {
        let q = try Queue<String>(capacity: 4096)
        var sent = (0..<500).map { "item \($0)" }
        sent[250] = String(repeating: "x", count: 20_000)  // larger than a record: streamed alone
        let items = sent
        let producer = Multiprocessing.Thread {
            precondition(try! q.put(contentsOf: items, timeout: .seconds(30)) == 500)
        }
        try producer.start()
        var received: [String] = []
        while received.count < 500 {
            received += try q.get(max: 37, timeout: .seconds(30))
        }
        #expect(try producer.join(timeout: .seconds(30)))
        #expect(received == items)
    }

    @Test("a bounded queue takes the first items of a batch; the count says how many; nothing else is lost")
    func boundedAndTimeouts() throws {
        let q = try JoinableQueue<Int>(maxSize: 3)
        #expect(try q.put(contentsOf: 10..<20, timeout: .milliseconds(50)) == 3)
        #expect(throws: QueueError.full) { try q.put(contentsOf: [1, 2], timeout: .milliseconds(20)) }
        #expect(try q.put(contentsOf: [Int](), timeout: .zero) == 0)
        #expect(try q.get(max: 0) == [])
        #expect(try q.get(max: 10, timeout: .seconds(5)) == [10, 11, 12])
        #expect(throws: QueueError.empty) { try q.get(max: 5, timeout: .milliseconds(20)) }
        // Exactly the items put count as tasks: three done, and join returns.
        for _ in 0..<3 { try q.taskDone() }
        #expect(try q.join(timeout: .seconds(5)))
        #expect(throws: QueueError.negativeTimeout(.seconds(-1))) {
            try q.put(contentsOf: [1], timeout: .seconds(-1))
        }
        q.shutdown()
        #expect(throws: QueueError.shutDown) { try q.put(contentsOf: [1, 2, 3]) }
    }

    @Test("an item over maxMessageSize, or one that does not decode, loses nothing else")
    func badItems() throws {
        let q = try Queue<[UInt8]>(maxMessageSize: 1000)
        try q.put([1])
        #expect(throws: QueueError.self) { try q.put(contentsOf: [[2], [UInt8](repeating: 0, count: 2000), [3]]) }
        #expect(q.count == 1)  // an item that cannot be sent stops the batch before anything is put
        #expect(try q.get(max: 10, timeout: .seconds(5)) == [[1]])

        // A message of another type in the middle: the batch ends before it, the next get reports
        // it, and the ones after it are intact.
        let strings = try Queue<String>()
        try strings.put(contentsOf: ["[1]", "[2]"])
        let numbers = try FoundationJSON.decode(Queue<[Int]>.self, try FoundationJSON.encode(strings))
        try strings.put("not numbers")
        try numbers.put(contentsOf: [[3], [4]])
        #expect(throws: QueueError.self) { _ = try numbers.get(max: 10, timeout: .seconds(5)) }  // "[1]"
        #expect(throws: QueueError.self) { _ = try numbers.get(max: 10, timeout: .seconds(5)) }  // "[2]"
        #expect(throws: QueueError.self) { _ = try numbers.get(max: 10, timeout: .seconds(5)) }  // "not numbers"
        #expect(try numbers.get(max: 10, timeout: .seconds(5)) == [[3], [4]])
        try numbers.put([5])
        try strings.put("six")
        try numbers.put([7])
        #expect(try numbers.get(max: 10, timeout: .seconds(5)) == [[5]])  // stops before "six"
        #expect(try strings.get(timeout: .seconds(5)) == "six")
        #expect(try numbers.get(max: 10, timeout: .seconds(5)) == [[7]])
    }

    @Test("2 × 2 processes putting and getting in batches: every item once, in order per producer")
    func processes() throws {
        let q = try Queue<Int>(capacity: 16 << 10)
        let perProducer = 100_000
        let consumers = 2
        let stats = try SharedCounters(count: consumers * 2 * 3)  // [count, last + 1, disorder]
        let consumerProcesses = (0..<consumers).map { c in
            Process {
                while true {
                    for item in try q.get(max: 64) {
                        if item < 0 { return }
                        let p = item >> 32
                        let s = item & 0xFFFF_FFFF
                        let base = (c * 2 + p) * 3
                        stats[base] += 1
                        if s + 1 <= stats[base + 1] { stats[base + 2] += 1 }
                        stats[base + 1] = s + 1
                    }
                }
            }
        }
        let producers = (0..<2).map { p in
            Process {
                var s = 0
                while s < perProducer {
                    let n = Swift.min(1 + s % 100, perProducer - s)
                    try q.put(contentsOf: (s..<(s + n)).map { p << 32 | $0 })
                    s += n
                }
            }
        }
        // What the children run, run here first: a closure child forked beside the parallel suite's
        // threads must find the generic code it calls already instantiated (the fork hazard).
        try q.put(contentsOf: (0..<3).map { 1 << 40 | $0 })
        #expect(try q.get(max: 64, timeout: .seconds(5)).count == 3)
        for c in consumerProcesses { try c.start() }
        for p in producers { try p.start() }
        for p in producers {
            #expect(try p.join(timeout: .seconds(300)))
            #expect(p.exitCode == 0)
        }
        // One stop at a time: a batch could otherwise take both.
        var running = consumerProcesses
        while !running.isEmpty {
            try q.put(-1, timeout: .seconds(60))
            let deadline = ContinuousClock.now + .seconds(60)
            while running.allSatisfy({ $0.exitCode == nil }) && ContinuousClock.now < deadline {
                _ = try running[0].join(timeout: .milliseconds(5))
                _ = try running.last!.join(timeout: .milliseconds(5))
            }
            let before = running.count
            running.removeAll { $0.exitCode != nil }
            #expect(running.count == before - 1, "a consumer did not stop")
            if running.count != before - 1 { break }
        }
        for c in consumerProcesses { #expect(c.exitCode == 0) }
        for p in producers + consumerProcesses where p.exitCode == nil {
            try p.kill()
            try p.join()
        }
        for p in 0..<2 {
            let count = (0..<consumers).reduce(0) { $0 + stats[($1 * 2 + p) * 3] }
            #expect(count == perProducer)
            for c in 0..<consumers { #expect(stats[(c * 2 + p) * 3 + 2] == 0, "producer \(p) out of order at \(c)") }
        }
    }

    @Test("producers SIGKILLed while putting batches: what arrives is each producer's items in order, no gap")
    func killedProducers() throws {
        let q = try Queue<Int>(capacity: 8192)
        try q.put(contentsOf: [0])  // instantiated here first (see processes())
        _ = try q.get(max: 64, timeout: .seconds(5))
        for round in 0..<8 {
            let victim = Process {
                var s = 0
                while true {
                    try q.put(contentsOf: (s..<(s + 50)).map { round << 32 | $0 })
                    s += 50
                }
            }
            try victim.start()
            // Let it fill the ring and block, take some, then kill it while it writes.
            var next = 0
            let deadline = ContinuousClock.now + .milliseconds(30 + round * 5)
            while ContinuousClock.now < deadline {
                for item in try q.get(max: 64, timeout: .seconds(30)) {
                    #expect(item >> 32 == round && item & 0xFFFF_FFFF == next)
                    next += 1
                }
            }
            try victim.kill()
            try victim.join()
            #expect(victim.exitCode == -SIGKILL)
            // What it published before it died is whole and in order; nothing after a gap.
            while let items = try? q.get(max: 64, timeout: .milliseconds(50)) {
                for item in items {
                    #expect(item >> 32 == round && item & 0xFFFF_FFFF == next)
                    next += 1
                }
            }
            #expect(next > 0)
        }
        try q.put(contentsOf: [1, 2, 3])  // the queue goes on
        #expect(try q.get(max: 5, timeout: .seconds(5)) == [1, 2, 3])
    }
}

@Suite("Queue batches, async")
struct QueueBatchAsyncTests {
    @Test("async put(contentsOf:) and get(max:) on a loop, against a blocking thread, through a small ring")
    func asyncBatches() async throws {
        let q = try JoinableQueue<Int>(capacity: 4096)
        let total = 50_000
        // A blocking consumer thread; the loop's coroutine puts in batches and waits for room.
        let consumer = Multiprocessing.Thread {
            var expected = 0
            while expected < total {
                for item in try! q.get(max: 100, timeout: .seconds(30)) {
                    precondition(item == expected, "got \(item), expected \(expected)")
                    expected += 1
                    try! q.taskDone()
                }
            }
        }
        try consumer.start()
        let put = try await onLoop {
            var done = 0
            while done < total {
                let n = Swift.min(1 + done % 700, total - done)  // batches larger than the ring
                done += try await q.put(contentsOf: done..<(done + n), timeout: .seconds(30))
            }
            return done
        }
        #expect(put == total)
        #expect(try consumer.join(timeout: .seconds(30)))
        #expect(try await q.join(timeout: .seconds(5)))  // the async join, on the shared loop

        // The other way round: a blocking producer, the coroutine takes batches.
        let strings = try Queue<String>(capacity: 4096)
        let producer = Multiprocessing.Thread {
            for start in stride(from: 0, to: 5_000, by: 50) {
                precondition(try! strings.put(contentsOf: (start..<(start + 50)).map { "s\($0)" }) == 50)
            }
        }
        try producer.start()
        let received = try await onLoop {
            var all: [String] = []
            while all.count < 5_000 { all += try await strings.get(max: 64, timeout: .seconds(30)) }
            return all
        }
        #expect(received == (0..<5_000).map { "s\($0)" })
        #expect(try producer.join(timeout: .seconds(30)))
        let empty = try await onLoop { () async throws -> Bool in
            do {
                _ = try await strings.get(max: 4, timeout: .milliseconds(20))
                return false
            } catch QueueError.empty {
                return true
            }
        }
        #expect(empty)
    }
}
