import CMultiprocessing
import Synchronization

/// A FIFO queue between threads and processes (Python's `multiprocessing.Queue`).
///
/// Messages live in a shared-memory ring: a forked child that inherits the queue, or a spawned
/// child that receives it in its arguments (it is `Codable`), puts and gets on the very same queue.
/// Any number of processes may put and get; each producer's messages arrive in the order it put
/// them. With nobody waiting, `put` and `get` make no system call.
///
/// ```swift
/// let q = try Queue<String>(maxSize: 5)
/// try q.put("A")
/// try q.put("F", timeout: .seconds(3))      // throws QueueError.full after 3 s
/// let x = try q.get(timeout: .seconds(2))   // throws QueueError.empty
/// ```
///
/// Elements: fixed-size `BitwiseCopyable` values (numbers, and structs of them) are copied as they
/// are, each `Bool` in them checked on the way out; any other `Codable` value (enums and optionals
/// too) goes through a compact binary encoding, which checks what it reads. A message that is not a
/// value of the element type (another process wrote it) throws ``QueueError/decodingFailed(_:)``
/// from the get that takes it, and the queue goes on (see <doc:TrustBoundaries>). A message larger
/// than the ring is streamed through it in pieces and arrives whole; one larger than
/// `maxMessageSize` throws ``QueueError/messageTooLarge(size:limit:)``.
///
/// Whatever its `maxSize` (none: unbounded, as in Python), the ring's bytes (`capacity`) bound the
/// queue too: a put into a full ring waits for a get (forever if nobody gets yet) while ``isFull``
/// is false, where Python's unbounded `put` never blocks. Put a whole input before starting the
/// consumers only into a queue whose `capacity` holds it (16 bytes per `Int`, more for encoded
/// values).
public class Queue<Element: Sendable>: @unchecked Sendable, Codable {
    /// The ring's default size in bytes (its pages are only touched as messages flow).
    public static var defaultCapacity: Int { 1 << 20 }
    /// The default largest message, in bytes.
    public static var defaultMaxMessageSize: Int { 64 << 20 }

    let channel: Channel
    /// The channel's header, kept at hand: the hot path reads no other object.
    @usableFromInline let q: UnsafeMutablePointer<mp_queue_view_t>
    let codec: ElementCodec<Element>
    /// The elements are copied as they are (`codec` is bitwise): put and get inline a direct copy
    /// between the value and the ring, specialized in the caller's module.
    @usableFromInline let copiesBits: Bool
    /// A JoinableQueue: every put counts a task (before the item is visible, so that a fast
    /// `taskDone` finds it) and a failed put undoes it.
    @usableFromInline let countsTasks: Bool
    /// Whether this kind of queue counts a task per put (``JoinableQueue`` does): read once, at init.
    class var isJoinable: Bool { false }
    /// The most messages the queue holds; nil for unbounded (up to the ring's bytes: a put into a
    /// full ring waits, unlike Python's).
    public let maxSize: Int?
    /// The largest message accepted, in bytes.
    public let maxMessageSize: Int
    /// What every put and get reads first, in one relaxed load (a plain load, not a lock): whether
    /// this process closed the queue, and whether its elements take the straight path
    /// (``QueueMode``).
    @usableFromInline let mode: Atomic<UInt8>

    init(
        maxSize: Int?, capacity: Int, maxMessageSize: Int, ordering: QueueOrdering = .causal,
        codec: ElementCodec<Element>
    ) throws(QueueError) {
        // Zero or less is unbounded, as Python's `Queue(maxsize=0)`; stored as nil.
        let maxSize = maxSize.flatMap { $0 > 0 ? $0 : nil }
        if let maxSize, maxSize > Int(Int32.max) { throw .invalidMaxSize(maxSize) }
        guard maxMessageSize >= 1 else { throw .invalidCapacity(maxMessageSize) }
        let joinable = Self.isJoinable
        // Lanes, when asked for, for an unbounded queue of fixed-size values: each producer thread
        // puts into a lock-free lane of its own (see <doc:QueueInternals>). A bounded queue counts
        // its messages and a JoinableQueue its tasks in the ring, under its lock.
        let size = MemoryLayout<Element>.size
        let lanes = ordering == .perProducer && codec.kind == .bitwise && maxSize == nil && !joinable
        let slot = lanes && size <= maxMessageSize ? size : 0
        channel = try Channel(
            capacity: capacity, maxMessages: maxSize ?? 0, maxMessage: maxMessageSize, slotSize: slot)
        q = channel.queue
        self.codec = codec
        copiesBits = codec.kind == .bitwise
        countsTasks = joinable
        self.maxSize = maxSize
        self.maxMessageSize = maxMessageSize
        mode = Atomic(
            QueueMode.of(codec, maxMessageSize: maxMessageSize, countsTasks: joinable, lanes: Self.hasLanes(q)))
    }

