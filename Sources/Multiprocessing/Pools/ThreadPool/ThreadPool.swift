import CMultiprocessing

/// A pool of threads of this process that run closures (Python's `multiprocessing.pool.ThreadPool`),
/// with the same API as ``ProcessPool``: any closure, no `Codable` needed.
///
/// ```swift
/// let pool = try ThreadPool(threads: 4)
/// let page = try pool.apply { try download("a.html") }
/// let sizes = try pool.map(urls) { try download($0).count }
/// pool.applyAsync({ compute() }, callback: { print($0) })
/// pool.close(); try pool.join()
/// ```
///
/// An error thrown by a closure comes back as itself. Callbacks run on the pool's one result thread,
/// in completion order. A thread cannot be killed: ``terminate()`` fails the tasks that have not
/// started with ``PoolError/terminated`` and waits for the running ones. Dropping the last reference
/// to an open pool terminates it.
public final class ThreadPool: @unchecked Sendable {
    let core: ThreadPoolCore

    /// The number of worker threads.
    public var threads: Int { core.threads }

    /// A pool of `threads` worker threads (``cpuCount`` when nil), whose tasks `observer` is told
    /// of (see ``PoolObserver``). Throws ``PoolError/invalidWorkerCount(_:)`` below one.
    public init(threads: Int? = nil, observer: (any PoolObserver)? = nil) throws(PoolError) {
        core = try ThreadPoolCore(threads: threads ?? cpuCount, observer: observer)
    }

    /// Tasks submitted and not yet finished (queued and running).
    public var unfinishedTasks: Int { core.unfinishedTasks }

    deinit { core.terminate() }

    // MARK: Tasks

    /// Runs `body` on a pool thread and waits for its result (Python's `apply`).
    public func apply<R: Sendable>(_ body: @escaping @Sendable () throws -> R) throws -> R {
        try applyAsync(body).get()
    }

    /// Submits `body` and returns at once (Python's `apply_async`); `callback` or `errorCallback`
    /// runs on the pool's result thread.
    @discardableResult
    public func applyAsync<R: Sendable>(
        _ body: @escaping @Sendable () throws -> R, callback: (@Sendable (R) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) -> AsyncResult<R> {
        let handle = AsyncResult<R>(delivery: core.delivery, callback: callback, errorCallback: errorCallback)
        core.enqueue(
            .init(
                run: {
                    let outcome = Result { try body() }
                    return .init(deliver: { handle.complete(outcome) }, error: outcome.failure)
                },
                fail: { error in { handle.complete(.failure(error)) } }))
        return handle
    }

    /// Runs `body` on a pool thread, from async code: suspends until the result is there.
    public func run<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
        try await applyAsync(body).value
    }

    /// `transform` applied to every item on the pool's threads, `chunkSize` items per task (about
    /// four tasks per thread when nil), outputs in input order (Python's `map`). Throws the first
    /// error to arrive (not necessarily that of the earliest input), as Python's does. For Python's
    /// `starmap`, map over tuples: `pool.map(pairs) { a, b in a + b }`.
    public func map<S: Sequence, R: Sendable>(
        _ items: S, chunkSize: Int? = nil, _ transform: @escaping @Sendable (S.Element) throws -> R
    ) throws -> [R] where S.Element: Sendable {
        try mapAsync(items, chunkSize: chunkSize, transform).get()
    }

    /// ``map(_:chunkSize:_:)`` without waiting (Python's `map_async`).
    @discardableResult
    public func mapAsync<S: Sequence, R: Sendable>(
        _ items: S, chunkSize: Int? = nil, _ transform: @escaping @Sendable (S.Element) throws -> R,
        callback: (@Sendable ([R]) -> Void)? = nil, errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) -> AsyncResult<[R]> where S.Element: Sendable {
        submitMap(
            Array(items), chunkSize: chunkSize, through: submitter(transform), callback: callback,
            errorCallback: errorCallback)
    }

    /// The outputs in input order, as they become available (Python's `imap`), submitted lazily.
    /// Iterate with `for outcome in` (each element is a `Result`) or `for try await output in`.
    public func imap<S: Sequence, R: Sendable>(
        _ items: S, chunkSize: Int = 1, _ transform: @escaping @Sendable (S.Element) throws -> R
    ) -> PoolResults<R> where S.Element: Sendable {
        PoolResults(stream: submitter(transform).stream(items, chunkSize: chunkSize, ordered: true))
    }

