import Synchronization

/// The 32-bit fingerprint of a type's name that starts every ``BinaryCoding`` message, so that a
/// message read as another type fails at once instead of being misread.
///
/// The name is the qualified type name (`String(reflecting:)` prints the same) with the load
/// addresses of private and local types removed (they differ between a parent and a spawned child).
/// Computing it takes microseconds, so each
/// type's fingerprint is computed once and kept in a lock-free table: a lock here could be held
/// by another thread at `fork` and never released in the child.
enum TypeFingerprint {
    /// The fingerprint of `type`.
    static func of<T>(_ type: T.Type) -> UInt32 {
        let key = UInt(bitPattern: ObjectIdentifier(type))
        if let found = lookup(key, in: table.load(ordering: .acquiring)) { return found }
        let fingerprint = compute(type)
        insert(key, fingerprint)
        return fingerprint
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

    /// The address of the current table (0 before the first type): words `[capacity, count]`, then
    /// `capacity` pairs `[type key, fingerprint]` with open addressing (key 0: empty slot). A table
    /// is never changed once published; an insertion publishes a copy with compare-and-swap.
    /// Replaced tables are leaked on purpose, as a reader may still be probing one (only top-level
    /// message types are entered: ten types leak a few kilobytes, a hundred about 200 KB).
    private static let table = Atomic<UInt>(0)

    private static func lookup(_ key: UInt, in address: UInt) -> UInt32? {
        guard let words = UnsafePointer<UInt>(bitPattern: address) else { return nil }
        let mask = Int(words[0]) - 1
        var slot = hashSlot(key) & mask
        while true {  // the table is at most half full, so the probe finds an empty slot
            let found = words[2 + 2 * slot]
            if found == key { return UInt32(truncatingIfNeeded: words[3 + 2 * slot]) }
            if found == 0 { return nil }
            slot = (slot + 1) & mask
        }
    }

    private static func insert(_ key: UInt, _ fingerprint: UInt32) {
        while true {
            let old = table.load(ordering: .acquiring)
            if lookup(key, in: old) != nil { return }
            let oldWords = UnsafePointer<UInt>(bitPattern: old)
            let count = (oldWords?[1] ?? 0) + 1
            var capacity: UInt = 16
            while capacity < 2 * count { capacity *= 2 }
            let words = UnsafeMutablePointer<UInt>.allocate(capacity: 2 + 2 * Int(capacity))
            words.initialize(repeating: 0, count: 2 + 2 * Int(capacity))
            words[0] = capacity
            words[1] = count
            place(key, UInt(fingerprint), in: words)
            if let oldWords {
                for slot in 0..<Int(oldWords[0]) where oldWords[2 + 2 * slot] != 0 {
                    place(oldWords[2 + 2 * slot], oldWords[3 + 2 * slot], in: words)
                }
            }
            let desired = UInt(bitPattern: words)
            if table.compareExchange(expected: old, desired: desired, ordering: .acquiringAndReleasing).exchanged {
                return
            }
            words.deallocate()  // another thread published first: retry on its table
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
    private static func hashSlot(_ key: UInt) -> Int { Int(truncatingIfNeeded: (key &* 0x9e37_79b9_7f4a_7c15) >> 40) }
}