    /// Whether the queue has lanes whose slots hold an `Element` (the lane paths' size).
    @usableFromInline
    static func hasLanes(_ q: UnsafeMutablePointer<mp_queue_view_t>) -> Bool {
        q.pointee.lanes != nil && Int(q.pointee.slot_size) == MemoryLayout<Element>.size
    }

    /// A queue of `Codable` elements, at most `maxSize` of them (nil, zero or less: unbounded, as
    /// in Python; more than `Int32.max` is ``QueueError/invalidMaxSize(_:)``). `capacity` is the ring's size in bytes.
    ///
    /// `ordering` is accepted for symmetry with the fixed-size initializers (which it must match
    /// in shape, so that the most constrained one is chosen); an encoded queue is always
    /// ``QueueOrdering/causal``.
    public convenience init(
        maxSize: Int? = nil, capacity: Int = defaultCapacity, maxMessageSize: Int = defaultMaxMessageSize,
        ordering: QueueOrdering = .causal
    ) throws(QueueError) where Element: Codable {
        try self.init(maxSize: maxSize, capacity: capacity, maxMessageSize: maxMessageSize, codec: .binary())
    }

    /// A queue of fixed-size values, copied as they are (the fast path). With
    /// `ordering: .perProducer` an unbounded queue of values up to 512 bytes gives each producer
    /// thread a lock-free lane of its own (see ``QueueOrdering``).
    ///
    /// A get checks each `Bool` in the element, and an enum's tag when it has no payloads (such a
    /// queue takes the encoded paths, without lanes). An element whose bytes a copy cannot check (an optional, an enum with payloads, a struct
    /// holding one) is encoded when it is `Codable` at run time; otherwise its bytes are copied
    /// unchecked: share such a queue only with processes you trust (see <doc:TrustBoundaries>).
    public convenience init(
        maxSize: Int? = nil, capacity: Int = defaultCapacity, maxMessageSize: Int = defaultMaxMessageSize,
        ordering: QueueOrdering = .causal
    ) throws(QueueError) where Element: BitwiseCopyable {
        try self.init(
            maxSize: maxSize, capacity: capacity, maxMessageSize: maxMessageSize, ordering: ordering, codec: .bitwise())
    }

    /// A queue of fixed-size values, copied as they are (the fast path). With
    /// `ordering: .perProducer` an unbounded queue of values up to 512 bytes gives each producer
    /// thread a lock-free lane of its own (see ``QueueOrdering``).
    ///
    /// A get checks each `Bool` in the element (such a queue takes the encoded paths, without
    /// lanes). Enums, optionals and other standard types (a range, a SIMD vector) are encoded
    /// instead, so that a get checks their tags and invariants (also ``QueueOrdering/causal``).
    public convenience init(
        maxSize: Int? = nil, capacity: Int = defaultCapacity, maxMessageSize: Int = defaultMaxMessageSize,
        ordering: QueueOrdering = .causal
    ) throws(QueueError) where Element: BitwiseCopyable & Codable {
        try self.init(
            maxSize: maxSize, capacity: capacity, maxMessageSize: maxMessageSize, ordering: ordering,
            codec: .fixedSize())
    }

