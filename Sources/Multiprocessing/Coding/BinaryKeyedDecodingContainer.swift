/// A keyed container being read: its entries, found by key in any order.
///
/// The work is done by ``BinaryKeyedEntries``, which is not generic: the methods of this type are
/// compiled for an unknown `Key` (the caller's `CodingKeys`), which would leave every helper they
/// call unspecialized as well.
struct BinaryKeyedDecodingContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    /// The entries: those of the current loan for a lent container (see ``LentContainer``).
    private let source: Source

    enum Source {
        case lent(UnsafeMutablePointer<BinaryKeyedEntries>)
        case own(BinaryKeyedEntries)
    }

    private var entries: BinaryKeyedEntries {
        switch source {
        case .lent(let entries): entries.pointee
        case .own(let entries): entries
        }
    }

    /// The container of the keyed container value whose entries are `entries`: the one lent for
    /// `Key` if it is free, else a new one.
    static func make(_ entries: BinaryKeyedEntries) -> KeyedDecodingContainer<Key> {
        let lent = lentContainer(Key.self, in: lentContainers) {
            let state = UnsafeMutablePointer<BinaryKeyedEntries>.allocate(capacity: 1)
            state.initialize(to: entries)
            return LentContainer(state: state, container: KeyedDecodingContainer(Self(source: .lent(state))))
        }
        if entries.reader.pointee.loans.take(lent) {
            lent.state.pointee = entries
            return lent.lend()
        }
        return KeyedDecodingContainer(Self(source: .own(entries)))
    }

    var codingPath: [any CodingKey] { [] }
    var allKeys: [Key] { entries.names().compactMap(Key.init(stringValue:)) }

    func contains(_ key: Key) -> Bool { entries.contains(key.stringValue) }
    func decodeNil(forKey key: Key) throws -> Bool { try entries.readNil(key.stringValue) }

    func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try entries.bool(read(key)) }
    func decode(_ type: String.Type, forKey key: Key) throws -> String { try entries.string(read(key)) }
    func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try entries.double(read(key)) }
    func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try entries.float(read(key)) }
    func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try entries.integer(type, read(key)) }
    func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try entries.integer(type, read(key)) }
    func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try entries.integer(type, read(key)) }
    func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try entries.integer(type, read(key)) }
    func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try entries.integer(type, read(key)) }
    func decode(_ type: Int128.Type, forKey key: Key) throws -> Int128 { try entries.integer(type, read(key)) }
    func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try entries.integer(type, read(key)) }
    func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try entries.integer(type, read(key)) }
    func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try entries.integer(type, read(key)) }
    func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try entries.integer(type, read(key)) }
    func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try entries.integer(type, read(key)) }
    func decode(_ type: UInt128.Type, forKey key: Key) throws -> UInt128 { try entries.integer(type, read(key)) }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try entries.value(type, read(key)) }

    // One lookup each, where the default implementations would make three.
    func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { try present(key).map(entries.bool) }
    func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? {
        try present(key).map(entries.string)
    }
    func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? {
        try present(key).map(entries.double)
    }
    func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? { try present(key).map(entries.float) }
    func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: Int8.Type, forKey key: Key) throws -> Int8? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: Int16.Type, forKey key: Key) throws -> Int16? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: Int128.Type, forKey key: Key) throws -> Int128? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: UInt8.Type, forKey key: Key) throws -> UInt8? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: UInt16.Type, forKey key: Key) throws -> UInt16? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: UInt32.Type, forKey key: Key) throws -> UInt32? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: UInt64.Type, forKey key: Key) throws -> UInt64? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent(_ type: UInt128.Type, forKey key: Key) throws -> UInt128? {
        try present(key).map { try entries.integer(type, $0) }
    }
    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        try present(key).map { try entries.value(type, $0) }
    }

    private func read(_ key: Key) throws(BinaryCodingError) -> Range<Int> { try entries.read(key.stringValue) }
    private func present(_ key: Key) throws(BinaryCodingError) -> Range<Int>? {
        try entries.readIfPresent(key.stringValue)
    }

    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws -> KeyedDecodingContainer<NestedKey> {
        try entries.decoder(read(key)).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try entries.decoder(read(key)).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder { entries.decoder(try entries.read("super")) }
    func superDecoder(forKey key: Key) throws -> any Decoder { entries.decoder(try read(key)) }
}

/// The keyed decoding containers lent out, by key type.
private let lentContainers = TypeTable()
