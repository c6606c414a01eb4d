extension BinaryCoding {
    /// Appends the encoding of `value` to `buffer` (leaving `buffer` as it was if it throws).
    static func encode<T: Encodable>(_ value: T, into buffer: inout [UInt8]) throws(BinaryCodingError) {
        try withEncoding(of: value) { buffer.append(contentsOf: $0) }
    }

    /// Calls `body` with the encoding of `value`, built on the stack when it is small: no heap
    /// allocation for a small message (a queue's put copies it straight into the ring).
    ///
    /// An encoding that would outgrow `limit` bytes throws ``BinaryCodingError/tooLarge(atLeast:limit:)``
    /// as soon as the encoder sees it (before a string or a byte run that does not fit is copied, or
    /// at the next entry), so a message over the limit is never held whole.
    static func withEncoding<T: Encodable>(
        of value: T, limit: Int = .max, _ body: (UnsafeRawBufferPointer) -> Void
    ) throws(BinaryCodingError) {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 512) { bytes throws(BinaryCodingError) in
            try withUnsafeTemporaryAllocation(of: BinaryWriter.Frame.self, capacity: 16) {
                frames throws(BinaryCodingError) in
                var writer = BinaryWriter(bytes: bytes, frames: frames, limit: limit)
                defer { writer.release() }
                writer.bytes.appendLittleEndian(UInt64(TypeFingerprint.of(T.self)), count: 4)
                try withUnsafeMutablePointer(to: &writer) { writer throws(BinaryCodingError) in
                    try BinaryEncoder.encodeValue(value, writer)
                }
                if let reason = writer.stopReason { throw reason }
                body(UnsafeRawBufferPointer(writer.bytes.bytes))
            }
        }
    }

    /// The encoding of `value`.
    static func encode<T: Encodable>(_ value: T) throws(BinaryCodingError) -> [UInt8] {
        var buffer: [UInt8] = []
        try encode(value, into: &buffer)
        return buffer
    }
}

/// The `Encoder` handed to a value's `encode(to:)`: the value's place in the output.
struct BinaryEncoder: Encoder {
    let writer: UnsafeMutablePointer<BinaryWriter>
    /// Where the value starts.
    let start: Int
    /// How many containers were open when it started (its own are pushed above them).
    let level: Int

    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let frame = writer.pointee.openContainer(BinaryTag.keyed, at: start, level: level)
        return BinaryKeyedEncodingContainer<Key>.make(BinaryKeyedOutput(writer: writer, frame: frame))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        let frame = writer.pointee.openContainer(BinaryTag.unkeyed, at: start, level: level)
        return BinaryUnkeyedEncodingContainer(writer: writer, frame: frame)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        BinarySingleValueEncodingContainer(writer: writer, start: start)
    }

    /// Writes `value` at the end of the output: types with a compact form directly, any other
    /// through its `encode(to:)`.
    static func encodeValue<T: Encodable>(
        _ value: T, _ writer: UnsafeMutablePointer<BinaryWriter>
    ) throws(BinaryCodingError) {
        // Fast paths: a pointer comparison each, and no call through `Encoder`.
        if ObjectIdentifier(T.self) == BinaryCoding.byteArrayType {
            unsafeBitCast(value, to: [UInt8].self).withUnsafeBytes { writer.pointee.writeBytes(BinaryTag.bytes, $0) }
        } else if T.self == String.self {
            writer.pointee.write(unsafeBitCast(value, to: String.self))
        } else if T.self == Int.self {
            writer.pointee.writeSigned(Int64(unsafeBitCast(value, to: Int.self)))
        } else if T.self == Double.self {
            writer.pointee.write(unsafeBitCast(value, to: Double.self))
        } else if T.self == Bool.self {
            writer.pointee.write(unsafeBitCast(value, to: Bool.self))
        } else if T.self == UInt8.self {
            writer.pointee.writeUnsigned(UInt64(unsafeBitCast(value, to: UInt8.self)))
        } else {
            try encodeComposite(value, writer)
        }
    }

    private static func encodeComposite<T: Encodable>(
        _ value: T, _ writer: UnsafeMutablePointer<BinaryWriter>
    ) throws(BinaryCodingError) {
        do {
            try encodeWhole(value, writer)
        } catch {
            // The entry this value was to fill has its key (or its count) written already: a parent
            // that swallows the error (`try? container.encode(v, forKey: k)`) would otherwise send a
            // key without a value, which the receiver misreads. The whole encoding fails instead.
            writer.pointee.fail(error)
            throw error
        }
    }

    private static func encodeWhole<T: Encodable>(
        _ value: T, _ writer: UnsafeMutablePointer<BinaryWriter>
    ) throws(BinaryCodingError) {
        guard writer.pointee.depth < BinaryCoding.maximumDepth else {
            throw .unsupported("values nested more than \(BinaryCoding.maximumDepth) deep")
        }
        writer.pointee.depth += 1
        defer { writer.pointee.depth -= 1 }
        let start = writer.pointee.bytes.count
        let level = writer.pointee.frames.count
        let loans = writer.pointee.loans.last
        do {
            defer { writer.pointee.loans.end(downTo: loans) }
            try value.encode(to: BinaryEncoder(writer: writer, start: start, level: level))
        } catch let error as BinaryCodingError {
            throw error
        } catch {
            throw .unsupported(String(describing: error))
        }
        try writer.pointee.close(downTo: level)
        if writer.pointee.bytes.count == start {
            // Like JSONEncoder's `{}`: a value that wrote nothing reads back as an empty container.
            _ = writer.pointee.openContainer(BinaryTag.keyed, at: start, level: level)
            try writer.pointee.close(downTo: level)
        }
    }
}

/// The container of a value that is a single value: it writes at the value's place, once.
struct BinarySingleValueEncodingContainer: SingleValueEncodingContainer {
    let writer: UnsafeMutablePointer<BinaryWriter>
    let start: Int

    var codingPath: [any CodingKey] { [] }

    /// The value's place must still be empty: at the end of the output, with nothing written.
    private func claim() throws(BinaryCodingError) -> UnsafeMutablePointer<BinaryWriter> {
        guard writer.pointee.bytes.count == start else {
            throw .unsupported("a single value container encoded a second value, or too late")
        }
        return writer
    }

    mutating func encodeNil() throws { try claim().pointee.writeNil() }
    mutating func encode(_ value: Bool) throws { try claim().pointee.write(value) }
    mutating func encode(_ value: String) throws { try claim().pointee.write(value) }
    mutating func encode(_ value: Double) throws { try claim().pointee.write(value) }
    mutating func encode(_ value: Float) throws { try claim().pointee.write(value) }
    mutating func encode(_ value: Int) throws { try claim().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int8) throws { try claim().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int16) throws { try claim().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int32) throws { try claim().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int64) throws { try claim().pointee.writeSigned(value) }
    mutating func encode(_ value: Int128) throws { try claim().pointee.write(value) }
    mutating func encode(_ value: UInt) throws { try claim().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { try claim().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { try claim().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { try claim().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt64) throws { try claim().pointee.writeUnsigned(value) }
    mutating func encode(_ value: UInt128) throws { try claim().pointee.write(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { try BinaryEncoder.encodeValue(value, claim()) }
}