    /// Puts `item`, waiting while the queue is full (up to `timeout`; forever when nil).
    /// Throws ``QueueError/full`` if the timeout passes first.
    @inlinable
    public final func put(_ item: Element, timeout: Duration? = nil) throws(QueueError) {
        // One load and a test or two for an open queue whose elements take a straight path.
        if MemoryLayout<Element>.size <= 64 {
            let mode = mode.load(ordering: .relaxed)
            if mode & QueueMode.lanes != 0 {  // straightLanes: a closed queue's mode is closed alone
                return try sendLane(item, deadline: try Deadline.after(timeout, QueueError.self))
            }
            if mode == QueueMode.straight {
                return try sendStraight(item, deadline: try Deadline.after(timeout, QueueError.self))
            }
        }
        try checkOpen()
        try send(item, deadline: try Deadline.after(timeout, QueueError.self))
    }

    /// Puts `item` if there is room at once; throws ``QueueError/full`` otherwise.
    @inlinable
    public final func putNowait(_ item: Element) throws(QueueError) {
        if MemoryLayout<Element>.size <= 64 {
            let mode = mode.load(ordering: .relaxed)
            if mode & QueueMode.lanes != 0 { return try sendLane(item, deadline: 0) }
            if mode == QueueMode.straight { return try sendStraight(item, deadline: 0) }
        }
        try checkOpen()
        try send(item, deadline: 0)
    }

    /// Takes the next item, waiting while the queue is empty (up to `timeout`; forever when nil).
    /// Throws ``QueueError/empty`` if the timeout passes first.
    @inlinable
    public final func get(timeout: Duration? = nil) throws(QueueError) -> Element {
        let mode = mode.load(ordering: .relaxed)
        if mode & QueueMode.lanes != 0 {  // straightLanes: a closed queue's mode is closed alone
            return try receiveLane(deadline: try Deadline.after(timeout, QueueError.self))
        }
        if mode == QueueMode.straight {
            return try receiveCopy(deadline: try Deadline.after(timeout, QueueError.self))
        }
        try checkOpen()
        return try receive(deadline: try Deadline.after(timeout, QueueError.self))
    }

    /// Takes the next item if there is one; throws ``QueueError/empty`` otherwise.
    @inlinable
    public final func getNowait() throws(QueueError) -> Element {
        let mode = mode.load(ordering: .relaxed)
        if mode & QueueMode.lanes != 0 { return try receiveLane(deadline: 0) }
        if mode == QueueMode.straight { return try receiveCopy(deadline: 0) }
        try checkOpen()
        return try receive(deadline: 0)
    }

    /// The number of items in the queue (approximate while others put and get, as in Python).
    public var count: Int { Int(mp_queue_count(q)) }

    /// Whether the queue is empty (approximate).
    public var isEmpty: Bool { count == 0 }

    /// Whether the queue holds `maxSize` items (approximate; never for an unbounded queue).
    public var isFull: Bool { maxSize.map { count >= $0 } ?? false }

    /// No more puts or gets from this process (Python's `close()`); others are not affected.
    public func close() { mode.store(QueueMode.closed, ordering: .relaxed) }  // no straight path either

    /// Shuts the queue down for every process (Python 3.13's `shutdown`): puts throw
    /// ``QueueError/shutDown`` at once; gets throw it once the queue is empty, or at once when
    /// `immediate`. Every blocked put and get wakes up. An immediate shutdown also discards the
    /// items left, marking each one's task done (for ``JoinableQueue/join(timeout:)-8wuf9``); it waits for
    /// a put or get in progress to give up first (microseconds).
    public func shutdown(immediate: Bool = false) { mp_queue_shutdown(q, immediate ? 1 : 0) }

    @inlinable
    final func checkOpen() throws(QueueError) {
        if mode.load(ordering: .relaxed) & QueueMode.closed != 0 { throw .closed }
    }

