import CMultiprocessing

/// A ``Queue`` that counts unfinished tasks (Python's `JoinableQueue`): every `put` adds one, every
/// ``taskDone()`` removes one, and `join(timeout:)` waits until none is left, across processes. In
/// async code, `try await join()` suspends instead, on the event loop, holding no thread.
public final class JoinableQueue<Element: Sendable>: Queue<Element>, @unchecked Sendable {
    /// Marks one item taken with `get` as processed. Throws ``QueueError/taskDoneTooManyTimes``
    /// if called more times than items were put.
    public func taskDone() throws(QueueError) {
        if mp_queue_task_done(channel.queue) != MP_OK { throw .taskDoneTooManyTimes }
    }

    /// Waits until every item put has been marked done (up to `timeout`; forever when nil),
    /// blocking the calling thread. Returns false if the timeout passed first. The async overload
    /// (chosen in async code) suspends instead.
    @discardableResult
    public func join(timeout: Duration? = nil) throws(QueueError) -> Bool {
        mp_queue_join(channel.queue, try Deadline.after(timeout, QueueError.self)) == MP_OK
    }

    /// Items put and not yet marked done (a snapshot).
    public var unfinishedTasks: Int { Int(channel.header.pointee.unfinished) }

    /// Every put counts a task: Queue.send does it when `countsTasks`.
    override class var isJoinable: Bool { true }
}

/// An unbounded queue with only `put`, `get`, `isEmpty` and `close` (Python's `SimpleQueue`),
/// between threads and processes.
public final class SimpleQueue<Element: Sendable>: @unchecked Sendable, Codable {
    let queue: Queue<Element>

    /// A simple queue of `Codable` elements.
    public init() throws(QueueError) where Element: Codable { queue = try Queue<Element>() }

    /// A simple queue of fixed-size values, copied as they are.
    public init() throws(QueueError) where Element: BitwiseCopyable { queue = try Queue<Element>() }

    /// A simple queue of fixed-size values, copied as they are.
    public init() throws(QueueError) where Element: BitwiseCopyable & Codable { queue = try Queue<Element>() }

    /// Puts `item` (never blocks for long: the queue is unbounded, up to its ring's space).
    public func put(_ item: Element) throws(QueueError) { try queue.put(item) }

    /// Takes the next item, waiting for one.
    public func get() throws(QueueError) -> Element { try queue.get() }

    /// Takes the next item, waiting up to `timeout`; throws ``QueueError/empty`` after it.
    public func get(timeout: Duration) throws(QueueError) -> Element { try queue.get(timeout: timeout) }

    /// Whether the queue is empty (approximate).
    public var isEmpty: Bool { queue.isEmpty }

    /// No more puts or gets from this process.
    public func close() { queue.close() }

    public func encode(to encoder: any Encoder) throws { try queue.encode(to: encoder) }

    public init(from decoder: any Decoder) throws { queue = try Queue<Element>(from: decoder) }
}
