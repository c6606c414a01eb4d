/// The unfinished tasks of a process pool, by id.
///
/// Ids are handed out in sequence and tasks mostly finish in about the order they were submitted,
/// so a slot array indexed by the id's low bits finds nearly every task with one probe and no
/// hashing. A task whose slot is still taken (an older task is still running) goes to a dictionary;
/// when that grows, the slot array doubles (up to a limit), so a few long tasks cost little.
struct PendingTable {
    private struct Entry {
        var id: UInt64
        var pending: PendingTask
    }

    private var slots: [Entry?]
    private var mask: UInt64
    private var overflow: [UInt64: PendingTask] = [:]
    private(set) var count = 0

    private static let maximumSlots = 1 << 20

    init(slots: Int = 1 << 12) {
        self.slots = Array(repeating: nil, count: slots)
        mask = UInt64(slots - 1)
    }

    var isEmpty: Bool { count == 0 }

    mutating func insert(_ id: UInt64, _ pending: PendingTask) {
        count += 1
        let i = Int(id & mask)
        if slots[i] == nil {
            slots[i] = Entry(id: id, pending: pending)
            return
        }
        overflow[id] = pending
        if overflow.count > slots.count / 2 && slots.count < Self.maximumSlots { grow() }
    }

    mutating func remove(_ id: UInt64) -> PendingTask? {
        let i = Int(id & mask)
        if let entry = slots[i], entry.id == id {
            slots[i] = nil
            count -= 1
            return entry.pending
        }
        guard let pending = overflow.removeValue(forKey: id) else { return nil }
        count -= 1
        return pending
    }

    /// Every entry, leaving the table empty.
    mutating func removeAll() -> [PendingTask] {
        var all = slots.compactMap { $0?.pending }
        all += overflow.values
        slots = Array(repeating: nil, count: slots.count)
        overflow = [:]
        count = 0
        return all
    }

    private mutating func grow() {
        let entries = slots.compactMap { $0 } + overflow.map { Entry(id: $0.key, pending: $0.value) }
        slots = Array(repeating: nil, count: slots.count * 2)
        mask = UInt64(slots.count - 1)
        overflow = [:]
        count = 0
        for entry in entries { insert(entry.id, entry.pending) }
    }
}