    /// A put by any path (the encoded one, a task counted, a larger element): specialized in the
    /// caller's module but not inlined, so that `put`, whose straight path is inline, stays small.
    @inlinable @inline(never)
    final func send(_ item: Element, deadline: Int64) throws(QueueError) {
        guard copiesBits else { return try sendEncoded(item, deadline: deadline) }
        let size = MemoryLayout<Element>.size
        if size > maxMessageSize { throw .messageTooLarge(size: size, limit: maxMessageSize) }
        // A JoinableQueue counts its task before the put: not by the straight path.
        if size <= 64, !countsTasks {
            if Self.hasLanes(q) { return try sendLane(item, deadline: deadline) }
            return try sendStraight(item, deadline: deadline)
        }
        if countsTasks { mp_queue_task_add(q) }
        // The value's own bytes go straight into the ring (a fixed-size, trivially copyable type).
        let status = withUnsafePointer(to: item) { mp_queue_put(q, $0, UInt64(size), deadline) }
        if status != MP_OK { try putFailed(status) }
    }

    /// A put of a value copied as it is into a queue with lanes of its size (`mode` straightLanes,
    /// or `send` found it so), at most 64 bytes: the lane's straight path, inline with the size a
    /// constant (mp_queue_straight.h); anything else (no lane yet, a full lane, a shutdown, a
    /// sleeper) through mp_queue_put.
    @inlinable
    final func sendLane(_ item: Element, deadline: Int64) throws(QueueError) {
        let size = UInt64(MemoryLayout<Element>.size)
        let status: mp_status_t
        if size <= 8 {  // in a register: no copy in memory
            var word: UInt64 = 0
            withUnsafeMutableBytes(of: &word) { $0.storeBytes(of: item, as: Element.self) }
            if mp_queue_put_lane_word(q, size, word) != 0 { return }
            status = withUnsafePointer(to: item) { mp_queue_put(q, $0, size, deadline) }
        } else {
            status = withUnsafePointer(to: item) {
                mp_queue_put_lane_straight(q, $0, size) != 0 ? MP_OK : mp_queue_put(q, $0, size, deadline)
            }
        }
        if status != MP_OK { try putFailed(status) }
    }

    /// A put of a value copied as it is into a queue without lanes (`mode` straight, or `send`
    /// found it so), at most 64 bytes: the ring's straight path, inline with the size a constant
    /// (mp_queue_straight.h), with nothing to wait for; anything else through mp_queue_put.
    @inlinable
    final func sendStraight(_ item: Element, deadline: Int64) throws(QueueError) {
        let size = UInt64(MemoryLayout<Element>.size)
        var status = withUnsafePointer(to: item) { mp_queue_put_straight(q, $0, size, deadline) }
        if status == MP_OK { return }
        if status == MP_BUSY { status = withUnsafePointer(to: item) { mp_queue_put(q, $0, size, deadline) } }
        if status != MP_OK { try putFailed(status) }
    }

    /// The encoded path: the codec lends the bytes, which are put as they are.
    @usableFromInline
    final func sendEncoded(_ item: Element, deadline: Int64) throws(QueueError) {
        if countsTasks { mp_queue_task_add(q) }
        var status: mp_status_t = MP_OK
        do {
            // The codec refuses a message over the limit before it holds it whole.
            try codec.withBytes(item, maxMessageSize) { bytes in
                status = mp_queue_put(q, bytes.baseAddress, UInt64(bytes.count), deadline)
            }
        } catch {
            if countsTasks { mp_queue_task_undo(q) }
            throw error
        }
        if status != MP_OK { try putFailed(status) }
    }

    /// A put that did not happen: its task is undone, and the status becomes the error.
    @usableFromInline
    final func putFailed(_ status: mp_status_t) throws(QueueError) -> Never {
        if countsTasks { mp_queue_task_undo(q) }
        throw status == MP_SHUTDOWN ? .shutDown : status == MP_CORRUPTED ? .corrupted : .full
    }

    /// A get by any path: as `send`, not inlined.
    @inlinable @inline(never)
    final func receive(deadline: Int64) throws(QueueError) -> Element {
        guard copiesBits else { return try receiveDecoded(deadline: deadline) }
        if Self.hasLanes(q) { return try receiveLane(deadline: deadline) }
        return try receiveCopy(deadline: deadline)
    }

