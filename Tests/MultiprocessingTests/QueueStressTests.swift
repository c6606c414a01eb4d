import Multiprocessing
import MultiprocessingTestTargets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Per consumer and producer: [count, last sequence + 1, sum of sequences, order violations, bad].
private let statsWidth = 5

@Suite("Queue stress")
struct QueueStressTests {
    /// Runs `producers` × `consumers` processes over `q`; returns the shared statistics.
    static func run<E: Sendable>(
        _ q: Queue<E>, producers: Int, consumers: Int, perProducer: Int,
        make: @escaping (Int, Int) -> E, read: @escaping (E) -> (producer: Int, sequence: Int, valid: Bool),
        stop: E
    ) throws -> SharedCounters {
        let stats = try SharedCounters(count: consumers * producers * statsWidth)
        let consumerProcesses = (0..<consumers).map { c in
            Process {
                while true {
                    let (p, s, valid) = read(try q.get())
                    if p < 0 { return }
                    let base = (c * producers + p) * statsWidth
                    stats[base] += 1
                    if s + 1 <= stats[base + 1] { stats[base + 3] += 1 }  // out of order or duplicate
                    stats[base + 1] = s + 1
                    stats[base + 2] += s
                    if !valid { stats[base + 4] += 1 }
                }
            }
        }
        let producerProcesses = (0..<producers).map { p in
            Process { for s in 0..<perProducer { try q.put(make(p, s)) } }
        }
        // What the children run, run here first (the fork hazard: see lockMixed).
        try q.put(make(0, 1), timeout: .seconds(60))  // (0, 1): randomSizes makes it smaller than its ring
        _ = read(try q.get(timeout: .seconds(60)))
        for c in consumerProcesses { try c.start() }
        for p in producerProcesses { try p.start() }
        // Every wait has a deadline: a stall fails the test (and is killed) instead of the suite.
        for p in producerProcesses {
            #expect(try p.join(timeout: .seconds(900)), "producer \(p.pid ?? 0) did not finish")
            #expect(p.exitCode == 0)
        }
        for _ in 0..<consumers { try q.put(stop, timeout: .seconds(60)) }
        for c in consumerProcesses {
            #expect(try c.join(timeout: .seconds(120)), "consumer \(c.pid ?? 0) did not finish")
            #expect(c.exitCode == 0)
        }
        for p in producerProcesses + consumerProcesses where p.exitCode == nil {
            try p.kill()
            try p.join()
        }
        return stats
    }

    static func check(_ stats: SharedCounters, producers: Int, consumers: Int, perProducer: Int) {
        for p in 0..<producers {
            var count = 0
            var sum = 0
            for c in 0..<consumers {
                let base = (c * producers + p) * statsWidth
                count += stats[base]
                sum += stats[base + 2]
                #expect(stats[base + 3] == 0, "producer \(p)'s order broken at consumer \(c)")
                #expect(stats[base + 4] == 0, "torn or corrupt messages at consumer \(c)")
            }
            #expect(count == perProducer, "producer \(p): \(count) of \(perProducer) arrived")
            #expect(sum == perProducer * (perProducer - 1) / 2, "producer \(p): lost or duplicated")
        }
    }

    @Test("4 producer × 4 consumer processes, 1 000 000 fixed-size messages each: exact")
    func fixedSize() throws {
        let n = 1_000_000
        let q = try Queue<Sample>(maxSize: 4096)
        let stats = try Self.run(
            q, producers: 4, consumers: 4, perProducer: n,
            make: { p, s in
                Sample(producer: Int32(p), sequence: Int32(s), payload: (UInt64(s), 0, 0, 0, 0, 0, UInt64(p)))
            },
            read: {
                ($0.producer == -1 ? -1 : Int($0.producer), Int($0.sequence), $0.payload.0 == UInt64($0.sequence))
            },
            stop: Sample(producer: -1, sequence: 0, payload: (0, 0, 0, 0, 0, 0, 0)))
        Self.check(stats, producers: 4, consumers: 4, perProducer: n)
    }

    @Test("4 producer × 4 consumer processes, Codable messages with checksums: exact")
    func codable() throws {
        let n = 100_000
        let q = try Queue<Tagged>(maxSize: 1000)
        let stats = try Self.run(
            q, producers: 4, consumers: 4, perProducer: n, make: Tagged.make,
            read: { ($0.producer, $0.sequence, $0.valid) }, stop: Tagged(producer: -1, sequence: 0, checksum: 0))
        Self.check(stats, producers: 4, consumers: 4, perProducer: n)
    }

