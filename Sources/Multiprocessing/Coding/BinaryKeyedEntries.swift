#if canImport(Glibc)
    import Glibc
#endif

/// The entries of a keyed container being read, found by key name in any order.
///
/// Keys are found without building anything in the common case: the reader's hint points at the
/// entry after the last one read, which is the next one asked for when keys are read in the order
/// they were written (what synthesized `init(from:)` does). Otherwise the entries are scanned; a
/// container whose scan passes many entries gets a key table, so that reading a large one out of
/// order stays linear.
struct BinaryKeyedEntries {
    let reader: UnsafeMutablePointer<BinaryReader>
    /// The entries.
    let content: Range<Int>

    /// Entries a scan may pass before the container gets a key table.
    static let tableThreshold = 32

    /// The key names, in order. A malformed entry ends them, and fails the whole decoding (a
    /// `Dictionary` read from them must not come out short without an error).
    func names() -> [String] {
        var names: [String] = []
        var offset = content.lowerBound
        do {
            while offset < content.upperBound {
                let entry = try entry(at: offset)
                names.append(String(decoding: reader.pointee.bytes(entry.key), as: UTF8.self))
                offset = entry.value.upperBound
            }
        } catch {
            reader.pointee.failure = reader.pointee.failure ?? error
        }
        return names
    }

    /// Whether there is an entry under `name`; a malformed entry on the way fails the whole decoding.
    func contains(_ name: String) -> Bool {
        do {
            return try find(name) != nil
        } catch {
            reader.pointee.failure = reader.pointee.failure ?? error
            return false
        }
    }

    // MARK: Finding entries

    /// The entry at `offset`: where its key's UTF-8 and its value are.
    @inline(__always)
    private func entry(at offset: Int) throws(BinaryCodingError) -> (key: Range<Int>, value: Range<Int>) {
        var start = offset
        let length = try reader.pointee.length(at: &start, end: content.upperBound)
        let value = start + length
        return (start..<value, value..<(try reader.pointee.skip(at: value, end: content.upperBound)))
    }

    /// The value stored under `name`, or nil. The hint is left at its entry, for the read to come.
    func find(_ name: String) throws(BinaryCodingError) -> Range<Int>? {
        if let value = try hinted(name) { return value }
        return try search(name)
    }

    /// The value under `name` if the hinted entry holds it (the first entry when the hint is for
    /// another container): the common case, kept short.
    @inline(__always)
    private func hinted(_ name: String) throws(BinaryCodingError) -> Range<Int>? {
        let hint = reader.pointee.hint(for: content.lowerBound)
        let next = hint.pointee.container == content.lowerBound ? hint.pointee.next : content.lowerBound
        guard next < content.upperBound else { return nil }
        let entry = try entry(at: next)
        return matches(entry.key, name) ? entry.value : nil
    }

    /// The value under `name` found by scanning the entries (or the key table, once there is one).
    private func search(_ name: String) throws(BinaryCodingError) -> Range<Int>? {
        let hint = reader.pointee.hint(for: content.lowerBound)
        if let table = reader.pointee.tables?[content.lowerBound] {
            guard let offset = table[name] else { return nil }
            hint.pointee = BinaryReader.KeyHint(container: content.lowerBound, next: offset)
            return try entry(at: offset).value
        }
        var offset = content.lowerBound
        var passed = 0
        while offset < content.upperBound {
            let entry = try entry(at: offset)
            if matches(entry.key, name) {
                // Found far in: a container read out of order (or whose hint a nested container
                // took over) would be scanned as far again for each key, quadratic in its entries.
                if passed > Self.tableThreshold { try buildTable() }
                hint.pointee = BinaryReader.KeyHint(container: content.lowerBound, next: offset)
                return entry.value
            }
            offset = entry.value.upperBound
            passed += 1
        }
        if passed > Self.tableThreshold { try buildTable() }
        return nil
    }

    /// Whether the key stored at `key` is `name`: lengths first (O(1) for a native string), then
    /// the bytes, not a byte-by-byte walk of two collections.
    @inline(__always)
    private func matches(_ key: Range<Int>, _ name: String) -> Bool {
        let count = key.count
        guard name.utf8.count == count else { return false }
        guard count > 0 else { return true }
        let stored = reader.pointee.base + key.lowerBound
        let equal = name.utf8.withContiguousStorageIfAvailable { bytesEqual(stored, $0.baseAddress!, count) }
        return equal ?? UnsafeRawBufferPointer(start: stored, count: count).elementsEqual(name.utf8)
    }