    /// A get from a queue with lanes of the element's size (`mode` straightLanes): a lane's straight
    /// path, inline with the size a constant (mp_queue_straight.h), where the value is copied out
    /// (in registers up to 8 bytes) and taken by one CAS, with no lock; anything else (an empty
    /// lane, the end of the thread's turn) through the consumer lock. No Optional: unspecialized
    /// callers look up no generic metadata.
    @inlinable
    final func receiveLane(deadline: Int64) throws(QueueError) -> Element {
        let size = UInt64(MemoryLayout<Element>.size)
        if size <= 8, MemoryLayout<Element>.alignment <= 8 {
            let taken = mp_queue_get_lane_word(q, size)
            // A trivial type: the bytes are the value.
            if taken.taken != 0 { return withUnsafeBytes(of: taken.word) { $0.load(as: Element.self) } }
        } else if size <= 64, MemoryLayout<Element>.alignment <= 8, let taken = mp_queue_get_lane_straight(q, size) {
            return taken.load(as: Element.self)  // a trivial type: the bytes are the value
        }
        return try receiveCopy(deadline: deadline)
    }

    /// A get of a value copied as it is (`copiesBits`), through the consumer lock: the ring's, or a
    /// lane's when its straight path did not apply. The ring has no straight get, unlike its put: a
    /// get that costs less than the put feeding it catches up with its producer and polls the
    /// producer's line, which then slows every put (SPSC 8 B, two pinned threads, medians of 10
    /// interleaved runs: 80 -> under 30 M msg/s through the ring).
    @inlinable
    final func receiveCopy(deadline: Int64) throws(QueueError) -> Element {
        let size = UInt64(MemoryLayout<Element>.size)
        var payload: UnsafeRawPointer? = nil
        var length: UInt64 = 0
        var total: UInt64 = 0
        let status = mp_queue_get_begin(q, deadline, &payload, &length, &total)
        // A record's payload is 8-aligned in the ring: the value is loaded where it lies (no
        // temporary, no Optional, so unspecialized callers look up no generic metadata either).
        if status == MP_OK, length == size, total == size, MemoryLayout<Element>.alignment <= 8, let payload {
            let value = payload.load(as: Element.self)  // a trivial type: the bytes are the value
            mp_queue_get_end(q)
            return value
        }
        return try receiveOther(status, payload, length: length, total: total, deadline: deadline)
    }

    /// The copy path's other outcomes: a failure, or (MP_OK, the consumer lock held) a message of
    /// another size, one that came in pieces, or an element aligned beyond the ring's 8 bytes.
    @usableFromInline
    final func receiveOther(
        _ status: mp_status_t, _ payload: UnsafeRawPointer?, length: UInt64, total: UInt64, deadline: Int64
    ) throws(QueueError) -> Element {
        switch status {
        case MP_OK: break
        case MP_SHUTDOWN: throw .shutDown
        case MP_CORRUPTED: throw .corrupted
        default: throw .empty
        }
        if total == length {
            defer { mp_queue_get_end(q) }
            return try decodeTaken(UnsafeRawBufferPointer(start: payload, count: Int(length)))
        }
        return try receiveRest(total, deadline: deadline)
    }

    /// The encoded path: the codec reads the message where it lies in the ring.
    @usableFromInline
    final func receiveDecoded(deadline: Int64) throws(QueueError) -> Element {
        let next = beginGet(q, deadline)
        switch next.status {
        case MP_OK: break
        case MP_SHUTDOWN: throw .shutDown
        case MP_CORRUPTED: throw .corrupted
        default: throw .empty
        }
        if next.total == UInt64(next.first.count) {
            defer { mp_queue_get_end(q) }
            return try decodeTaken(next.first)
        }
        return try receiveRest(next.total, deadline: deadline)
    }

