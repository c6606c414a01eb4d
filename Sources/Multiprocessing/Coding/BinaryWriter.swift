/// The output of one ``BinaryCoding/encode(_:into:)`` call, shared by its encoder and containers.
///
/// It lives on the stack of that call and they reach it through a pointer, so that encoding a
/// value allocates no object and pays no exclusivity check (an encoder must not outlive the
/// `encode(to:)` call it was given, as `Codable` requires anyway). Its buffers start on that stack
/// too; the message is copied to the caller's array once complete.
///
/// Containers are written in place: a container's header is written when the container is asked
/// for, and its size and count are filled in when it is closed. A container is closed when the
/// value that owns it is finished, or when an enclosing container writes its next entry; a
/// container used after that (`Codable` allows interleaving writes to several containers, which a
/// single pass cannot lay out) throws ``BinaryCodingError/unsupported(_:)``.
struct BinaryWriter {
    /// An open container.
    struct Frame {
        /// Offset of the container's tag byte.
        let header: Int
        /// Elements so far (unkeyed containers record it in their header).
        var count: Int
        /// Where a value asked for with `superEncoder()` starts, if it is still owed: an empty keyed
        /// container is written there if the value turns out to write nothing.
        var pendingSlot: Int
    }

    /// A container's place on the stack of open frames.
    struct FrameReference {
        let index: Int
        let header: Int

        /// A container that failed to open; its writes throw ``BinaryWriter/failure``.
        static let invalid = FrameReference(index: -1, header: -1)
    }

    /// The message so far.
    var bytes: ScratchBuffer<UInt8>
    /// Open containers, innermost last.
    var frames: ScratchBuffer<Frame>
    /// Values being encoded, to refuse nesting deeper than ``BinaryCoding/maximumDepth``.
    var depth = 0
    /// The lent containers out, which a value returns when it is finished.
    var loans = ContainerLoans()
    /// The first misuse seen by a call that cannot throw (`nestedContainer`, `superEncoder`).
    var failure: BinaryCodingError?
    /// The most bytes the message may take. Once outgrown it is set to 0, so that the one check
    /// every entry makes (``beginEntry(_:key:elements:)``) stops the encoding: a message over the
    /// limit is refused after at most one more entry, never held whole.
    private(set) var limit: Int
    /// The size the message had reached when it outgrew ``limit`` (0 while it has not).
    private var outgrown = 0
    /// ``limit`` as the caller set it.
    private let requestedLimit: Int

    init(bytes: UnsafeMutableBufferPointer<UInt8>, frames: UnsafeMutableBufferPointer<Frame>, limit: Int = .max) {
        self.bytes = ScratchBuffer(bytes)
        self.frames = ScratchBuffer(frames)
        self.limit = limit
        self.requestedLimit = limit
    }

    /// Why the encoding must stop, if it must: a misuse, or a message over the limit.
    var stopReason: BinaryCodingError? {
        if let failure { return failure }
        if bytes.count > limit { return .tooLarge(atLeast: max(outgrown, bytes.count), limit: requestedLimit) }
        return nil
    }

    /// Whether a length and `count` bytes of content fit under the limit; if not, the encoding is
    /// marked as outgrown (and the caller writes nothing: the output is abandoned).
    @inline(__always)
    private mutating func fits(lengthAndContent count: Int) -> Bool {
        let lengthBytes = count < 0x80 ? 1 : (70 - UInt64(count).leadingZeroBitCount) / 7  // LEB128
        let extra = lengthBytes + count
        if extra <= limit - bytes.count { return true }
        outgrow(to: bytes.count + extra)
        return false
    }

    private mutating func outgrow(to size: Int) {
        outgrown = max(outgrown, size)
        limit = min(limit, bytes.count - 1)
    }

    /// Frees what the buffers allocated; the writer must not be used afterwards.
    mutating func release() {
        bytes.release()
        frames.release()
    }

    // MARK: Containers

