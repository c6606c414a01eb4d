import CMultiprocessing
import Testing

@testable import Multiprocessing

/// A message whose bytes are not a value of the queue's element type, written into the queue's
/// shared memory as any process holding the queue can (here through the C put, as a peer's
/// `Queue<UInt8>` on the same ring would): the get throws `decodingFailed` and consumes it, nothing
/// else is lost, and the next message arrives. A copied `Bool` byte of 2 would otherwise compare
/// equal to both `true` and `false`, and an enum's unknown tag send a `switch` to a wrong case.
@Suite("Queue: elements whose bytes a peer forged")
struct QueueElementTrustTests {
    /// A struct copied as it is, each `Bool` checked.
    struct Flags: BitwiseCopyable, Equatable {
        var n: Int32
        var on: Bool
        var off: Bool
    }
    /// The same, `Codable` too (the `BitwiseCopyable & Codable` initializer).
    struct CodableFlags: BitwiseCopyable, Codable, Equatable {
        var n: Int32
        var on: Bool
    }
    /// An enum: its bytes cannot be checked by a copy, so the queue codes it.
    enum Shade: UInt8, BitwiseCopyable, Codable { case red, green, blue }

    /// An enum that is not `Codable`: its bytes are its case's index, which the get checks.
    enum Light: BitwiseCopyable, Equatable { case red, amber, green }
    /// An enum with a payload: its tag hides in the payload's spare bits, unchecked.
    enum Parcel: BitwiseCopyable { case some(Int32), none }

    /// Puts `bytes` as one message, as a peer's put of another element type would.
    static func forge<E>(_ queue: Queue<E>, _ bytes: [UInt8], lane: Bool = false) {
        let deadline = mp_monotonic_ns() + 5_000_000_000
        var status = MP_BUSY
        if lane {
            status = bytes.withUnsafeBytes {
                mp_queue_put_straight(queue.q, $0.baseAddress!, UInt64($0.count), deadline)
            }
        }
        if status == MP_BUSY {
            status = bytes.withUnsafeBytes { mp_queue_put(queue.q, $0.baseAddress, UInt64($0.count), deadline) }
        }
        #expect(status == MP_OK)
    }

    /// The bytes of `value`.
    static func bytes<T: BitwiseCopyable>(of value: T) -> [UInt8] { withUnsafeBytes(of: value) { Array($0) } }

    /// The get throws `decodingFailed`.
    static func expectRefused<E>(_ queue: Queue<E>, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(sourceLocation: sourceLocation) {
            _ = try queue.get(timeout: .seconds(5))
        } throws: { error in
            guard case QueueError.decodingFailed = error else { return false }
            return true
        }
    }

    @Test("a Bool byte of 2 is refused, consumed, and the next message arrives", arguments: [false, true])
    func forgedBool(lanes: Bool) throws {
        let queue = try Queue<Bool>(ordering: lanes ? .perProducer : .causal)
        Self.forge(queue, [2], lane: lanes)
        try queue.put(true)
        Self.forge(queue, [255], lane: lanes)
        try queue.put(false)
        Self.expectRefused(queue)
        #expect(try queue.get(timeout: .seconds(5)) == true)
        Self.expectRefused(queue)
        #expect(try queue.getNowait() == false)
        #expect(queue.isEmpty)
    }

    @Test("a struct's Bool is checked, with either initializer")
    func forgedStruct() throws {
        let queue = try Queue<Flags>()
        var bad = Self.bytes(of: Flags(n: 7, on: true, off: false))
        bad[MemoryLayout<Flags>.offset(of: \Flags.off)!] = 3
        Self.forge(queue, bad)
        try queue.put(Flags(n: 8, on: false, off: true))
        Self.expectRefused(queue)
        #expect(try queue.get(timeout: .seconds(5)) == Flags(n: 8, on: false, off: true))

        let coded = try Queue<CodableFlags>(ordering: .perProducer)
        #expect(coded.codec.kind == .checked)  // copied, and checked
        var forged = Self.bytes(of: CodableFlags(n: 1, on: true))
        forged[MemoryLayout<CodableFlags>.offset(of: \CodableFlags.on)!] = 9
        Self.forge(coded, forged, lane: true)
        try coded.put(CodableFlags(n: 2, on: true))
        Self.expectRefused(coded)
        #expect(try coded.get(timeout: .seconds(5)) == CodableFlags(n: 2, on: true))
    }

    @Test("a Codable enum or optional is decoded, so an unknown tag is refused")
    func forgedEnum() throws {
        let queue = try Queue<Shade>(ordering: .perProducer)
        #expect(queue.codec.kind == .binary)
        Self.forge(queue, [9])  // the bytes of a copied enum with no case 9
        var encoded = try BinaryCoding.encode(Shade.blue)
        encoded[encoded.count - 1] = 9  // the raw value 9
        Self.forge(queue, encoded)
        try queue.put(.green)
        Self.expectRefused(queue)
        Self.expectRefused(queue)
        #expect(try queue.get(timeout: .seconds(5)) == .green)

        let optional = try Queue<Int32?>()
        #expect(optional.codec.kind == .binary)
        Self.forge(optional, [1, 0, 0, 0, 7])  // a copied Int32? with a tag of 7
        try optional.put(nil)
        try optional.put(5)
        Self.expectRefused(optional)
        #expect(try optional.get(timeout: .seconds(5)) == nil)
        #expect(try optional.get(timeout: .seconds(5)) == 5)
    }

