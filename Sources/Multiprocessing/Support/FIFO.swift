/// A first-in, first-out queue of values. Not synchronized: whoever shares one guards it.
///
/// An array and the index of its oldest element, so taking from the front moves nothing. A taken
/// slot is cleared at once (its value freed then, not when the queue next drains); the storage is
/// reused from the start whenever the queue drains, and compacted once taken slots are most of it.
struct FIFO<Element> {
    private var slots: [Element?] = []
    private var head = 0

    /// Taken slots worth compacting away before the queue drains (smaller runs wait for the drain).
    private static var compactionThreshold: Int { 64 }

    init() {}

    var isEmpty: Bool { head == slots.count }

    var count: Int { slots.count - head }

    mutating func append(_ element: Element) {
        slots.append(element)
    }

    /// The oldest element, removed; nil when the queue is empty.
    mutating func popFirst() -> Element? {
        guard head < slots.count else { return nil }
        let first = slots[head]
        slots[head] = nil
        head += 1
        if head == slots.count {
            slots.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= Self.compactionThreshold && head * 2 >= slots.count {
            slots.removeFirst(head)
            head = 0
        }
        return first
    }

    /// Every element, oldest first, leaving the queue empty (and its storage freed).
    @discardableResult
    mutating func removeAll() -> [Element] {
        let all = slots[head...].map { $0! }
        slots = []
        head = 0
        return all
    }
}
