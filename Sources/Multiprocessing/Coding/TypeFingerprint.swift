/// The 32-bit fingerprint of a type's name that starts every ``BinaryCoding`` message, so that a
/// message read as another type fails at once instead of being misread.
///
/// The name is the qualified type name (`String(reflecting:)` prints the same) with the load
/// addresses of private and local types removed (they differ between a parent and a spawned child).
/// Computing it takes microseconds, so each
/// type's fingerprint is computed once and kept in a lock-free ``TypeTable``.
enum TypeFingerprint {
    /// The fingerprint of `type`.
    static func of<T>(_ type: T.Type) -> UInt32 {
        if let found = table.value(for: type) { return UInt32(truncatingIfNeeded: found) }
        return UInt32(truncatingIfNeeded: table.insert(UInt(compute(type)), for: type))
    }

    /// FNV-1a of the type's portable name.
    static func compute<T>(_ type: T.Type) -> UInt32 {
        var hash: UInt32 = 0x811c_9dc5
        for byte in portableName(type).utf8 {
            hash = (hash ^ UInt32(byte)) &* 0x0100_0193
        }
        return hash
    }

    /// The qualified name without `at $<address>` in the contexts of private and local types.
    /// `_typeName` prints it directly; `String(reflecting:)` would first try the metatype against
    /// three printing protocols, each a conformance lookup that scans every loaded image the first
    /// time (a tenth of a millisecond in a forkserver child, where every cache starts cold).
    static func portableName<T>(_ type: T.Type) -> String {
        let marker = "(unknown context at $"
        var rest = Substring(_typeName(type, qualified: true))
        var name = ""
        while let range = rest.firstRange(of: marker) {
            name += rest[..<range.lowerBound]
            name += "(unknown context)"
            rest = rest[range.upperBound...].drop { $0 != ")" }.dropFirst()
        }
        return name + rest
    }

    private static let table = TypeTable()
}
