/// The input of one ``BinaryCoding/decode(_:from:)`` call, shared by its decoder and containers,
/// with the bounds-checked reads of every kind of value.
///
/// It lives on the stack of that call and they reach it through a pointer, as the input itself is
/// a pointer valid only during the call. A value is addressed by its offset and the end of the
/// bytes it may use: no read goes past that end, and a length that would is refused.
struct BinaryReader {
    /// Where a keyed container's next entry probably is: synthesized `init(from:)` reads keys in
    /// the order `encode(to:)` wrote them, so one comparison usually finds the key.
    struct KeyHint {
        var container: Int
        var next: Int
    }

    /// Slots for hints, chosen by a hash of the container's offset (a collision only costs a scan).
    static let hintCount = 1 << hintBits
    private static let hintBits = 4

    /// Stack storage for ``hintCount`` hints, all empty: a homogeneous tuple, laid out as an array.
    struct HintSlots {
        var slots:
            (
                KeyHint, KeyHint, KeyHint, KeyHint, KeyHint, KeyHint, KeyHint, KeyHint,
                KeyHint, KeyHint, KeyHint, KeyHint, KeyHint, KeyHint, KeyHint, KeyHint
            )
        init() {
            let empty = KeyHint(container: -1, next: 0)
            slots = (
                empty, empty, empty, empty, empty, empty, empty, empty,
                empty, empty, empty, empty, empty, empty, empty, empty
            )
        }
    }

    let base: UnsafeRawPointer
    let count: Int
    let hints: UnsafeMutablePointer<KeyHint>
    /// Values being decoded, to refuse nesting deeper than ``BinaryCoding/maximumDepth``.
    var depth = 0
    /// The lent containers out, which a value returns when it is finished.
    var loans = ContainerLoans()
    /// Key tables of large keyed containers read out of order (by container offset): key to entry.
    /// Nil until the first (most messages need none, and an empty dictionary costs a release).
    var tables: [Int: [String: Int]]?
    /// The first malformed input seen by a call that cannot throw (`allKeys`, `contains`): the
    /// top-level call throws it, so that what such a call left out is never taken for the message.
    var failure: BinaryCodingError?

    init(base: UnsafeRawPointer, count: Int, hints: UnsafeMutablePointer<KeyHint>) {
        self.base = base
        self.count = count
        self.hints = hints
    }

    func hint(for container: Int) -> UnsafeMutablePointer<KeyHint> {
        hints + Int(truncatingIfNeeded: (UInt(bitPattern: container) &* 0x9e37_79b9_7f4a_7c15) >> (64 - Self.hintBits))
    }

    // MARK: Structure

    /// The tag of the value at `offset`.
    @inline(__always)
    func tag(at offset: Int, end: Int) throws(BinaryCodingError) -> UInt8 {
        guard offset < end else { throw .truncated }
        return base.load(fromByteOffset: offset, as: UInt8.self)
    }

    /// The end of the value that starts at `offset`, in constant time.
    @inline(__always)
    func skip(at offset: Int, end: Int) throws(BinaryCodingError) -> Int {
        // Inline for integers (most values), a call for the rest.
        guard offset < end else { throw .truncated }
        let tag = base.load(fromByteOffset: offset, as: UInt8.self)
        let signedBytes = tag &- BinaryTag.signed
        let integerBytes = signedBytes <= 16 ? signedBytes : tag &- BinaryTag.unsigned
        guard integerBytes <= 16 else { return try skipOther(at: offset, end: end) }
        let next = offset + 1 + Int(integerBytes)
        guard next <= end else { throw .truncated }
        return next
    }

    private func skipOther(at offset: Int, end: Int) throws(BinaryCodingError) -> Int {
        let tag = try tag(at: offset, end: end)
        var next = offset + 1
        switch tag {
        case BinaryTag.null, BinaryTag.false, BinaryTag.true: break
        case BinaryTag.float: next += 4
        case BinaryTag.double: next += 8
        case BinaryTag.string, BinaryTag.bytes, BinaryTag.byteRun:
            let length = try length(at: &next, end: end)
            next += length
        case BinaryTag.unkeyed:
            next = try content(at: offset, end: end, headerSize: BinaryTag.unkeyedHeaderSize).upperBound
        case BinaryTag.keyed: next = try content(at: offset, end: end, headerSize: BinaryTag.keyedHeaderSize).upperBound
        case BinaryTag.signed...(BinaryTag.signed + 16): next += Int(tag - BinaryTag.signed)
        case BinaryTag.unsigned...(BinaryTag.unsigned + 16): next += Int(tag - BinaryTag.unsigned)
        default: throw .invalidData("unknown tag 0x\(String(tag, radix: 16)) at offset \(offset)")
        }
        guard next <= end else { throw .truncated }
        return next
    }

