import CMultiprocessing
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// A queue whose shared memory another process writes out of turn: every get and put ends with a
/// value or a typed error within its deadline, and nothing is read or written outside the region
/// and the caller's buffers (run under AddressSanitizer by `make test-asan`). The targeted writes
/// come from a forked child, through the mapping it inherited, as a buggy or hostile peer's would;
/// the random rounds write through the region from the test process itself.
@Suite("Queue: a peer that writes garbage")
struct QueueTrustTests {
    /// The ring of the tests' queues: 4096 bytes, so a record holds at most 1016 (a quarter, less
    /// its header).
    static let capacity = 4096
    static let maxRecord: UInt32 = 1016
    static let ringOffset = Int(MP_QUEUE_HEADER_SIZE)

    enum Kind: UInt32 { case whole = 1, first, middle, last, pad, abort }

    /// Runs `body` in a forked child with the queue's shared header and ring.
    func corrupt(
        _ queue: Queue<[UInt8]>, _ body: @escaping (UnsafeMutablePointer<mp_queue_t>, UnsafeMutableRawPointer) -> Void
    ) throws {
        let header = queue.channel.header
        let ring = UnsafeMutableRawPointer(header) + Self.ringOffset
        #expect(try runInChild(timeout: .seconds(30)) { body(header, ring) } == 0)
    }

    /// Writes a record header (and a FIRST's prefix) at `offset` of the ring.
    static func record(
        _ ring: UnsafeMutableRawPointer, at offset: Int, size: UInt32, kind: UInt32, total: UInt64? = nil
    ) {
        ring.storeBytes(of: size, toByteOffset: offset, as: UInt32.self)
        ring.storeBytes(of: kind, toByteOffset: offset + 4, as: UInt32.self)
        if let total {
            ring.storeBytes(of: total, toByteOffset: offset + 8, as: UInt64.self)
            ring.storeBytes(of: 7, toByteOffset: offset + 16, as: UInt64.self)  // a stream id
        }
    }

    /// The queue refuses from now on: a get and a put both throw `corrupted`, at once.
    func expectRefused(_ queue: Queue<[UInt8]>) {
        #expect(throws: QueueError.corrupted) { try queue.get(timeout: .seconds(5)) }
        #expect(throws: QueueError.corrupted) { try queue.put([1, 2, 3], timeout: .seconds(5)) }
    }

    @Test(
        "records that lie about their size, their kind or their message's total are a typed error",
        arguments: [
            ("a WHOLE of 2^31 - 16 bytes", { @Sendable ring in record(ring, at: 0, size: 0x7FFF_FFF0, kind: 1) }, 1024),
            ("a WHOLE past the ring's end", { @Sendable ring in record(ring, at: 0, size: 4090, kind: 1) }, 4096),
            ("a WHOLE past the tail", { @Sendable ring in record(ring, at: 0, size: 900, kind: 1) }, 512),
            ("an unknown kind", { @Sendable ring in record(ring, at: 0, size: 8, kind: 77) }, 16),
            (
                "a FIRST of 1000 bytes with a total of 16",
                { @Sendable ring in record(ring, at: 0, size: 1000, kind: 2, total: 16) }, 1008
            ),
            (
                "a full FIRST with a total of 16",
                { @Sendable ring in record(ring, at: 0, size: maxRecord, kind: 2, total: 16) }, 1024
            ),
            ("a FIRST of 0 bytes", { @Sendable ring in record(ring, at: 0, size: 0, kind: 2) }, 8),
            (
                "a FIRST with a total of 2^62",
                { @Sendable ring in record(ring, at: 0, size: maxRecord, kind: 2, total: 1 << 62) }, 1024
            ),
            (
                "a FIRST with a total of 2^63",
                { @Sendable ring in record(ring, at: 0, size: maxRecord, kind: 2, total: 1 << 63) }, 1024
            ),
            ("a PAD that stops short of the end", { @Sendable ring in record(ring, at: 0, size: 64, kind: 5) }, 72),
            ("an ABORT that carries bytes", { @Sendable ring in record(ring, at: 0, size: 64, kind: 6) }, 72),
        ] as [(String, @Sendable (UnsafeMutableRawPointer) -> Void, UInt64)])
    func lyingRecords(_ name: String, write: @escaping @Sendable (UnsafeMutableRawPointer) -> Void, tail: UInt64) throws
    {
        let queue = try Queue<[UInt8]>(capacity: Self.capacity)
        try corrupt(queue) { header, ring in
            write(ring)
            header.pointee.tail = tail
        }
        expectRefused(queue)
    }

