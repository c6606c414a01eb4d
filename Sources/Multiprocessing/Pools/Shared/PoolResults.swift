/// The results of `imap` or `imapUnordered` for blocking code: each element is one input's
/// outcome, a value or the error its task threw, in input order (`imap`) or as they finish
/// (`imapUnordered`). Tasks are submitted as iteration asks for them.
///
/// ```swift
/// for outcome in pool.imap(tasks) { print(try outcome.get()) }
/// ```
public struct PoolResults<Output: Sendable>: Sequence, Sendable {
    let stream: ResultStream<Output>

    /// An iterator over the outcomes; iterate once (the results are consumed as they are read).
    public func makeIterator() -> Iterator { Iterator(stream: stream) }

    /// Yields each outcome as it becomes available, waiting on the calling thread (Python's
    /// `IMapIterator`).
    public struct Iterator: IteratorProtocol {
        let stream: ResultStream<Output>
        var refused = false

        /// The next outcome, waiting for it; nil after the last. A wait that cannot end yields its
        /// error once, then ends the iteration: ``PoolError/calledFromCallback`` from a callback,
        /// ``PoolError/otherProcess(owner:)`` in a forked child of the pool's process.
        public mutating func next() -> Result<Output, any Error>? {
            if refused { return nil }
            do { return try stream.next(timeout: nil) } catch {
                refused = true
                return .failure(error)
            }
        }

        /// The next outcome, waiting up to `timeout` (Python's `IMapIterator.next(timeout)`); nil
        /// after the last. Throws ``PoolError/timeout`` if none came in time (ask again later).
        public mutating func next(timeout: Duration) throws(PoolError) -> Result<Output, any Error>? {
            try stream.next(timeout: timeout)
        }
    }
}

/// The results of `imap` or `imapUnordered` for async code: `for try await` yields each output, in
/// input order (`imap`) or as they finish (`imapUnordered`), and throws the first task error.
/// Waiting suspends; it never blocks a thread.
///
/// ```swift
/// for try await r in pool.imapUnordered(tasks) { print(r) }
/// ```
public struct AsyncPoolResults<Output: Sendable>: AsyncSequence, Sendable {
    /// Each element is one task's output (a task's error is thrown by the iteration instead).
    public typealias Element = Output
    let stream: ResultStream<Output>

    /// An iterator over the outputs; iterate once (the results are consumed as they are read).
    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(stream: stream) }

    /// Yields each output as it becomes available, suspending (never blocking a thread) while it waits.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let stream: ResultStream<Output>
        var finished = false

        /// The next output, suspending until it comes; nil after the last. Throws the error of the
        /// first task that failed, then ends the iteration (nil afterwards), as `for try await` stops
        /// at a throw.
        public mutating func next() async throws -> Output? {
            guard !finished else { return nil }
            guard let outcome = try await stream.nextAsync() else {
                finished = true
                return nil
            }
            do { return try outcome.get() } catch {
                finished = true
                throw error
            }
        }
    }
}
