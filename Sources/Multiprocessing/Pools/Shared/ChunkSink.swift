/// Where the outcomes of the chunks of one `map`, `mapAsync`, `imap` or `imapUnordered` call go.
/// `deliver` is called once per chunk, on the pool's result thread.
class ChunkSink<Output: Sendable>: @unchecked Sendable {
    func deliver(chunk: Int, _ outcome: Result<[Output], any Error>) {}
}

/// Submits one chunk of inputs to a pool; the chunk's outcome goes to the sink. Each pool makes
/// one (a ``ThreadPool`` per call, around the call's closure).
struct ChunkSubmitter<Input, Output: Sendable>: Sendable {
    /// The pool's worker count (for the default chunk size and the look-ahead of `imap`).
    let workers: Int
    let delivery: DeliveryThread
    let submit: @Sendable (_ items: ArraySlice<Input>, _ sink: ChunkSink<Output>, _ chunk: Int) -> Void
}
