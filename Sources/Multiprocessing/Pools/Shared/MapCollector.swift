/// Collects the chunks of a `map` in order and completes one ``AsyncResult`` with all the outputs,
/// or with the first error (as Python's `MapResult` does, at once). Chunks arrive on the result
/// thread, and a chunk that cannot be submitted fails on the caller's: hence the lock.
final class MapCollector<Output: Sendable>: ChunkSink<Output>, @unchecked Sendable {
    struct State {
        var chunks: [[Output]?]
        var remaining: Int
        var failed = false
    }

    let handle: AsyncResult<[Output]>
    private let state: Locked<State>

    init(handle: AsyncResult<[Output]>, chunkCount: Int) {
        self.handle = handle
        state = Locked(State(chunks: Array(repeating: nil, count: chunkCount), remaining: chunkCount))
    }

    override func deliver(chunk: Int, _ outcome: Result<[Output], any Error>) {
        let finished = state.withLock { s -> Result<[Output], any Error>? in
            guard !s.failed else { return nil }
            switch outcome {
            case .failure:
                s.failed = true
                s.chunks = []
                return outcome
            case .success(let outputs):
                s.chunks[chunk] = outputs
                s.remaining -= 1
                guard s.remaining == 0 else { return nil }
                var all: [Output] = []
                all.reserveCapacity(s.chunks.reduce(0) { $0 + ($1?.count ?? 0) })
                for part in s.chunks { all.append(contentsOf: part!) }
                s.chunks = []
                return .success(all)
            }
        }
        if let finished { handle.complete(finished) }
    }
}

/// Python's default chunk size for `map`: about four chunks per worker.
func defaultChunkSize(count: Int, workers: Int) -> Int {
    let per = max(1, workers) * 4
    let (size, extra) = count.quotientAndRemainder(dividingBy: per)
    return max(1, extra > 0 ? size + 1 : size)
}

/// Splits `items` into chunks of `chunkSize` (the last may be shorter) and submits them all;
/// the returned handle completes with the outputs in order.
func submitMap<Input, Output: Sendable>(
    _ items: [Input], chunkSize: Int?, through submitter: ChunkSubmitter<Input, Output>,
    callback: (@Sendable ([Output]) -> Void)?, errorCallback: (@Sendable (any Error) -> Void)?
) -> AsyncResult<[Output]> {
    let handle = AsyncResult<[Output]>(delivery: submitter.delivery, callback: callback, errorCallback: errorCallback)
    if let chunkSize, chunkSize < 1 {
        handle.complete(.failure(PoolError.invalidChunkSize(chunkSize)))
        return handle
    }
    let size = chunkSize ?? defaultChunkSize(count: items.count, workers: submitter.workers)
    let chunkCount = items.isEmpty ? 0 : (items.count - 1) / size + 1  // no overflow for a size near Int.max
    if chunkCount == 0 {
        handle.complete(.success([]))
        return handle
    }
    let collector = MapCollector(handle: handle, chunkCount: chunkCount)
    for chunk in 0..<chunkCount {
        if handle.isReady { break }  // failed already (the pool closed, say): stop submitting
        let start = chunk * size
        submitter.submit(items[start..<start + min(size, items.count - start)], collector, chunk)
    }
    return handle
}