    /// Opens a container of `tag` for the value that starts at `start`, or returns the one that
    /// value already opened (a subclass and its superclass may each ask the same encoder).
    mutating func openContainer(_ tag: UInt8, at start: Int, level: Int) -> FrameReference {
        if bytes.count == start && frames.count == level {
            bytes.append(tag)
            bytes.appendLittleEndian(0, count: tag == BinaryTag.keyed ? 4 : 8)
            frames.append(Frame(header: start, count: 0, pendingSlot: -1))
            return FrameReference(index: level, header: start)
        }
        if level >= 0, level < frames.count, frames[level].header == start, bytes[start] == tag {
            return FrameReference(index: level, header: start)
        }
        fail("a value asked for a second container of another kind, or for one after writing")
        return .invalid
    }

    /// Starts the next entry of `frame` (of `elements` elements), with its key if `frame` is keyed:
    /// closes the containers opened inside `frame` since its last entry.
    @inline(__always)
    mutating func beginEntry(_ frame: FrameReference, key: String?, elements: Int = 1) throws(BinaryCodingError) {
        guard frame.index >= 0, frame.index < frames.count, frames[frame.index].header == frame.header else {
            throw failure ?? .unsupported("a container was written to after its value was finished")
        }
        if bytes.count > limit, let reason = stopReason { throw reason }
        if frames.count > frame.index + 1 { try close(downTo: frame.index + 1) }
        if frames[frame.index].pendingSlot >= 0 { settlePendingSlot(frame.index) }
        frames[frame.index].count += elements
        if let key { writeText(key) }
    }

    /// A container as the next entry of `frame` (`nestedContainer`).
    mutating func openNested(_ tag: UInt8, in frame: FrameReference, key: String?) -> FrameReference {
        do {
            try beginEntry(frame, key: key)
            return openContainer(tag, at: bytes.count, level: frame.index + 1)
        } catch {
            fail(error)
            return .invalid
        }
    }

    /// An encoder for the next entry of `frame`, which its user may leave empty (`superEncoder`).
    mutating func superEncoder(
        _ pointer: UnsafeMutablePointer<BinaryWriter>, in frame: FrameReference, key: String?
    ) -> BinaryEncoder {
        do {
            try beginEntry(frame, key: key)
        } catch {
            fail(error)
            return BinaryEncoder(writer: pointer, start: -1, level: -1)
        }
        frames[frame.index].pendingSlot = bytes.count
        return BinaryEncoder(writer: pointer, start: bytes.count, level: frame.index + 1)
    }

    /// Closes the containers above `level`, innermost first, filling in their sizes.
    mutating func close(downTo level: Int) throws(BinaryCodingError) {
        while frames.count > level {
            settlePendingSlot(frames.count - 1)
            let frame = frames.removeLast()
            let headerSize =
                bytes[frame.header] == BinaryTag.keyed ? BinaryTag.keyedHeaderSize : BinaryTag.unkeyedHeaderSize
            let size = bytes.count - frame.header - headerSize
            guard size <= UInt32.max, frame.count <= UInt32.max else {
                throw .unsupported("a container of more than 4 GiB or 2^32 elements")
            }
            bytes.store(UInt32(size), at: frame.header + 1)
            if headerSize == BinaryTag.unkeyedHeaderSize { bytes.store(UInt32(frame.count), at: frame.header + 5) }
        }
    }

    /// Writes an empty keyed container for a `superEncoder()` value that wrote nothing, so the
    /// entry is well formed and reads back as any other value that wrote nothing does (and as
    /// JSONEncoder's `{}`): a superclass that writes nothing then asks its decoder for a container.
    private mutating func settlePendingSlot(_ index: Int) {
        if frames[index].pendingSlot == bytes.count {
            bytes.append(BinaryTag.keyed)
            bytes.appendLittleEndian(0, count: 4)
        }
        frames[index].pendingSlot = -1
    }

    /// Records the first misuse seen where nothing can throw; the top-level call throws it.
    mutating func fail(_ message: String) { fail(.unsupported(message)) }

