import Multiprocessing
import Testing

/// Fixed-size elements of the sizes that take each branch of the ring copy (queue_internal.h's
/// copy_bytes: 1-3, 4-7, 8-15, 16-31, 32-64 bytes, and libc above) and that leave a record
/// not dividing the ring, so that puts wrap through a PAD.
private struct Bytes3: BitwiseCopyable, Sendable { var b: (UInt8, UInt8, UInt8) }
private struct Bytes6: BitwiseCopyable, Sendable { var b: (UInt16, UInt16, UInt16) }
private struct Bytes12: BitwiseCopyable, Sendable { var b: (UInt32, UInt32, UInt32) }
private struct Bytes20: BitwiseCopyable, Sendable { var b: (UInt32, UInt32, UInt32, UInt32, UInt32) }
private struct Bytes40: BitwiseCopyable, Sendable { var b: (UInt64, UInt64, UInt64, UInt64, UInt64) }
private struct Bytes100: BitwiseCopyable, Sendable {
    var b: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt32)
}
private struct Words8: BitwiseCopyable, Sendable {
    var w: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
}
/// 2 KiB, larger than one record of a 4 KiB ring (1016 bytes): travels in fragments. No padding
/// anywhere, so that comparing bytes compares values.
private struct Fragmented: BitwiseCopyable, Sendable {
    var a: (Words8, Words8, Words8, Words8, Words8, Words8, Words8, Words8)
    var b: (Words8, Words8, Words8, Words8, Words8, Words8, Words8, Words8)
    var c: (Words8, Words8, Words8, Words8, Words8, Words8, Words8, Words8)
    var d: (Words8, Words8, Words8, Words8, Words8, Words8, Words8, Words8)
}

/// 12 bytes, tagged for the stress helper: who put it, its sequence, and a check word.
private struct Tag12: BitwiseCopyable, Sendable {
    var producer: Int32
    var sequence: Int32
    var check: UInt32
    init(_ p: Int, _ s: Int) {
        producer = Int32(p)
        sequence = Int32(s)
        check = UInt32(truncatingIfNeeded: (p &* 1_000_003 &+ s) &* 2_654_435_761)
    }
    var valid: Bool { check == Tag12(Int(producer), Int(sequence)).check }
}

/// A value of `T` whose every byte comes from `seed` (distinct per message).
private func filled<T: BitwiseCopyable>(_ type: T.Type, _ seed: Int) -> T {
    withUnsafeTemporaryAllocation(of: T.self, capacity: 1) { slot in
        let raw = UnsafeMutableRawBufferPointer(slot)
        for i in 0..<raw.count { raw[i] = UInt8(truncatingIfNeeded: seed &* 31 &+ i &* 7 &+ 1) }
        return slot.baseAddress!.move()
    }
}

private func sameBytes<T: BitwiseCopyable>(_ a: T, _ b: T) -> Bool {
    withUnsafeBytes(of: a) { x in withUnsafeBytes(of: b) { y in x.elementsEqual(y) } }
}

@Suite("Queue copy path")
struct QueueCopyPathTests {
    /// A child process puts `n` filled values through a 4 KiB ring; every byte arrives, in order.
    private func crossProcess<T: BitwiseCopyable & Sendable>(_ type: T.Type, _ n: Int) throws {
        let q = try Queue<T>(maxSize: 16, capacity: 4096)
        // What the child runs, run here first (the fork hazard: see lockMixed).
        try q.put(filled(T.self, 0))
        _ = try q.get(timeout: .seconds(30))
        let child = Process { for i in 0..<n { try q.put(filled(T.self, i)) } }
        try child.start()
        var bad = 0
        for i in 0..<n where !sameBytes(try q.get(timeout: .seconds(30)), filled(T.self, i)) { bad += 1 }
        try child.join()
        #expect(child.exitCode == 0)
        #expect(bad == 0, "\(bad) of \(n) \(MemoryLayout<T>.size)-byte values differ")
        #expect(q.isEmpty)
    }

    @Test("every copy size, through a ring that wraps, across processes: byte for byte, in order")
    func everySize() throws {
        try crossProcess(UInt8.self, 3000)
        try crossProcess(Bytes3.self, 3000)
        try crossProcess(UInt32.self, 3000)
        try crossProcess(Bytes6.self, 3000)
        try crossProcess(Int.self, 3000)
        try crossProcess(Bytes12.self, 3000)
        try crossProcess(Bytes20.self, 3000)
        try crossProcess(Bytes40.self, 3000)
        try crossProcess(Bytes100.self, 3000)
        try crossProcess(Fragmented.self, 300)
    }

    @Test("2 × 2 processes, 12-byte values through a 4 KiB ring: exact counts, none lost or doubled")
    func manyToMany() throws {
        let n = 200_000
        let q = try Queue<Tag12>(maxSize: 64, capacity: 4096)
        let stats = try QueueStressTests.run(
            q, producers: 2, consumers: 2, perProducer: n, make: { Tag12($0, $1) },
            read: { (Int($0.producer), Int($0.sequence), $0.valid) }, stop: Tag12(-1, 0))
        QueueStressTests.check(stats, producers: 2, consumers: 2, perProducer: n)
    }

    @Test("a message of another size is a typed error that consumes it; the next one is intact")
    func otherSize() throws {
        let wide = try Queue<Int64>()
        try wide.put(0x0102_0304_0506_0708)
        try wide.put(9)
        let narrow = try FoundationJSON.decode(Queue<Int32>.self, try FoundationJSON.encode(wide))
        #expect(throws: QueueError.self) { _ = try narrow.get() }
        #expect(try wide.get() == 9)
        #expect(wide.isEmpty)
        let small = try Queue<Fragmented>(capacity: 4096)
        try small.put(filled(Fragmented.self, 5))
        let fragmentsAsInt = try FoundationJSON.decode(Queue<Int>.self, try FoundationJSON.encode(small))
        #expect(throws: QueueError.self) { _ = try fragmentsAsInt.get() }  // reassembled, then refused
        try small.put(filled(Fragmented.self, 6))
        #expect(sameBytes(try small.get(), filled(Fragmented.self, 6)))
    }

    @Test("JoinableQueue on the copy path: a put counts a task, a failed put undoes it")
    func joinableCounts() throws {
        let q = try JoinableQueue<Int>(maxSize: 1)
        try q.put(1)
        #expect(throws: QueueError.full) { try q.putNowait(2) }
        #expect(throws: QueueError.full) { try q.put(3, timeout: .milliseconds(10)) }
        #expect(q.unfinishedTasks == 1)
        #expect(try q.get() == 1)
        try q.taskDone()
        #expect(try q.join(timeout: .zero))
        q.shutdown()
        #expect(throws: QueueError.shutDown) { try q.put(4) }
        #expect(q.unfinishedTasks == 0)
        #expect(throws: QueueError.shutDown) { try q.getNowait() }
    }
}
