@_spi(Reflection) import Swift

/// Which fixed-size trivial types a pool or a queue copies as bytes, and what it checks in bytes it
/// did not write: a pool's worker runs the user's code and shares the result ring, and any process
/// holding a queue can write its shared memory, so the bytes read may be any bytes, and loading a
/// byte of 2 as a `Bool` (or an unknown tag as an enum) is undefined behaviour, not a wrong value
/// (one such `Bool` compared equal to both `true` and `false`).
///
/// Copied: the standard integer and floating-point types, `Bool` (each checked to be 0 or 1), and
/// structs and tuples made only of these. Everything else is coded (``BinaryCoding`` checks what it
/// decodes): enums and optionals, whose unknown tags a copy cannot see, and any other standard type
/// (a range, a Unicode scalar, a vector), whose invariants a copy would skip.
enum BitwiseLayout: UInt8, Sendable {
    /// Not copied: coded.
    case coded
    /// Every bit pattern is a value.
    case plain
    /// Every bit pattern is a value except at the offsets of its `Bool`s (``booleans(of:)``).
    case checked

    /// The layout of `type`. Numbers cost a few comparisons; other types are looked up by reflection
    /// once (for a pool, before its workers are forked: see ``WorkerLoop/warmUp()``; a queue, when
    /// it is made or its handle decoded).
    @inline(__always)
    static func of<T>(_ type: T.Type) -> BitwiseLayout {
        guard _isPOD(type) else { return .coded }
        if type == Int.self { return .plain }  // the commonest first, alone: a few instructions
        return isNumber(type) ? .plain : found(type).layout
    }

    /// The byte offsets of the `Bool`s in a `T`, which is ``checked``.
    static func booleans<T>(of type: T.Type) -> [Int] { found(type).booleans }

    /// The number of cases of `type` when it is an enum without payloads, whose bytes then hold its
    /// case's index (little-endian, in the fewest bytes that hold every index); nil for any other
    /// type, an optional or an enum with payloads among them (their tags hide in spare bits and
    /// extra inhabitants, which only the compiler knows). For a queue of such an enum that is not
    /// `Codable`: the one enum whose bytes it can check without coding them.
    static func caseCount<T>(ofTagOnlyEnum type: T.Type) -> Int? {
        #if _ptrauth(_arm64e)
            return nil  // the metadata's pointers are signed
        #else
            // Swift's metadata layout (docs/ABI/TypeMetadata.rst): the kind, then the descriptor.
            let metadata = unsafeBitCast(type as Any.Type, to: UnsafeRawPointer.self)
            guard metadata.load(as: Int.self) == 0x201 else { return nil }  // an enum (0x202 is Optional)
            let descriptor = metadata.load(fromByteOffset: MemoryLayout<Int>.size, as: UnsafeRawPointer.self)
            // TargetEnumDescriptor: flags (kind 18, enum, in the low 5 bits), parent, name, access
            // function, fields (4 bytes each); then the payload cases (low 24 bits), the empty cases.
            guard descriptor.load(as: UInt32.self) & 0x1F == 18 else { return nil }
            let payloadCases = descriptor.load(fromByteOffset: 20, as: UInt32.self) & 0xFF_FFFF
            let cases = Int(descriptor.load(fromByteOffset: 24, as: UInt32.self))
            let size = cases <= 1 << 8 ? 1 : cases <= 1 << 16 ? 2 : 4
            guard payloadCases == 0, cases >= 2, MemoryLayout<T>.size == size else { return nil }
            return cases
        #endif
    }

    /// Bytes that are not a value of their type: what is wrong, for the caller's own error
    /// (``PoolError/coding(_:)``, ``QueueError/decodingFailed(_:)``).
    struct NotAValue: Error, CustomStringConvertible {
        let description: String
    }

    /// Throws unless every `Bool` in `bytes` (`count` values of `type`, `stride` apart) is 0 or 1.
    static func check<T>(_ bytes: UnsafeRawBufferPointer, count: Int, stride: Int, of type: T.Type) throws(NotAValue) {
        try check(bytes, count: count, stride: stride, booleans: booleans(of: type), of: type)
    }

    /// As `check(_:count:stride:of:)`, with the offsets of the `Bool`s looked up before (by a queue,
    /// once: its gets then take no lock, which a forked child might find held).
    static func check<T>(
        _ bytes: UnsafeRawBufferPointer, count: Int, stride: Int, booleans offsets: [Int], of type: T.Type
    ) throws(NotAValue) {
        for i in 0..<count {
            for offset in offsets where bytes[i * stride + offset] > 1 {
                throw NotAValue(
                    description:
                        "byte \(bytes[i * stride + offset]) at \(i * stride + offset) is no Bool (in a \(type))")
            }
        }
    }

    private static let cache = Locked<[ObjectIdentifier: (layout: BitwiseLayout, booleans: [Int])]>([:])

    private static func found<T>(_ type: T.Type) -> (layout: BitwiseLayout, booleans: [Int]) {
        let key = ObjectIdentifier(type)
        if let known = cache.withLock({ $0[key] }) { return known }
        var booleans: [Int] = []
        // Through a tuple that holds it: the field's kind says whether `T` is a struct (an enum has no fields).
        var copyable = false
        _ = _forEachField(of: (T, Int).self, options: []) { _, offset, field, kind in
            if offset == 0 { copyable = (kind == .struct || kind == .tuple) && walk(field, at: 0, into: &booleans) }
            return false
        }
        let found = (
            layout: copyable ? (booleans.isEmpty ? BitwiseLayout.plain : .checked) : .coded, booleans: booleans
        )
        cache.withLock { $0[key] = found }
        return found
    }

    @inline(never)  // out of line: `of` stays one comparison for an Int, not a vector of them
    private static func isNumber(_ type: Any.Type) -> Bool {
        type == Int.self || type == Double.self || type == UInt.self || type == Float.self || type == Int64.self
            || type == UInt64.self || type == Int32.self || type == UInt32.self || type == Int16.self
            || type == UInt16.self || type == Int8.self || type == UInt8.self
    }

    /// Whether every field of `type` (at `base` in the value), recursively, is a number or a `Bool`.
    private static func walk(_ type: Any.Type, at base: Int, into booleans: inout [Int]) -> Bool {
        if isNumber(type) { return true }
        if type == Bool.self {
            booleans.append(base)
            return true
        }
        // Any other standard type may hold an invariant (Range's bounds in order, a scalar no surrogate).
        if String(reflecting: type).hasPrefix("Swift.") { return false }
        var valid = true
        // False for a type without field records (made by hand, or imported).
        let walked = _forEachField(of: type, options: []) { _, offset, field, kind in
            valid = (kind == .struct || kind == .tuple) && walk(field, at: base + offset, into: &booleans)
            return valid
        }
        return walked && valid
    }
}