    mutating func fail(_ error: BinaryCodingError) {
        if failure == nil { failure = error }
    }

    // MARK: Values

    mutating func writeNil() { bytes.append(BinaryTag.null) }

    mutating func write(_ value: Bool) { bytes.append(value ? BinaryTag.true : BinaryTag.false) }

    mutating func write(_ value: Float) {
        bytes.append(BinaryTag.float)
        appendLittleEndian(UInt64(value.bitPattern), count: 4)
    }

    mutating func write(_ value: Double) {
        bytes.append(BinaryTag.double)
        appendLittleEndian(value.bitPattern, count: 8)
    }

    /// Any signed integer up to 64 bits, in as few bytes as keep its sign.
    mutating func writeSigned(_ value: Int64) {
        let magnitude = UInt64(bitPattern: value ^ (value >> 63))
        let count = value == 0 ? 0 : (72 - magnitude.leadingZeroBitCount) / 8
        bytes.append(BinaryTag.signed + UInt8(count))
        appendLittleEndian(UInt64(bitPattern: value), count: count)
    }

    /// Any unsigned integer up to 64 bits, in as few bytes as it needs.
    mutating func writeUnsigned(_ value: UInt64) {
        let count = (71 - value.leadingZeroBitCount) / 8
        bytes.append(BinaryTag.unsigned + UInt8(count))
        appendLittleEndian(value, count: count)
    }

    mutating func write(_ value: Int128) {
        guard let small = Int64(exactly: value) else {
            let magnitude = UInt128(bitPattern: value ^ (value >> 127))
            let count = (136 - magnitude.leadingZeroBitCount) / 8
            bytes.append(BinaryTag.signed + UInt8(count))
            appendLittleEndian(UInt64(truncatingIfNeeded: value), count: 8)
            appendLittleEndian(UInt64(truncatingIfNeeded: value >> 64), count: count - 8)
            return
        }
        writeSigned(small)
    }

    mutating func write(_ value: UInt128) {
        guard let small = UInt64(exactly: value) else {
            let count = (135 - value.leadingZeroBitCount) / 8
            bytes.append(BinaryTag.unsigned + UInt8(count))
            appendLittleEndian(UInt64(truncatingIfNeeded: value), count: 8)
            appendLittleEndian(UInt64(truncatingIfNeeded: value >> 64), count: count - 8)
            return
        }
        writeUnsigned(small)
    }

    mutating func write(_ value: String) {
        bytes.append(BinaryTag.string)
        writeText(value)
    }

    /// A key or a string's content: its UTF-8 length, then its UTF-8.
    mutating func writeText(_ text: String) {
        guard fits(lengthAndContent: text.utf8.count) else { return }
        let written: Void? = text.utf8.withContiguousStorageIfAvailable { utf8 in
            writeLength(utf8.count)
            bytes.append(short: utf8)
        }
        if written == nil {
            let utf8 = Array(text.utf8)
            writeLength(utf8.count)
            utf8.withUnsafeBufferPointer { bytes.append(contentsOf: $0) }
        }
    }

    /// `tag` (``BinaryTag/bytes`` or ``BinaryTag/byteRun``), the length, then the bytes.
    mutating func writeBytes(_ tag: UInt8, _ content: UnsafeRawBufferPointer) {
        bytes.append(tag)
        guard fits(lengthAndContent: content.count) else { return }
        writeLength(content.count)
        bytes.append(raw: content)
    }

    /// An unsigned LEB128 varint: 7 bits a byte, low bits first.
    @inline(__always)
    mutating func writeLength(_ length: Int) {
        if length < 0x80 {
            bytes.append(UInt8(length))  // keys and short strings
        } else {
            writeLongLength(length)
        }
    }

    private mutating func writeLongLength(_ length: Int) {
        var rest = UInt64(length)
        while rest >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }

    private mutating func appendLittleEndian(_ value: UInt64, count: Int) {
        bytes.appendLittleEndian(value, count: count)
    }
}
