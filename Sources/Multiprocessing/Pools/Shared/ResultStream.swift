/// The outcomes of one `imap` or `imapUnordered` call, in input order or as they finish.
///
/// Lazy: chunks are submitted as the consumer asks for results, a bounded number ahead, so the
/// input may be long (or endless). Its consumers (the public types are `Sendable`, so several
/// threads or tasks may read one stream, as several may call Python's `IMapIterator.next`) take
/// turns under a lock; each outcome goes to one of them. Chunk outcomes arrive from the pool's
/// result thread (or from a consumer itself, for a chunk that could not be submitted).
final class ResultStream<Output: Sendable>: ChunkSink<Output>, @unchecked Sendable {
    struct State {
        /// Ordered: outcomes by chunk index. Unordered: arrivals, oldest first.
        var byChunk: [Int: Result<[Output], any Error>] = [:]
        var arrivals = FIFO<(chunk: Int, outcome: Result<[Output], any Error>)>()
        /// Async consumers waiting for an arrival, by id.
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter: UInt64 = 0
        /// Arrivals so far: a consumer that saw no outcome waits for this to move.
        var generation: UInt64 = 0
    }

    let ordered: Bool
    private let state = Locked(State())
    /// Set when an outcome arrives; a blocking consumer sleeps on it.
    private let arrived = LocalEvent()
    /// Submits the next chunk as `chunk` and returns its size; nil once the input is exhausted.
    private let submitNext: (_ sink: ChunkSink<Output>, _ chunk: Int) -> Int?
    private let window: Int

    /// Held by the consumer that polls: the consumer's side below is one state for all of them.
    private let consumer = InternalLock()

    // The consumer's side (under `consumer`).
    private var sizes: [Int: Int] = [:]
    private var submitted = 0
    private var taken = 0
    private var inputDone = false
    private var current: [Output] = []
    private var position = 0
    private var currentFailure: (any Error)?
    private var failuresLeft = 0

    init(
        ordered: Bool, window: Int, submitNext: @escaping (_ sink: ChunkSink<Output>, _ chunk: Int) -> Int?
    ) {
        self.ordered = ordered
        self.window = max(window, 1)
        self.submitNext = submitNext
    }

    override func deliver(chunk: Int, _ outcome: Result<[Output], any Error>) {
        let waiters = state.withLock { s -> [UInt64: CheckedContinuation<Void, Never>] in
            if ordered {
                s.byChunk[chunk] = outcome
            } else {
                s.arrivals.append((chunk, outcome))
            }
            s.generation &+= 1
            defer { s.waiters = [:] }
            return s.waiters
        }
        arrived.set()
        for waiter in waiters.values { waiter.resume() }
    }

    /// The next element if one is at hand, after topping up the submitted chunks. `.none` at the
    /// end; nil when the consumer must wait (the arrival event has been cleared under the lock, so
    /// an arrival after this call sets it again; `seen` is the arrivals' generation then).
    private func poll(seen: inout UInt64) -> Result<Output, any Error>?? {
        consumer.withLock { pollLocked(seen: &seen) }
    }

    private func pollLocked(seen: inout UInt64) -> Result<Output, any Error>?? {
        while true {
            if failuresLeft > 0, let failure = currentFailure {
                failuresLeft -= 1
                return .some(.failure(failure))
            }
            if position < current.count {
                position += 1
                return .some(.success(current[position - 1]))
            }
            while !inputDone && submitted - taken < window {
                if let size = submitNext(self, submitted) {
                    sizes[submitted] = size
                    submitted += 1
                } else {
                    inputDone = true
                }
            }
            if inputDone && taken == submitted { return .some(nil) }
            guard let (chunk, outcome) = takeArrival(seen: &seen) else { return nil }
            taken += 1
            let size = sizes.removeValue(forKey: chunk) ?? 0
            switch outcome {
            case .success(let outputs):
                current = outputs
                position = 0
            case .failure(let error):
                current = []
                position = 0
                currentFailure = error
                failuresLeft = size  // every input of a failed chunk reports its error
                // A pool that refused this chunk refuses every later one: the input ends here (as
                // Python's task handler stops feeding once the pool is not running), or an endless
                // input would yield refusals forever.
                if let refusal = error as? PoolError, refusal.refusesLaterTasks { inputDone = true }
            }
        }
    }

    private func takeArrival(seen: inout UInt64) -> (Int, Result<[Output], any Error>)? {
        state.withLock { s in
            if ordered {
                if let outcome = s.byChunk.removeValue(forKey: taken) { return (taken, outcome) }
            } else if let next = s.arrivals.popFirst() {
                return next
            }
            arrived.clear()
            seen = s.generation
            return nil
        }
    }

    /// The next element, waiting up to `timeout` (forever when nil); nil at the end.
    func next(timeout: Duration?) throws(PoolError) -> Result<Output, any Error>? {
        let deadline = try Deadline.after(timeout, PoolError.self)
        var seen: UInt64 = 0
        while true {
            if let element = poll(seen: &seen) { return element }
            try delivery?.checkWaitCanEnd()
            if !arrived.wait(deadline: deadline) { throw .timeout }
        }
    }

    /// The next element, suspending until it is there; nil at the end.
    func nextAsync() async throws -> Result<Output, any Error>? {
        var seen: UInt64 = 0
        while true {
            try Task.checkCancellation()
            if let element = poll(seen: &seen) { return element }
            try delivery?.checkOwnersProcess()
            let id = state.withLock { s in
                s.nextWaiter += 1
                return s.nextWaiter
            }
            await withTaskCancellationHandler {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let now = state.withLock { s -> Bool in
                        // A task cancelled before this handler was installed (while `poll` read the
                        // input or submitted) had its handler run already, with no waiter to resume:
                        // the flag, set before any handler runs, is seen here.
                        let ready = Task.isCancelled || s.generation != seen
                        if !ready { s.waiters[id] = continuation }
                        return ready
                    }
                    if now { continuation.resume() }
                }
            } onCancel: {
                state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
            }
        }
    }

    /// Set by the pool: the thread whose blocking waits would never end.
    var delivery: DeliveryThread?
}

extension ChunkSubmitter {
    /// A lazy stream over `items`, `chunkSize` inputs per task.
    func stream<S: Sequence>(_ items: S, chunkSize: Int, ordered: Bool) -> ResultStream<Output>
    where S.Element == Input {
        var iterator = items.makeIterator()
        let size = max(chunkSize, 1)
        let invalid = chunkSize < 1 ? chunkSize : nil
        let submitter = self
        let stream = ResultStream<Output>(ordered: ordered, window: 4 * max(workers, 1) + 2) { sink, chunk in
            if let invalid {
                guard chunk == 0 else { return nil }
                sink.deliver(chunk: 0, .failure(PoolError.invalidChunkSize(invalid)))
                return 1
            }
            var items: [Input] = []
            items.reserveCapacity(size)
            while items.count < size, let next = iterator.next() { items.append(next) }
            if items.isEmpty { return nil }
            submitter.submit(items[...], sink, chunk)
            return items.count
        }
        stream.delivery = delivery
        return stream
    }
}
