/// A keyed container being written: entries of key and value, in the order they are encoded.
struct BinaryKeyedEncodingContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    /// Where it writes: that of the current loan for a lent container (see ``LentContainer``).
    private let source: Source

    enum Source {
        case lent(UnsafeMutablePointer<BinaryKeyedOutput>)
        case own(BinaryKeyedOutput)
    }

    private var output: BinaryKeyedOutput {
        switch source {
        case .lent(let output): output.pointee
        case .own(let output): output
        }
    }

    private var writer: UnsafeMutablePointer<BinaryWriter> { output.writer }
    private var frame: BinaryWriter.FrameReference { output.frame }

    /// The container that writes to `output`: the one lent for `Key` if it is free, else a new one.
    static func make(_ output: BinaryKeyedOutput) -> KeyedEncodingContainer<Key> {
        let lent = lentContainer(Key.self, in: lentContainers) {
            let state = UnsafeMutablePointer<BinaryKeyedOutput>.allocate(capacity: 1)
            state.initialize(to: output)
            return LentContainer(state: state, container: KeyedEncodingContainer(Self(source: .lent(state))))
        }
        if output.writer.pointee.loans.take(lent) {
            lent.state.pointee = output
            return lent.lend()
        }
        return KeyedEncodingContainer(Self(source: .own(output)))
    }

    var codingPath: [any CodingKey] { [] }

    /// Writes the key of a new entry; the caller writes its value next.
    private func entry(_ key: Key) throws(BinaryCodingError) -> UnsafeMutablePointer<BinaryWriter> {
        let output = output
        try output.writer.pointee.beginEntry(output.frame, key: key.stringValue)
        return output.writer
    }

    mutating func encodeNil(forKey key: Key) throws { try entry(key).pointee.writeNil() }
    mutating func encode(_ value: Bool, forKey key: Key) throws { try entry(key).pointee.write(value) }
    mutating func encode(_ value: String, forKey key: Key) throws { try entry(key).pointee.write(value) }
    mutating func encode(_ value: Double, forKey key: Key) throws { try entry(key).pointee.write(value) }
    mutating func encode(_ value: Float, forKey key: Key) throws { try entry(key).pointee.write(value) }
    mutating func encode(_ value: Int, forKey key: Key) throws { try entry(key).pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { try entry(key).pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { try entry(key).pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { try entry(key).pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { try entry(key).pointee.writeSigned(value) }
    mutating func encode(_ value: Int128, forKey key: Key) throws { try entry(key).pointee.write(value) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { try entry(key).pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { try entry(key).pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws {
        try entry(key).pointee.writeUnsigned(UInt64(value))
    }
    mutating func encode(_ value: UInt32, forKey key: Key) throws {
        try entry(key).pointee.writeUnsigned(UInt64(value))
    }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { try entry(key).pointee.writeUnsigned(value) }
    mutating func encode(_ value: UInt128, forKey key: Key) throws { try entry(key).pointee.write(value) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try BinaryEncoder.encodeValue(value, entry(key))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
        let frame = writer.pointee.openNested(BinaryTag.keyed, in: frame, key: key.stringValue)
        return BinaryKeyedEncodingContainer<NestedKey>.make(BinaryKeyedOutput(writer: writer, frame: frame))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        BinaryUnkeyedEncodingContainer(
            writer: writer, frame: writer.pointee.openNested(BinaryTag.unkeyed, in: frame, key: key.stringValue))
    }

    /// Under the key "super", as `JSONEncoder` does.
    mutating func superEncoder() -> any Encoder { writer.pointee.superEncoder(writer, in: frame, key: "super") }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
        writer.pointee.superEncoder(writer, in: frame, key: key.stringValue)
    }
}

/// Where a keyed container writes: the output, and the container's frame in it.
struct BinaryKeyedOutput {
    let writer: UnsafeMutablePointer<BinaryWriter>
    let frame: BinaryWriter.FrameReference
}

/// The keyed encoding containers lent out, by key type.
private let lentContainers = TypeTable()

/// An unkeyed container being written: its elements, in order.
struct BinaryUnkeyedEncodingContainer: UnkeyedEncodingContainer {
    let writer: UnsafeMutablePointer<BinaryWriter>
    let frame: BinaryWriter.FrameReference

    var codingPath: [any CodingKey] { [] }

    var count: Int {
        let frames = writer.pointee.frames
        return frame.index >= 0 && frame.index < frames.count && frames[frame.index].header == frame.header
            ? frames[frame.index].count : 0
    }

    private func element() throws(BinaryCodingError) -> UnsafeMutablePointer<BinaryWriter> {
        try writer.pointee.beginEntry(frame, key: nil)
        return writer
    }

    mutating func encodeNil() throws { try element().pointee.writeNil() }
    mutating func encode(_ value: Bool) throws { try element().pointee.write(value) }
    mutating func encode(_ value: String) throws { try element().pointee.write(value) }
    mutating func encode(_ value: Double) throws { try element().pointee.write(value) }
    mutating func encode(_ value: Float) throws { try element().pointee.write(value) }
    mutating func encode(_ value: Int) throws { try element().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int8) throws { try element().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int16) throws { try element().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int32) throws { try element().pointee.writeSigned(Int64(value)) }
    mutating func encode(_ value: Int64) throws { try element().pointee.writeSigned(value) }
    mutating func encode(_ value: Int128) throws { try element().pointee.write(value) }
    mutating func encode(_ value: UInt) throws { try element().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt8) throws { try element().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt16) throws { try element().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt32) throws { try element().pointee.writeUnsigned(UInt64(value)) }
    mutating func encode(_ value: UInt64) throws { try element().pointee.writeUnsigned(value) }
    mutating func encode(_ value: UInt128) throws { try element().pointee.write(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { try BinaryEncoder.encodeValue(value, element()) }

    /// Bytes in one run (`Data` encodes itself this way): one tag for all of them.
    mutating func encode<T: Sequence>(contentsOf sequence: T) throws where T.Element == UInt8 {
        let written: Void? = try sequence.withContiguousStorageIfAvailable { try writeRun(UnsafeRawBufferPointer($0)) }
        if written == nil { try Array(sequence).withUnsafeBytes { try writeRun($0) } }
    }

    private func writeRun(_ bytes: UnsafeRawBufferPointer) throws(BinaryCodingError) {
        guard !bytes.isEmpty else { return }
        try writer.pointee.beginEntry(frame, key: nil, elements: bytes.count)
        writer.pointee.writeBytes(BinaryTag.byteRun, bytes)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<
        NestedKey
    > {
        let frame = writer.pointee.openNested(BinaryTag.keyed, in: frame, key: nil)
        return BinaryKeyedEncodingContainer<NestedKey>.make(BinaryKeyedOutput(writer: writer, frame: frame))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        BinaryUnkeyedEncodingContainer(
            writer: writer, frame: writer.pointee.openNested(BinaryTag.unkeyed, in: frame, key: nil))
    }

    mutating func superEncoder() -> any Encoder { writer.pointee.superEncoder(writer, in: frame, key: nil) }
}
