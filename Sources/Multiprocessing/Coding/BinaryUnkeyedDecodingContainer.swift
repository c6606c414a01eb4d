/// An unkeyed container being read: its elements, in order.
///
/// A run of bytes (how `Data` writes itself) counts as that many `UInt8` elements, and so does a
/// bytes value (a `[UInt8]`) read as an unkeyed container, so the two forms read as each other.
struct BinaryUnkeyedDecodingContainer: UnkeyedDecodingContainer {
    let reader: UnsafeMutablePointer<BinaryReader>
    let end: Int
    let count: Int?
    private(set) var currentIndex = 0
    /// The next element, or the next byte of a run.
    private var offset: Int
    /// The end of the run of bytes that `offset` is in; `offset` is in none when it is not below.
    private var runEnd: Int

    var codingPath: [any CodingKey] { [] }
    var isAtEnd: Bool { offset >= end }

    /// The container that the value at `offset` holds.
    init(reader: UnsafeMutablePointer<BinaryReader>, offset: Int, end: Int) throws(BinaryCodingError) {
        self.reader = reader
        let tag = try reader.pointee.tag(at: offset, end: end)
        if tag == BinaryTag.unkeyed {
            let content = try reader.pointee.content(at: offset, end: end, headerSize: BinaryTag.unkeyedHeaderSize)
            let count = Int(
                UInt32(littleEndian: reader.pointee.base.loadUnaligned(fromByteOffset: offset + 5, as: UInt32.self)))
            // Each element takes a byte at least: a larger count is a lie that could make a reader
            // reserve gigabytes.
            guard count <= content.count else {
                throw .invalidData("an unkeyed container counts more elements than bytes")
            }
            self.count = count
            self.offset = content.lowerBound
            self.end = content.upperBound
            self.runEnd = content.lowerBound
        } else if tag == BinaryTag.bytes {
            let content = try reader.pointee.blob(at: offset, end: end)
            self.count = content.count
            self.offset = content.lowerBound
            self.end = content.upperBound
            self.runEnd = content.upperBound
        } else {
            throw reader.pointee.mismatch("an unkeyed container", tag)
        }
    }

    /// Where the next element is (it stays the next one until `advance(to:)`).
    private func next(_ type: Any.Type) throws(BinaryCodingError) -> Range<Int> {
        guard offset < end else { throw .invalidData("an unkeyed container has no more elements") }
        guard offset >= runEnd else { throw .typeMismatch(expected: String(describing: type), found: "a byte") }
        return offset..<(try reader.pointee.skip(at: offset, end: end))
    }

    private mutating func advance(to offset: Int) {
        self.offset = offset
        currentIndex += 1
    }

    mutating func decodeNil() throws -> Bool {
        if offset < runEnd { return false }
        let element = try next(Never.self)
        guard try reader.pointee.isNil(at: element.lowerBound, end: element.upperBound) else { return false }
        advance(to: element.upperBound)
        return true
    }

    mutating func decode(_ type: Bool.Type) throws -> Bool {
        let element = try next(type)
        let value = try reader.pointee.bool(at: element.lowerBound, end: element.upperBound)
        advance(to: element.upperBound)
        return value
    }

    mutating func decode(_ type: String.Type) throws -> String {
        let element = try next(type)
        let value = try reader.pointee.string(at: element.lowerBound, end: element.upperBound)
        advance(to: element.upperBound)
        return value
    }

    mutating func decode(_ type: Double.Type) throws -> Double {
        let element = try next(type)
        let value = try reader.pointee.double(at: element.lowerBound, end: element.upperBound)
        advance(to: element.upperBound)
        return value
    }

    mutating func decode(_ type: Float.Type) throws -> Float {
        let element = try next(type)
        let value = try reader.pointee.float(at: element.lowerBound, end: element.upperBound)
        advance(to: element.upperBound)
        return value
    }

    mutating func decode(_ type: Int.Type) throws -> Int { try integer() }
    mutating func decode(_ type: Int8.Type) throws -> Int8 { try integer() }
    mutating func decode(_ type: Int16.Type) throws -> Int16 { try integer() }
    mutating func decode(_ type: Int32.Type) throws -> Int32 { try integer() }
    mutating func decode(_ type: Int64.Type) throws -> Int64 { try integer() }
    mutating func decode(_ type: Int128.Type) throws -> Int128 { try integer() }
    mutating func decode(_ type: UInt.Type) throws -> UInt { try integer() }
    mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try integer() }
    mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try integer() }
    mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try integer() }
    mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try integer() }
    mutating func decode(_ type: UInt128.Type) throws -> UInt128 { try integer() }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        if T.self == UInt8.self { return unsafeBitCast(try integer() as UInt8, to: T.self) }
        let element = try next(type)
        let value = try BinaryDecoder.decodeValue(type, reader, at: element.lowerBound, end: element.upperBound)
        advance(to: element.upperBound)
        return value
    }

    /// An integer element, or the next byte of a run (entered if the next element is one).
    private mutating func integer<I: FixedWidthInteger>() throws(BinaryCodingError) -> I {
        if offset >= runEnd, offset < end, try reader.pointee.tag(at: offset, end: end) == BinaryTag.byteRun {
            var start = offset + 1
            let length = try reader.pointee.length(at: &start, end: end)
            guard length > 0 else { throw .invalidData("an empty run of bytes") }
            offset = start
            runEnd = start + length
        }
        if offset < runEnd {
            let byte = reader.pointee.base.load(fromByteOffset: offset, as: UInt8.self)
            guard let value = I(exactly: byte) else { throw .invalidData("an integer out of the range of \(I.self)") }
            advance(to: offset + 1)
            return value
        }
        let element = try next(I.self)
        let value = try reader.pointee.integer(I.self, at: element.lowerBound, end: element.upperBound)
        advance(to: element.upperBound)
        return value
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws -> KeyedDecodingContainer<NestedKey> {
        let element = try next(KeyedDecodingContainer<NestedKey>.self)
        let container = try decoder(element).container(keyedBy: type)
        advance(to: element.upperBound)
        return container
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let element = try next(BinaryUnkeyedDecodingContainer.self)
        let container = try decoder(element).unkeyedContainer()
        advance(to: element.upperBound)
        return container
    }

    mutating func superDecoder() throws -> any Decoder {
        let element = try next(BinaryDecoder.self)
        advance(to: element.upperBound)
        return decoder(element)
    }

    private func decoder(_ element: Range<Int>) -> BinaryDecoder {
        BinaryDecoder(reader: reader, offset: element.lowerBound, end: element.upperBound)
    }
}
