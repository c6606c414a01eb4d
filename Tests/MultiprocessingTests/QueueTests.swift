import Multiprocessing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

struct Tagged: Codable, Sendable, Equatable {
    var producer: Int
    var sequence: Int
    var checksum: UInt64
    static func make(_ producer: Int, _ sequence: Int) -> Tagged {
        Tagged(producer: producer, sequence: sequence, checksum: hash(producer, sequence))
    }
    static func hash(_ p: Int, _ s: Int) -> UInt64 {
        UInt64(truncatingIfNeeded: p &* 1_000_003 &+ s) &* 0x9E37_79B9_7F4A_7C15
    }
    var valid: Bool { checksum == Tagged.hash(producer, sequence) }
}

/// A fixed-size element for the copy-only fast path.
struct Sample: BitwiseCopyable, Sendable, Equatable {
    var producer: Int32
    var sequence: Int32
    var payload: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    static func == (a: Sample, b: Sample) -> Bool { a.producer == b.producer && a.sequence == b.sequence }
}

@Suite("Queue")
struct QueueTests {
    @Test("the seed's program: five puts into maxSize 5, full, a timed put fails, five timed gets")
    func seedProgram() throws {
        let q = try Queue<String>(maxSize: 5)
        for x in ["A", "B", "C", "D", "E"] { try q.put(x) }
        #expect(q.isFull)
        #expect(q.count == 5)
        let start = ContinuousClock.now
        #expect(throws: QueueError.full) { try q.put("F", timeout: .milliseconds(100)) }
        #expect(ContinuousClock.now - start >= .milliseconds(90))
        #expect(throws: QueueError.full) { try q.putNowait("G") }
        var got: [String] = []
        for _ in 0..<5 { got.append(try q.get(timeout: .seconds(2))) }
        #expect(got == ["A", "B", "C", "D", "E"])
        #expect(q.isEmpty)
        #expect(throws: QueueError.empty) { try q.get(timeout: .milliseconds(20)) }
        #expect(throws: QueueError.empty) { try q.getNowait() }
    }

    @Test("bad input: maxSize, capacity, timeouts, a closed queue, an oversized message")
    func badInput() throws {
        // Zero or less is unbounded, as Python's Queue(maxsize=0): more than any bound fits.
        for size in [0, -1, Int.min] {
            let unbounded = try Queue<Int>(maxSize: size)
            #expect(unbounded.maxSize == nil)
            #expect(!unbounded.isFull)
            for i in 0..<3000 { try unbounded.putNowait(i) }
            #expect(try (0..<3000).map { _ in try unbounded.getNowait() } == Array(0..<3000))
        }
        #expect(try Queue<String>(maxSize: 0).maxSize == nil)
        #expect(try JoinableQueue<Int>(maxSize: -5).maxSize == nil)
        #expect(throws: QueueError.invalidMaxSize(Int(Int32.max) + 1)) { try Queue<Int>(maxSize: Int(Int32.max) + 1) }
        #expect(try Queue<Int>().maxSize == nil)
        #expect(throws: QueueError.invalidCapacity(100)) { try Queue<Int>(capacity: 100) }
        #expect(throws: QueueError.invalidCapacity(0)) { try Queue<String>(maxMessageSize: 0) }
        let q = try Queue<String>(maxSize: 3, maxMessageSize: 1000)
        try q.put("kept")
        #expect(throws: QueueError.negativeTimeout(.seconds(-1))) { try q.put("x", timeout: .seconds(-1)) }
        #expect(throws: QueueError.negativeTimeout(.seconds(-1))) { try q.get(timeout: .seconds(-1)) }
        let big = String(repeating: "x", count: 5000)
        #expect(throws: QueueError.self) { try q.put(big) }
        do {
            try q.put(big)
        } catch QueueError.messageTooLarge(let size, let limit) {
            #expect(size > 5000)
            #expect(limit == 1000)
        }
        #expect(q.count == 1)
        #expect(try q.get() == "kept")  // nothing already queued is lost
        q.close()
        #expect(throws: QueueError.closed) { try q.put("late") }
        #expect(throws: QueueError.closed) { try q.getNowait() }
    }

    @Test(
        "a closed queue of fixed-size values refuses every put and get, its straight paths too; another handle is open",
        arguments: [QueueOrdering.causal, .perProducer])
    func closedStraightPaths(_ ordering: QueueOrdering) throws {
        let q = try Queue<Int>(ordering: ordering)
        let other = try FoundationJSON.decode(Queue<Int>.self, try FoundationJSON.encode(q))
        try q.put(1)  // by the straight path: a lane's claimed, or the ring's
        #expect(try q.get(timeout: .seconds(5)) == 1)
        try q.put(2)
        q.close()
        #expect(throws: QueueError.closed) { try q.put(3) }
        #expect(throws: QueueError.closed) { try q.putNowait(3) }
        #expect(throws: QueueError.closed) { try q.get(timeout: .seconds(5)) }
        #expect(throws: QueueError.closed) { try q.getNowait() }
        #expect(throws: QueueError.closed) { try q.put(contentsOf: [3, 4]) }
        #expect(throws: QueueError.closed) { try q.get(max: 2, timeout: .seconds(5)) }
        q.close()  // twice: still closed
        #expect(throws: QueueError.closed) { try q.getNowait() }
        #expect(q.count == 1)  // nothing lost: the other handle takes it
        #expect(try other.get(timeout: .seconds(5)) == 2)
        try other.put(5)
        #expect(try other.getNowait() == 5)
    }