    @Test("an enum without payloads that is not Codable has its tag checked")
    func forgedPlainEnum() throws {
        #expect(BitwiseLayout.caseCount(ofTagOnlyEnum: Light.self) == 3)
        #expect(BitwiseLayout.caseCount(ofTagOnlyEnum: Shade.self) == 3)
        #expect(BitwiseLayout.caseCount(ofTagOnlyEnum: Light?.self) == nil)
        #expect(BitwiseLayout.caseCount(ofTagOnlyEnum: Parcel.self) == nil)
        #expect(BitwiseLayout.caseCount(ofTagOnlyEnum: Int.self) == nil)
        #expect(BitwiseLayout.caseCount(ofTagOnlyEnum: Bool.self) == nil)
        #expect(BitwiseLayout.caseCount(ofTagOnlyEnum: Flags.self) == nil)

        let queue = try Queue<Light>(ordering: .perProducer)
        #expect(queue.codec.kind == .checked)
        Self.forge(queue, [3], lane: true)
        try queue.put(.green)
        try queue.put(.red)
        Self.expectRefused(queue)
        #expect(try queue.get(max: 5, timeout: .seconds(5)) == [.green, .red])
        // An optional of it is copied unchecked (documented): its values still travel.
        let optional = try Queue<Light?>()
        try optional.put(contentsOf: [nil, .amber])
        #expect(try optional.get(max: 5, timeout: .seconds(5)) == [nil, .amber])
    }

    @Test("a batch get throws for a forged first message and stops before a later one")
    func forgedInBatch() throws {
        let queue = try Queue<Bool>()
        Self.forge(queue, [2])
        try queue.put(contentsOf: [true, false])
        Self.forge(queue, [2])
        try queue.put(true)
        #expect(throws: QueueError.self) { try queue.get(max: 10, timeout: .seconds(5)) }
        #expect(try queue.get(max: 10, timeout: .seconds(5)) == [true, false])  // stops before the forged one
        #expect(throws: QueueError.self) { try queue.get(max: 10, timeout: .seconds(5)) }
        #expect(try queue.get(max: 10, timeout: .seconds(5)) == [true])
        #expect(queue.isEmpty)
    }

    @Test("async gets refuse a forged message as the blocking ones do")
    func forgedAsync() async throws {
        let queue = try Queue<Flags>()
        var bad = Self.bytes(of: Flags(n: 7, on: true, off: false))
        bad[MemoryLayout<Flags>.offset(of: \Flags.on)!] = 2
        let good = Flags(n: 1, on: true, off: true)
        try Self.fill(queue, [bad, nil, bad, nil, nil], good: good)
        let refused = try await onLoop { () async throws -> Int in
            var refused = 0
            do { _ = try await queue.get(timeout: .seconds(5)) } catch QueueError.decodingFailed { refused += 1 }
            #expect(try await queue.get(timeout: .seconds(5)) == good)
            do { _ = try await queue.get(max: 10, timeout: .seconds(5)) } catch QueueError.decodingFailed {
                refused += 1
            }
            #expect(try await queue.get(max: 10, timeout: .seconds(5)) == [good, good])
            return refused
        }
        #expect(refused == 2)
        #expect(queue.isEmpty)
    }

    /// Puts `good` for each nil, forges the others (blocking puts, outside the async test).
    static func fill<E>(_ queue: Queue<E>, _ messages: [[UInt8]?], good: E) throws {
        for message in messages {
            if let message { forge(queue, message) } else { try queue.put(good) }
        }
    }

    @Test("a JoinableQueue marks a refused message's task done", arguments: [false, true])
    func forgedJoinable(encoded: Bool) throws {
        // A peer's put counts its task before the message (as JoinableQueue.put does).
        if encoded {
            let queue = try JoinableQueue<String>()
            mp_queue_task_add(queue.q)
            Self.forge(queue, [1, 2, 3])
            try queue.put("next")
            try expectJoinable(queue, next: "next")
        } else {
            let queue = try JoinableQueue<Bool>()
            mp_queue_task_add(queue.q)
            Self.forge(queue, [2])
            try queue.put(true)
            try expectJoinable(queue, next: true)
        }
    }

    private func expectJoinable<E: Equatable>(_ queue: JoinableQueue<E>, next: E) throws {
        #expect(queue.unfinishedTasks == 2)
        Self.expectRefused(queue)
        #expect(queue.unfinishedTasks == 1)
        #expect(try queue.get(timeout: .seconds(5)) == next)
        try queue.taskDone()
        #expect(try queue.join(timeout: .seconds(5)))
        #expect(queue.unfinishedTasks == 0)
    }

    @Test("a SimpleQueue refuses as its queue does")
    func forgedSimple() throws {
        let simple = try SimpleQueue<Bool>()
        Self.forge(simple.queue, [2])
        try simple.put(false)
        Self.expectRefused(simple.queue)
        #expect(try simple.get(timeout: .seconds(5)) == false)
    }

    @Test("a queue made from a handle checks as its maker does; numbers keep the straight path")
    func kinds() throws {
        #expect(ElementCodecs.make(Bool.self, .bitwise) == nil)  // its maker checks
        let decoded = try #require(ElementCodecs.make(Bool.self, .checked))
        #expect(decoded.kind == .checked)
        #expect(throws: QueueError.self) { try [UInt8(2)].withUnsafeBytes { try decoded.decode($0) } }
        #expect(try [UInt8(1)].withUnsafeBytes { try decoded.decode($0) } == true)
        #expect(try Queue<Int>().mode.load(ordering: .relaxed) == QueueMode.straight)
        #expect(try Queue<Double>(ordering: .perProducer).codec.kind == .bitwise)
        #expect(try Queue<Light?>().codec.kind == .bitwise)  // unchecked (documented)
        #expect(try Queue<Bool>().mode.load(ordering: .relaxed) == 0)
    }
}
