import Synchronization

/// A lock-free map from a type to a word, filled once per type and never emptied: type
/// fingerprints, and the containers that coding lends out per key type.
///
/// Readers take no lock: one could be held by another thread at `fork` and never released in
/// the child.
final class TypeTable: Sendable {
    /// The address of the current table (0 before the first type): words `[capacity, count]`, then
    /// `capacity` pairs `[type key, value]` with open addressing (key 0: empty slot). A table is
    /// never changed once published; an insertion publishes a copy with compare-and-swap.
    /// Replaced tables are leaked on purpose, as a reader may still be probing one (a table holds
    /// top-level message and key types: ten types leak a few kilobytes, a hundred about 200 KB).
    private let table = Atomic<UInt>(0)

    /// The value stored for `type`, if any.
    @inline(__always)
    func value(for type: Any.Type) -> UInt? {
        Self.lookup(Self.key(type), in: table.load(ordering: .acquiring))
    }

    /// Stores `value` for `type` unless another thread stored one first; returns the stored one.
    func insert(_ value: UInt, for type: Any.Type) -> UInt {
        let key = Self.key(type)
        while true {
            let old = table.load(ordering: .acquiring)
            if let found = Self.lookup(key, in: old) { return found }
            let oldWords = UnsafePointer<UInt>(bitPattern: old)
            let count = (oldWords?[1] ?? 0) + 1
            var capacity: UInt = 16
            while capacity < 2 * count { capacity *= 2 }
            let words = UnsafeMutablePointer<UInt>.allocate(capacity: 2 + 2 * Int(capacity))
            words.initialize(repeating: 0, count: 2 + 2 * Int(capacity))
            words[0] = capacity
            words[1] = count
            Self.place(key, value, in: words)
            if let oldWords {
                for slot in 0..<Int(oldWords[0]) where oldWords[2 + 2 * slot] != 0 {
                    Self.place(oldWords[2 + 2 * slot], oldWords[3 + 2 * slot], in: words)
                }
            }
            let desired = UInt(bitPattern: words)
            if table.compareExchange(expected: old, desired: desired, ordering: .acquiringAndReleasing).exchanged {
                return value
            }
            words.deallocate()  // another thread published first: retry on its table
        }
    }

    private static func key(_ type: Any.Type) -> UInt { UInt(bitPattern: ObjectIdentifier(type)) }

    @inline(__always)
    private static func lookup(_ key: UInt, in address: UInt) -> UInt? {
        guard let words = UnsafePointer<UInt>(bitPattern: address) else { return nil }
        let mask = Int(words[0]) - 1
        var slot = hashSlot(key) & mask
        while true {  // the table is at most half full, so the probe finds an empty slot
            let found = words[2 + 2 * slot]
            if found == key { return words[3 + 2 * slot] }
            if found == 0 { return nil }
            slot = (slot + 1) & mask
        }
    }

    private static func place(_ key: UInt, _ value: UInt, in words: UnsafeMutablePointer<UInt>) {
        let mask = Int(words[0]) - 1
        var slot = hashSlot(key) & mask
        while words[2 + 2 * slot] != 0 { slot = (slot + 1) & mask }
        words[2 + 2 * slot] = key
        words[3 + 2 * slot] = value
    }

    /// Metadata addresses are aligned: mix the bits before taking the low ones.
    @inline(__always)
    private static func hashSlot(_ key: UInt) -> Int { Int(truncatingIfNeeded: (key &* 0x9e37_79b9_7f4a_7c15) >> 40) }
}