    /// The content of the container at `offset`, after its header.
    func content(at offset: Int, end: Int, headerSize: Int) throws(BinaryCodingError) -> Range<Int> {
        guard headerSize <= end - offset else { throw .truncated }
        let size = Int(UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset + 1, as: UInt32.self)))
        guard size <= end - offset - headerSize else { throw .truncated }
        return (offset + headerSize)..<(offset + headerSize + size)
    }

    /// The content of the keyed container at `offset`: its entries.
    func keyedContent(at offset: Int, end: Int) throws(BinaryCodingError) -> Range<Int> {
        let tag = try tag(at: offset, end: end)
        guard tag == BinaryTag.keyed else { throw mismatch("a keyed container", tag) }
        return try content(at: offset, end: end, headerSize: BinaryTag.keyedHeaderSize)
    }

    /// A varint length at `offset` (moved past it) that fits before `end`.
    @inline(__always)
    func length(at offset: inout Int, end: Int) throws(BinaryCodingError) -> Int {
        guard offset < end else { throw .truncated }
        let first = base.load(fromByteOffset: offset, as: UInt8.self)
        guard first >= 0x80 else {  // keys and short strings: one byte
            offset += 1
            guard Int(first) <= end - offset else { throw .truncated }
            return Int(first)
        }
        return try longLength(at: &offset, end: end)
    }

    private func longLength(at offset: inout Int, end: Int) throws(BinaryCodingError) -> Int {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < end else { throw .truncated }
            let byte = base.load(fromByteOffset: offset, as: UInt8.self)
            offset += 1
            guard shift < 63 || byte <= 1 else { throw .invalidData("a varint longer than 64 bits") }
            value |= UInt64(byte & 0x7f) << shift
            if byte < 0x80 { break }
            shift += 7
        }
        guard value <= UInt64(end - offset) else { throw .truncated }
        return Int(value)
    }

    /// The bytes `range` of the input.
    func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    /// A copy of the bytes `range` of the input (one `memcpy`). Not `init(unsafeUninitializedCapacity:)`,
    /// which allocates through an unspecialized generic (a metadata look-up per array).
    func byteArray(_ range: Range<Int>) -> [UInt8] {
        [UInt8](bytes(range))
    }

    func mismatch(_ expected: String, _ tag: UInt8) -> BinaryCodingError {
        .typeMismatch(expected: expected, found: BinaryTag.describe(tag))
    }

    // MARK: Values

    func integer<I: FixedWidthInteger>(_ type: I.Type, at offset: Int, end: Int) throws(BinaryCodingError) -> I {
        let tag = try tag(at: offset, end: end)
        let isSigned = tag &- BinaryTag.signed <= 16
        guard isSigned || tag &- BinaryTag.unsigned <= 16 else { throw mismatch(String(describing: I.self), tag) }
        let count = Int(isSigned ? tag &- BinaryTag.signed : tag &- BinaryTag.unsigned)
        guard count < end - offset else { throw .truncated }
        let value: I?
        if count <= 8 {
            let raw = littleEndian(at: offset + 1, count: count)
            let shift = 64 - 8 * count
            value = isSigned ? I(exactly: Int64(bitPattern: raw << shift) >> shift) : I(exactly: raw)
        } else {
            let raw =
                UInt128(littleEndian(at: offset + 1, count: 8))
                | UInt128(littleEndian(at: offset + 9, count: count - 8)) << 64
            let shift = 128 - 8 * count
            value = isSigned ? I(exactly: Int128(bitPattern: raw << shift) >> shift) : I(exactly: raw)
        }
        guard let value else { throw .invalidData("an integer out of the range of \(I.self)") }
        return value
    }

    /// `count` (at most 8) bytes at `offset`, which the caller has checked are in the input.
    @inline(__always)
    private func littleEndian(at offset: Int, count: Int) -> UInt64 {
        if offset + 8 <= self.count {  // one load, masked: the bytes past the value are ours to read
            let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
            return count == 8 ? word : word & ((1 << UInt64(8 * count)) &- 1)
        }
        var value: UInt64 = 0
        for index in 0..<count {
            value |= UInt64(base.load(fromByteOffset: offset + index, as: UInt8.self)) << (8 * index)
        }
        return value
    }

    func bool(at offset: Int, end: Int) throws(BinaryCodingError) -> Bool {
        let tag = try tag(at: offset, end: end)
        guard tag == BinaryTag.true || tag == BinaryTag.false else { throw mismatch("Bool", tag) }
        return tag == BinaryTag.true
    }

    func float(at offset: Int, end: Int) throws(BinaryCodingError) -> Float {
        let tag = try tag(at: offset, end: end)
        guard tag == BinaryTag.float else { throw mismatch("Float", tag) }
        guard 4 < end - offset else { throw .truncated }
        return Float(bitPattern: UInt32(littleEndian: base.loadUnaligned(fromByteOffset: offset + 1, as: UInt32.self)))
    }

    /// A `Double`, or a `Float` widened (exactly).
    func double(at offset: Int, end: Int) throws(BinaryCodingError) -> Double {
        let tag = try tag(at: offset, end: end)
        if tag == BinaryTag.float { return Double(try float(at: offset, end: end)) }
        guard tag == BinaryTag.double else { throw mismatch("Double", tag) }
        guard 8 < end - offset else { throw .truncated }
        return Double(bitPattern: UInt64(littleEndian: base.loadUnaligned(fromByteOffset: offset + 1, as: UInt64.self)))
    }

    func string(at offset: Int, end: Int) throws(BinaryCodingError) -> String {
        let tag = try tag(at: offset, end: end)
        guard tag == BinaryTag.string else { throw mismatch("String", tag) }
        var start = offset + 1
        let length = try length(at: &start, end: end)
        // `String(validating:as:)` calls an unspecialized generic (a metadata lookup per string);
        // `_tryFromUTF8` is the validation it and `String(validatingCString:)` use underneath.
        let string = bytes(start..<(start + length)).withMemoryRebound(to: UInt8.self) { String._tryFromUTF8($0) }
        guard let string else { throw .invalidData("a string not in UTF-8") }
        return string
    }

    /// Where the content of the bytes value (a `[UInt8]`) at `offset` is.
    func blob(at offset: Int, end: Int) throws(BinaryCodingError) -> Range<Int> {
        let tag = try tag(at: offset, end: end)
        guard tag == BinaryTag.bytes else { throw mismatch("bytes", tag) }
        var start = offset + 1
        let length = try length(at: &start, end: end)
        return start..<(start + length)
    }

    func isNil(at offset: Int, end: Int) throws(BinaryCodingError) -> Bool {
        try tag(at: offset, end: end) == BinaryTag.null
    }
}