    @Test("random sizes from 0 bytes to 1 MiB through a 256 KiB ring, 2 × 2 processes")
    func randomSizes() throws {
        let q = try Queue<[UInt8]>(capacity: 256 << 10)
        func message(_ p: Int, _ s: Int) -> [UInt8] {
            var rng = SplitMix(seed: UInt64(p * 1_000_000 + s))
            let size = s % 7 == 0 ? Int(rng.next() % (1 << 20)) : Int(rng.next() % 2048)
            var bytes = [UInt8](repeating: 0, count: size + 9)
            bytes[0] = UInt8(p)
            withUnsafeBytes(of: UInt64(s).littleEndian) { bytes.replaceSubrange(1..<9, with: $0) }
            for i in 9..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: i &* 7 &+ s) }
            return bytes
        }
        let stats = try Self.run(
            q, producers: 2, consumers: 2, perProducer: 300, make: message,
            read: { m in
                if m.count == 1 { return (-1, 0, true) }
                let s = Int(m[1..<9].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
                let valid = (9..<m.count).allSatisfy { m[$0] == UInt8(truncatingIfNeeded: $0 &* 7 &+ s) }
                return (Int(m[0]), s, valid)
            }, stop: [0xFF])
        Self.check(stats, producers: 2, consumers: 2, perProducer: 300)
    }

    @Test("producers SIGKILLed mid-stream: no reader sees a torn message, and the queue goes on")
    func killedProducers() throws {
        let q = try Queue<[UInt8]>(capacity: 64 << 10)
        let stats = try SharedCounters(count: 4)  // [0] messages checked, [1] bad ones
        let message: @Sendable (Int, Int) -> [UInt8] = { size, round in
            (0..<size).map { UInt8(truncatingIfNeeded: $0 == 0 ? round : $0 &+ round) }
        }
        let intact: @Sendable ([UInt8]) -> Bool = { m in
            let seed = m[0]
            return m.indices.dropFirst().allSatisfy { m[$0] == UInt8(truncatingIfNeeded: $0 &+ Int(seed)) }
        }
        // What the children run, run here first (the fork hazard: see lockMixed).
        try q.put(message(3, 0))
        _ = intact(try q.get())
        let consumer = Process {
            while true {
                let m = try q.get()
                if m.count == 1 { return }
                let ok = intact(m)
                stats[0] += 1
                if !ok { stats[1] += 1 }
            }
        }
        try consumer.start()
        for round in 0..<6 {
            let victim = Process {
                var i = 0
                while true {
                    let size = 200_000 + (i % 5) * 10_000  // every message spans several records
                    try q.put(message(size, round))
                    i += 1
                }
            }
            try victim.start()
            try sleep(for: .milliseconds(20 + round * 7))
            try victim.kill()
            try victim.join()
            #expect(victim.exitCode == -SIGKILL)
        }
        try q.put([7, 8])  // the queue still works for a new producer
        try q.put([0xFF])
        try consumer.join(timeout: .seconds(60))
        #expect(consumer.exitCode == 0)
        #expect(stats[1] == 0)
        #expect(stats[0] > 0)
    }

    @Test("JoinableQueue: taskDone and join across processes; too many taskDone is an error")
    func joinable() throws {
        let q = try JoinableQueue<Int>()
        try warmForForkedChildren(q)
        let worker = Process {
            while true {
                let x = try q.get()
                try q.taskDone()
                if x < 0 { return }
            }
        }
        try worker.start()
        for i in 0..<1000 { try q.put(i) }
        #expect(try q.join(timeout: .seconds(60)))
        #expect(q.unfinishedTasks == 0)
        try q.put(-1)
        try worker.join()
        #expect(throws: QueueError.taskDoneTooManyTimes) { try q.taskDone() }
        try q.put(5)
        #expect(try !q.join(timeout: .milliseconds(20)))
        _ = try q.get()
        try q.taskDone()
        #expect(try q.join(timeout: .zero))
    }

    @Test("SimpleQueue between processes")
    func simple() throws {
        let q = try SimpleQueue<String>()
        #expect(q.isEmpty)
        // What the child runs, run here first (the fork hazard: see lockMixed).
        try q.put("item \(-1)")
        _ = try q.get(timeout: .seconds(30))
        let child = Process { for i in 0..<100 { try q.put("item \(i)") } }
        try child.start()
        for i in 0..<100 { #expect(try q.get(timeout: .seconds(30)) == "item \(i)") }
        try child.join()
        #expect(q.isEmpty)
    }

    @Test("a queue handed to a spawned child")
    func spawned() throws {
        useTestHelper()
        let job = QueueJob(input: try Queue<Int>(), output: try Queue<Int>())
        let child = Process(spawn: TestTargets.doubler, argument: job)
        try child.start()
        for i in 0..<1000 { try job.input.put(i) }
        try job.input.put(-1)
        for i in 0..<1000 { #expect(try job.output.get(timeout: .seconds(60)) == 2 * i) }
        try child.join()
        #expect(child.exitCode == 0)
    }
}

/// A small deterministic generator (tests must be reproducible in every process).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
