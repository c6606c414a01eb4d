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

    /// The mode a queue starts in.
    static func of<Element>(_ codec: ElementCodec<Element>, maxMessageSize: Int, countsTasks: Bool) -> UInt8 {
        codec.kind == .bitwise && !countsTasks && MemoryLayout<Element>.size <= maxMessageSize ? straight : 0
    }
}
