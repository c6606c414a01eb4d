/// The bits of a queue's `mode`: what every put and get reads first, in one load.
@usableFromInline
enum QueueMode {
    /// Closed in this process (``Queue/close()``): every later put and get throws
    /// ``QueueError/closed``.
    @inlinable static var closed: UInt8 { 1 }
    /// The elements are copied as they are (a bitwise codec), a put counts no task (not a
    /// ``JoinableQueue``), and an element fits ``Queue/maxMessageSize``: an open queue in this mode
    /// puts and gets by the straight paths, inline in the caller with the element's size a
    /// constant, with no other check first (the element's size and alignment are constants there).
    @inlinable static var straight: UInt8 { 2 }
    /// ``straight``, on a queue with lanes (``QueueOrdering/perProducer``) whose slots hold the
    /// element: puts and gets try the lanes' straight paths alone (no ring test first).
    @inlinable static var straightLanes: UInt8 { lanes | straight }
    /// The bit of ``straightLanes``: one test finds it (a closed queue's mode is ``closed`` alone).
    @inlinable static var lanes: UInt8 { 4 }

    /// The mode a queue starts in; `lanes`: the queue has lanes of the element's size.
    static func of<Element>(
        _ codec: ElementCodec<Element>, maxMessageSize: Int, countsTasks: Bool, lanes: Bool
    ) -> UInt8 {
        guard codec.kind == .bitwise && !countsTasks && MemoryLayout<Element>.size <= maxMessageSize else { return 0 }
        return lanes ? straightLanes : straight
    }
}
