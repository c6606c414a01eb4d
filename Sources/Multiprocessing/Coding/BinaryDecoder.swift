extension BinaryCoding {
    /// Reads a `type` from `bytes`, which must hold exactly one message of that type.
    static func decode<T: Decodable>(_ type: T.Type, from bytes: UnsafeRawBufferPointer) throws(BinaryCodingError) -> T
    {
        guard bytes.count >= 4, let base = bytes.baseAddress else { throw .truncated }
        let found = UInt32(littleEndian: bytes.loadUnaligned(as: UInt32.self))
        guard found == TypeFingerprint.of(T.self) else {
            throw .typeMismatch(
                expected: String(reflecting: T.self),
                found: "a message of another type (fingerprint 0x\(String(found, radix: 16)))")
        }
        // The hints live in a stack variable rather than withUnsafeTemporaryAllocation, whose generic
        // result travels in a `Result<T, _>`: unspecialized, its metadata was looked up on every call.
        assert(
            MemoryLayout<BinaryReader.HintSlots>.size == BinaryReader.hintCount
                * MemoryLayout<BinaryReader.KeyHint>.stride)
        var slots = BinaryReader.HintSlots()
        return try withUnsafeMutablePointer(to: &slots) { slots throws(BinaryCodingError) in
            let hints = UnsafeMutableRawPointer(slots).assumingMemoryBound(to: BinaryReader.KeyHint.self)
            var reader = BinaryReader(base: base, count: bytes.count, hints: hints)
            let end = try reader.skip(at: 4, end: bytes.count)
            guard end == bytes.count else { throw .invalidData("\(bytes.count - end) bytes after the message") }
            return try withUnsafeMutablePointer(to: &reader) { reader throws(BinaryCodingError) in
                let value = try BinaryDecoder.decodeValue(T.self, reader, at: 4, end: end)
                if let failure = reader.pointee.failure { throw failure }
                return value
            }
        }
    }
}

/// The `Decoder` handed to a type's `init(from:)`: one value of the input, whose extent has been
/// checked (`end` is where the value ends).
struct BinaryDecoder: Decoder {
    let reader: UnsafeMutablePointer<BinaryReader>
    let offset: Int
    let end: Int

    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        let content = try reader.pointee.keyedContent(at: offset, end: end)
        return BinaryKeyedDecodingContainer<Key>.make(BinaryKeyedEntries(reader: reader, content: content))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        try BinaryUnkeyedDecodingContainer(reader: reader, offset: offset, end: end)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        BinarySingleValueDecodingContainer(reader: reader, offset: offset, end: end)
    }

    /// Reads the value at `offset`, whose extent the caller has checked: types with a compact form
    /// directly, any other through its `init(from:)`.
    static func decodeValue<T: Decodable>(
        _ type: T.Type, _ reader: UnsafeMutablePointer<BinaryReader>, at offset: Int, end: Int
    ) throws(BinaryCodingError) -> T {
        // Fast paths: a pointer comparison each, and no call through `Decoder`.
        if ObjectIdentifier(T.self) == BinaryCoding.byteArrayType,
            try reader.pointee.tag(at: offset, end: end) == BinaryTag.bytes
        {
            return unsafeBitCast(reader.pointee.byteArray(try reader.pointee.blob(at: offset, end: end)), to: T.self)
        } else if T.self == String.self {
            return unsafeBitCast(try reader.pointee.string(at: offset, end: end), to: T.self)
        } else if T.self == Int.self {
            return unsafeBitCast(try reader.pointee.integer(Int.self, at: offset, end: end), to: T.self)
        } else if T.self == Double.self {
            return unsafeBitCast(try reader.pointee.double(at: offset, end: end), to: T.self)
        } else if T.self == Bool.self {
            return unsafeBitCast(try reader.pointee.bool(at: offset, end: end), to: T.self)
        } else if T.self == UInt8.self {
            return unsafeBitCast(try reader.pointee.integer(UInt8.self, at: offset, end: end), to: T.self)
        }
        guard reader.pointee.depth < BinaryCoding.maximumDepth else {
            throw .invalidData("values nested more than \(BinaryCoding.maximumDepth) deep")
        }
        reader.pointee.depth += 1
        let loans = reader.pointee.loans.last
        defer {
            reader.pointee.loans.end(downTo: loans)
            reader.pointee.depth -= 1
        }
        do {
            return try T(from: BinaryDecoder(reader: reader, offset: offset, end: end))
        } catch let error as BinaryCodingError {
            throw error
        } catch {
            throw .invalidData(String(describing: error))
        }
    }
}

/// The container of a value that is a single value.
struct BinarySingleValueDecodingContainer: SingleValueDecodingContainer {
    let reader: UnsafeMutablePointer<BinaryReader>
    let offset: Int
    let end: Int

    var codingPath: [any CodingKey] { [] }

    func decodeNil() -> Bool { (try? reader.pointee.isNil(at: offset, end: end)) ?? false }
    func decode(_ type: Bool.Type) throws -> Bool { try reader.pointee.bool(at: offset, end: end) }
    func decode(_ type: String.Type) throws -> String { try reader.pointee.string(at: offset, end: end) }
    func decode(_ type: Double.Type) throws -> Double { try reader.pointee.double(at: offset, end: end) }
    func decode(_ type: Float.Type) throws -> Float { try reader.pointee.float(at: offset, end: end) }
    func decode(_ type: Int.Type) throws -> Int { try integer() }
    func decode(_ type: Int8.Type) throws -> Int8 { try integer() }
    func decode(_ type: Int16.Type) throws -> Int16 { try integer() }
    func decode(_ type: Int32.Type) throws -> Int32 { try integer() }
    func decode(_ type: Int64.Type) throws -> Int64 { try integer() }
    func decode(_ type: Int128.Type) throws -> Int128 { try integer() }
    func decode(_ type: UInt.Type) throws -> UInt { try integer() }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try integer() }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try integer() }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try integer() }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try integer() }
    func decode(_ type: UInt128.Type) throws -> UInt128 { try integer() }
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try BinaryDecoder.decodeValue(type, reader, at: offset, end: end)
    }

    private func integer<I: FixedWidthInteger>() throws(BinaryCodingError) -> I {
        try reader.pointee.integer(I.self, at: offset, end: end)
    }
}
