@_spi(Reflection) import Swift

/// Which fixed-size trivial types a pool copies as bytes, and what it checks in bytes it did not
/// write: a worker runs the user's code and shares the result ring, so a result's bytes may be any
/// bytes, and loading a byte of 2 as a `Bool` (or an unknown tag as an enum) is undefined
/// behaviour, not a wrong value (one such `Bool` compared equal to both `true` and `false`).
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
    /// once (for a pool, before its workers are forked: see ``WorkerLoop/warmUp()``).
    @inline(__always)
    static func of<T>(_ type: T.Type) -> BitwiseLayout {
        guard _isPOD(type) else { return .coded }
        if type == Int.self { return .plain }  // the commonest first, alone: a few instructions
        return isNumber(type) ? .plain : found(type).layout
    }

    /// The byte offsets of the `Bool`s in a `T`, which is ``checked``.
    static func booleans<T>(of type: T.Type) -> [Int] { found(type).booleans }

    /// Throws unless every `Bool` in `bytes` (`count` values of `type`, `stride` apart) is 0 or 1.
    static func check<T>(_ bytes: UnsafeRawBufferPointer, count: Int, stride: Int, of type: T.Type) throws(PoolError) {
        let offsets = booleans(of: type)
        for i in 0..<count {
            for offset in offsets where bytes[i * stride + offset] > 1 {
                throw .coding("byte \(bytes[i * stride + offset]) at \(i * stride + offset) is no Bool (in a \(type))")
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