    @Test("a fragment that runs past the ring's end or past its message's total is a typed error")
    func lyingFragments() throws {
        // A FIRST announcing 3000 bytes, then a LAST that claims 3500 bytes: past the ring's end.
        let pastEnd = try Queue<[UInt8]>(capacity: Self.capacity)
        try corrupt(pastEnd) { header, ring in
            Self.record(ring, at: 0, size: Self.maxRecord, kind: Kind.first.rawValue, total: 3000)
            Self.record(ring, at: 1024, size: 3500, kind: Kind.last.rawValue)
            header.pointee.tail = 4096
        }
        #expect(throws: QueueError.corrupted) { try pastEnd.get(timeout: .seconds(5)) }
        // The same FIRST, then a LAST of 1016 bytes more than its total leaves room for: the message
        // is dropped (as one whose producer died), and what follows is read.
        let pastTotal = try Queue<[UInt8]>(capacity: Self.capacity)
        try corrupt(pastTotal) { header, ring in
            Self.record(ring, at: 0, size: Self.maxRecord, kind: Kind.first.rawValue, total: 1100)
            Self.record(ring, at: 1024, size: Self.maxRecord, kind: Kind.last.rawValue)
            header.pointee.tail = 2048
        }
        #expect(throws: QueueError.self) { try pastTotal.get(timeout: .milliseconds(100)) }
        try pastTotal.put([9, 9])
        #expect(try pastTotal.get(timeout: .seconds(5)) == [9, 9])
    }

    @Test(
        "positions that no producer writes are a typed error",
        arguments: [
            ("head past tail", { @Sendable (h: UnsafeMutablePointer<mp_queue_t>) in h.pointee.head = 64 }),
            ("tail 2^40 ahead", { @Sendable h in h.pointee.tail = 1 << 40 }),
            ("a tail that is not 8-aligned", { @Sendable h in h.pointee.tail = 13 }),
        ] as [(String, @Sendable (UnsafeMutablePointer<mp_queue_t>) -> Void)])
    func lyingPositions(_ name: String, write: @escaping @Sendable (UnsafeMutablePointer<mp_queue_t>) -> Void) throws {
        let queue = try Queue<[UInt8]>(capacity: Self.capacity)
        try queue.put([1, 2, 3])
        try corrupt(queue) { header, _ in write(header) }
        expectRefused(queue)
    }

    @Test("a capacity raised in the shared header changes nothing: puts stay in the ring, gets read them back")
    func raisedCapacity() throws {
        let queue = try Queue<[UInt8]>(capacity: Self.capacity)
        try corrupt(queue) { header, _ in header.pointee.capacity = 1 << 30 }
        let messages = (0..<8).map { i in [UInt8](repeating: UInt8(i), count: 1000) }
        for (i, message) in messages.enumerated() {
            try queue.put(message, timeout: .seconds(5))
            #expect(try queue.get(timeout: .seconds(5)) == messages[i])
        }
        // A process that attaches now finds a header that does not fit its mapping: refused.
        #expect(throws: SharedMemoryError.staleHandle) {
            try Channel(regionID: queue.channel.region.id)
        }
    }

    @Test("random words over the header and the ring: every get and put ends in time, with a value or a typed error")
    func randomGarbage() throws {
        let rounds =
            ProcessInfoLite.environment("MP_TRUST_ROUNDS").flatMap(Int.init) ?? (runningUnderSanitizer ? 200 : 2000)
        var generator = SystemRandomNumberGenerator()
        let span = Self.ringOffset + Self.capacity
        for _ in 0..<rounds {
            let queue = try Queue<[UInt8]>(capacity: Self.capacity)
            for size in [3, 200, 1500] { try queue.put([UInt8](repeating: 7, count: size), timeout: .seconds(5)) }
            let words = (0..<Int.random(in: 1...8, using: &generator)).map { _ in
                (Int.random(in: 0..<span - 8, using: &generator), UInt64.random(in: 0...UInt64.max, using: &generator))
            }
            // Written here, through the region, as a peer's writes land: thousands of closure
            // children forked beside the parallel suite's threads would meet the fork start
            // method's hazard (see StartMethods) once in a while, and fail the test for it.
            let header = UnsafeMutableRawPointer(queue.channel.header)
            for (offset, value) in words { header.storeBytes(of: value, toByteOffset: offset, as: UInt64.self) }
            for attempt in 0..<6 {
                let start = mp_monotonic_ns()
                do {
                    if attempt % 3 == 2 {
                        try queue.put([UInt8](repeating: 1, count: 40), timeout: .milliseconds(20))
                    } else {
                        _ = try queue.get(timeout: .milliseconds(20))
                    }
                } catch {
                    _ = error  // typed: QueueError, whichever case
                }
                let took = mp_monotonic_ns() - start
                #expect(took < 5_000_000_000, "an operation with a 20 ms timeout took \(took / 1_000_000) ms")
            }
        }
    }
}

/// `getenv` as a String (the tests avoid Foundation's ProcessInfo).
enum ProcessInfoLite {
    static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