    /// `imap(_:chunkSize:_:)` for `for try await` (chosen where an `AsyncSequence` is expected).
    @_disfavoredOverload
    public func imap<S: Sequence, R: Sendable>(
        _ items: S, chunkSize: Int = 1, _ transform: @escaping @Sendable (S.Element) throws -> R
    ) -> AsyncPoolResults<R> where S.Element: Sendable {
        AsyncPoolResults(stream: submitter(transform).stream(items, chunkSize: chunkSize, ordered: true))
    }

    /// The outputs as they finish, in any order (Python's `imap_unordered`).
    public func imapUnordered<S: Sequence, R: Sendable>(
        _ items: S, chunkSize: Int = 1, _ transform: @escaping @Sendable (S.Element) throws -> R
    ) -> PoolResults<R> where S.Element: Sendable {
        PoolResults(stream: submitter(transform).stream(items, chunkSize: chunkSize, ordered: false))
    }

    /// `imapUnordered(_:chunkSize:_:)` for `for try await` (chosen where an `AsyncSequence` is expected).
    @_disfavoredOverload
    public func imapUnordered<S: Sequence, R: Sendable>(
        _ items: S, chunkSize: Int = 1, _ transform: @escaping @Sendable (S.Element) throws -> R
    ) -> AsyncPoolResults<R> where S.Element: Sendable {
        AsyncPoolResults(stream: submitter(transform).stream(items, chunkSize: chunkSize, ordered: false))
    }

    private func submitter<T: Sendable, R: Sendable>(
        _ transform: @escaping @Sendable (T) throws -> R
    ) -> ChunkSubmitter<T, R> {
        ChunkSubmitter(workers: threads, delivery: core.delivery) { items, sink, chunk in
            let items = Array(items)
            self.core.enqueue(  // holds the pool while the results are read
                .init(
                    run: {
                        let outcome = Result { try items.map(transform) }
                        return .init(deliver: { sink.deliver(chunk: chunk, outcome) }, error: outcome.failure)
                    },
                    fail: { error in { sink.deliver(chunk: chunk, .failure(error)) } }))
        }
    }

    // MARK: Lifecycle

    /// No more tasks (Python's `close`); the submitted ones run to the end.
    public func close() { core.close() }

    /// Waits for every submitted task to finish and for the threads to end (up to `timeout`;
    /// forever when nil); false if the timeout passed first. Throws ``PoolError/stillRunning``
    /// unless ``close()`` or ``terminate()`` came first, and ``PoolError/calledFromTask`` from one of
    /// the pool's own tasks (which the join would wait for).
    @discardableResult
    public func join(timeout: Duration? = nil) throws(PoolError) -> Bool { try core.join(timeout: timeout) }

    /// Fails every task that has not started with ``PoolError/terminated``, lets the running ones
    /// finish, and stops the threads.
    public func terminate() { core.terminate() }

    /// Stops taking tasks and waits for the submitted ones to finish and the workers to end (as
    /// ``close()`` then ``join(timeout:)``), suspending rather than holding a thread of Swift's
    /// cooperative pool. If `timeout` passes first, or the calling task is cancelled, the pool is
    /// terminated (see ``terminate()``): what had not started fails with ``PoolError/terminated``;
    /// the running tasks finish on their threads, which then end, but nothing waits for them here.
    /// - Returns: Whether every task finished before the timeout.
    @discardableResult
    public func shutdownGracefully(timeout: Duration? = nil) async throws -> Bool {
        close()
        let end = try Deadline.after(timeout, PoolError.self)
        // A terminate that waited for the running tasks would hold the canceller (a service
        // group's own task), or here a thread of the cooperative pool, for as long as they run.
        // So would one join to the end: it waits for the running tasks too (they cannot be
        // stopped). It goes in slices, and a cancellation is seen within one.
        let finished = try await withTaskCancellationHandler {
            while !Task.isCancelled {
                let left = end == .max ? Int64.max : end - mp_monotonic_ns()
                let slice = Duration.nanoseconds(max(0, min(left, 50_000_000)))
                do {
                    if try await toThread({ try self.join(timeout: slice) }) { return true }
                } catch is CancellationError {
                    break
                }
                if left <= 50_000_000 { break }  // the timeout has passed
            }
            return false
        } onCancel: {
            self.core.terminate(waiting: false)
        }
        if !finished { core.terminate(waiting: false) }
        return finished
    }
}

extension Result {
    /// The error, if this is a failure.
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