    @Test("a message of another type is a typed error; the messages after it are intact")
    func decodeFailure() throws {
        let strings = try Queue<String>()
        try strings.put("not a number")
        try strings.put("fine")
        let data = try FoundationJSON.encode(strings)
        let numbers = try FoundationJSON.decode(Queue<[Int]>.self, data)
        #expect(throws: QueueError.self) { _ = try numbers.get() }
        #expect(try strings.get() == "fine")
    }

    @Test("fixed-size elements take the copy-only path, also across processes")
    func bitwise() throws {
        let q = try Queue<Sample>(maxSize: 64)
        // What the child runs, run here first (the fork hazard: see lockMixed).
        try q.put(Sample(producer: 1, sequence: -1, payload: (1, 2, 3, 4, 5, 6, 0)))
        _ = try q.get(timeout: .seconds(30))
        let child = Process {
            for i in 0..<10_000 {
                try q.put(Sample(producer: 1, sequence: Int32(i), payload: (1, 2, 3, 4, 5, 6, UInt64(i))))
            }
        }
        try child.start()
        for i in 0..<10_000 {
            let s = try q.get(timeout: .seconds(30))
            #expect(s.sequence == Int32(i))
            if s.sequence != Int32(i) { break }
            #expect(s.payload.6 == UInt64(i))
        }
        try child.join()
        #expect(child.exitCode == 0)
        let ints = try Queue<Int>()
        try ints.put(42)
        #expect(try ints.get() == 42)
    }

    @Test("messages larger than the ring are streamed and arrive whole, in order")
    func largeMessages() throws {
        let q = try Queue<[UInt8]>(capacity: 64 << 10)
        var generator = SystemRandomNumberGenerator()
        let sizes =
            [0, 1, 100, 16_000, 16_376, 16_377, 70_000, 300_000, 1 << 20]
            + (0..<10).map { _ in
                Int.random(in: 0...(1 << 20), using: &generator)
            }
        let bytes: @Sendable (Int, Int) -> [UInt8] = { i, size in
            (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
        }
        // What the child runs, run here first (the fork hazard: see lockMixed).
        try q.put(bytes(0, 3))
        _ = try q.get(timeout: .seconds(60))
        let producer = Process {
            for (i, size) in sizes.enumerated() {
                try q.put(bytes(i, size))
            }
        }
        try producer.start()
        for (i, size) in sizes.enumerated() {
            let message = try q.get(timeout: .seconds(60))
            #expect(message.count == size)
            #expect(message == (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) })
        }
        try producer.join()
        #expect(producer.exitCode == 0)
    }

    @Test("shutdown: puts fail at once, gets drain then fail; immediate fails gets at once; sleepers wake")
    func shutdown() throws {
        let q = try Queue<Int>(maxSize: 2)
        try q.put(1)
        try q.put(2)
        let blockedPut = Thread { #expect(throws: QueueError.shutDown) { try q.put(3) } }
        try blockedPut.start()
        try sleep(for: .milliseconds(30))
        q.shutdown()
        try blockedPut.join()
        #expect(throws: QueueError.shutDown) { try q.put(4) }
        #expect(try q.get() == 1)
        #expect(try q.get() == 2)
        #expect(throws: QueueError.shutDown) { try q.get() }

        let r = try Queue<Int>()
        let blockedGet = Thread { #expect(throws: QueueError.shutDown) { _ = try r.get() } }
        try blockedGet.start()
        try sleep(for: .milliseconds(30))
        r.shutdown(immediate: true)
        try blockedGet.join()

        let s = try Queue<Int>()
        try s.put(1)
        s.shutdown(immediate: true)
        #expect(throws: QueueError.shutDown) { try s.get() }
    }

    @Test("threads: 2 producers × 2 consumers, none lost, none duplicated, per-producer order kept")
    func threads() throws {
        let q = try Queue<Tagged>(maxSize: 100)
        let perProducer = 20_000
        let seen = Locked<[[Int]]>([[], []])
        let producers = (0..<2).map { p in
            Thread { for s in 0..<perProducer { try q.put(.make(p, s)) } }
        }
        let consumers = (0..<2).map { _ in
            Thread {
                var mine: [[Int]] = [[], []]
                while let t = try? q.get(timeout: .milliseconds(500)) {
                    #expect(t.valid)
                    mine[t.producer].append(t.sequence)
                }
                seen.withLock { all in for p in 0..<2 { all[p] += mine[p] } }
                for p in 0..<2 { #expect(mine[p] == mine[p].sorted()) }  // each producer's order
            }
        }
        for t in producers + consumers { try t.start() }
        for t in producers + consumers { try t.join() }
        for p in 0..<2 { #expect(seen.withLock { $0[p].sorted() } == Array(0..<perProducer)) }
    }
}

/// A tiny lock-guarded box for test bookkeeping across threads.
final class Locked<Value>: @unchecked Sendable {
    private let lock = Lock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        try! lock.acquire()
        defer { try! lock.release() }
        return try body(&value)
    }
}