    /// Reassembles a message that came in pieces (kept out of the common path, which then needs
    /// no generic metadata at run time).
    @inline(never)
    private func receiveRest(_ total: UInt64, deadline: Int64) throws(QueueError) -> Element {
        let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(total), alignment: 16)
        defer { whole.deallocate() }
        switch mp_queue_get_rest(q, whole.baseAddress!, total) {
        case MP_ABORTED: return try receive(deadline: deadline)  // its producer died midway: take the next message
        case MP_CORRUPTED: throw .corrupted
        default: break
        }
        return try decodeTaken(UnsafeRawBufferPointer(whole))
    }

    /// The element in a message a get has taken. One whose bytes are not an element is consumed
    /// all the same, and (in a JoinableQueue) its task marked done: no caller gets it to do so.
    final func decodeTaken(_ bytes: UnsafeRawBufferPointer) throws(QueueError) -> Element {
        do { return try codec.decode(bytes) } catch {
            if countsTasks { _ = mp_queue_task_done(q) }  // refused when no task is counted: a forged message
            throw error
        }
    }

    // MARK: Codable: the handle a spawned child uses

    private enum CodingKeys: String, CodingKey { case region, codec, maxSize, maxMessageSize }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        SpawnReferences.note(channel.region)
        try c.encode(channel.region.id, forKey: .region)
        try c.encode(codec.kind, forKey: .codec)
        try c.encodeIfPresent(maxSize, forKey: .maxSize)
        try c.encode(maxMessageSize, forKey: .maxMessageSize)
    }

    /// Resolves a queue handed over by another process.
    public required init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        maxMessageSize = try c.decode(Int.self, forKey: .maxMessageSize)
        channel = try Channel(regionID: try c.decode(UInt64.self, forKey: .region), maxMessage: maxMessageSize)
        q = channel.queue
        countsTasks = Self.isJoinable
        maxSize = try c.decodeIfPresent(Int.self, forKey: .maxSize)
        let kind = try c.decode(ElementCodec<Element>.Kind.self, forKey: .codec)
        guard let codec = ElementCodecs.make(Element.self, kind) else {
            throw QueueError.decodingFailed("\(Element.self) cannot use the \(kind) encoding of this queue")
        }
        self.codec = codec
        copiesBits = codec.kind == .bitwise
        mode = Atomic(
            QueueMode.of(codec, maxMessageSize: maxMessageSize, countsTasks: countsTasks, lanes: Self.hasLanes(q)))
    }
}

/// The start of the next message (non-generic, so that no generic metadata is looked up per get).
func beginGet(_ q: UnsafeMutablePointer<mp_queue_view_t>, _ deadline: Int64) -> (
    status: mp_status_t, first: UnsafeRawBufferPointer, total: UInt64
) {
    var payload: UnsafeRawPointer? = nil
    var length: UInt64 = 0
    var total: UInt64 = 0
    let status = mp_queue_get_begin(q, deadline, &payload, &length, &total)
    return (status, UnsafeRawBufferPointer(start: payload, count: Int(length)), total)
}

/// Builds a codec by kind for a type known only at run time (decoding a queue's handle).
enum ElementCodecs {
    static func make<Element>(_ type: Element.Type, _ kind: ElementCodec<Element>.Kind) -> ElementCodec<Element>? {
        switch kind {
        case .binary:
            guard let codable = type as? any Codable.Type else { return nil }
            return binary(codable, as: type)
        case .bitwise, .checked:
            let codec = bitwise(type)
            return codec?.kind == kind ? codec : nil  // the checks its maker chose
        }
    }

    private static func binary<C: Codable, Element>(_ codable: C.Type, as: Element.Type) -> ElementCodec<Element>? {
        let inner = ElementCodec<C>.binary()
        return ElementCodec<Element>(
            kind: .binary,
            withBytes: { value, limit, body throws(QueueError) in try inner.withBytes(value as! C, limit, body) },
            decode: { bytes throws(QueueError) in try inner.decode(bytes) as! Element })
    }

    private static func bitwise<Element>(_ type: Element.Type) -> ElementCodec<Element>? {
        guard _isPOD(type) else { return nil }  // a fixed-size, trivially copyable type
        return .copying(BitwiseLayout.of(type)) { bytes in
            withUnsafeTemporaryAllocation(of: Element.self, capacity: 1) { slot in
                let raw = UnsafeMutableRawPointer(slot.baseAddress!)
                raw.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
                return slot.baseAddress!.move()  // a trivial type: the bytes are the value
            }
        }
    }
}