    /// Indexes every key of this container (the first entry wins if a key repeats).
    private func buildTable() throws(BinaryCodingError) {
        var table: [String: Int] = [:]
        var offset = content.lowerBound
        while offset < content.upperBound {
            let entry = try entry(at: offset)
            let name = String(decoding: reader.pointee.bytes(entry.key), as: UTF8.self)
            if table[name] == nil { table[name] = offset }
            offset = entry.value.upperBound
        }
        reader.pointee.tables = reader.pointee.tables ?? [:]
        reader.pointee.tables?[content.lowerBound] = table
    }

    // MARK: Reading entries

    /// The value under `name`, which the caller reads now.
    @inline(__always)
    func read(_ name: String) throws(BinaryCodingError) -> Range<Int> {
        guard let value = try hinted(name) else { return try readSearched(name) }
        markRead(value)
        return value
    }

    private func readSearched(_ name: String) throws(BinaryCodingError) -> Range<Int> {
        guard let value = try search(name) else { throw .invalidData("no value for the key \"\(name)\"") }
        markRead(value)
        return value
    }

    /// The value under `name` unless it is missing or nil.
    func readIfPresent(_ name: String) throws(BinaryCodingError) -> Range<Int>? {
        guard let value = try find(name) else { return nil }
        markRead(value)
        return try reader.pointee.isNil(at: value.lowerBound, end: value.upperBound) ? nil : value
    }

    /// Whether the value under `name` is nil (it is read only if it is).
    func readNil(_ name: String) throws(BinaryCodingError) -> Bool {
        guard let value = try find(name) else { throw .invalidData("no value for the key \"\(name)\"") }
        guard try reader.pointee.isNil(at: value.lowerBound, end: value.upperBound) else { return false }
        markRead(value)
        return true
    }

    /// Moves the hint past `value`: the next key asked for is probably the next entry's.
    @inline(__always)
    private func markRead(_ value: Range<Int>) {
        reader.pointee.hint(for: content.lowerBound).pointee = .init(
            container: content.lowerBound, next: value.upperBound)
    }

    func bool(_ value: Range<Int>) throws(BinaryCodingError) -> Bool {
        try reader.pointee.bool(at: value.lowerBound, end: value.upperBound)
    }

    func string(_ value: Range<Int>) throws(BinaryCodingError) -> String {
        try reader.pointee.string(at: value.lowerBound, end: value.upperBound)
    }

    func double(_ value: Range<Int>) throws(BinaryCodingError) -> Double {
        try reader.pointee.double(at: value.lowerBound, end: value.upperBound)
    }

    func float(_ value: Range<Int>) throws(BinaryCodingError) -> Float {
        try reader.pointee.float(at: value.lowerBound, end: value.upperBound)
    }

    func integer<I: FixedWidthInteger>(_ type: I.Type, _ value: Range<Int>) throws(BinaryCodingError) -> I {
        try reader.pointee.integer(type, at: value.lowerBound, end: value.upperBound)
    }

    func value<T: Decodable>(_ type: T.Type, _ value: Range<Int>) throws(BinaryCodingError) -> T {
        try BinaryDecoder.decodeValue(type, reader, at: value.lowerBound, end: value.upperBound)
    }

    func decoder(_ value: Range<Int>) -> BinaryDecoder {
        BinaryDecoder(reader: reader, offset: value.lowerBound, end: value.upperBound)
    }
}

/// Whether `count` bytes at `a` and `b` are equal. Keys are short: for up to 16 bytes, two loads
/// a side (overlapping) cost less than the call to `memcmp`.
@inline(__always)
private func bytesEqual(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ count: Int) -> Bool {
    func same<T: FixedWidthInteger>(_: T.Type) -> Bool {
        let tail = count - MemoryLayout<T>.size
        return a.loadUnaligned(as: T.self) == b.loadUnaligned(as: T.self)
            && a.loadUnaligned(fromByteOffset: tail, as: T.self) == b.loadUnaligned(fromByteOffset: tail, as: T.self)
    }
    switch count {
    case 0: return true
    case 1: return a.load(as: UInt8.self) == b.load(as: UInt8.self)
    case 2..<4: return same(UInt16.self)
    case 4..<8: return same(UInt32.self)
    case 8...16: return same(UInt64.self)
    default: return memcmp(a, b, count) == 0
    }
}
