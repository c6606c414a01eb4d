import Logging
import Multiprocessing
import PostgresNIO

/// A durable task queue in PostgreSQL, with the shape of ``Multiprocessing/ProcessPool``:
/// `applyAsync` returns a handle whose `get(timeout:)` waits for the result, `map` and `imap` run many.
///
/// Tasks name a registered ``Multiprocessing/PoolWorker`` and carry its `Codable` input; any
/// ``DurableWorker`` host that runs a pool of that worker on this queue's name may run them.
///
/// ```swift
/// let queue = DurableQueue(client: postgres, name: "default")
/// let h = try await queue.applyAsync(square, 7)
/// let v = try await h.get(timeout: .seconds(30))   // 49
/// ```
///
/// Delivery is at least once: a task whose host dies or is cut off mid-run runs again elsewhere, so
/// write tasks that may run twice (see <doc:DistributedPool>). A task's result is stored once: only
/// the run holding the task's current lease may store it.
///
/// The queue needs a running `PostgresClient` (`client.run()` in a task or a `ServiceGroup`) and the
/// schema (``Schema/migrate(_:logger:)``).
public final class DurableQueue: Sendable {
    /// The queue's name: worker hosts claim the tasks of the queues they serve.
    public let name: String
    /// The client every statement runs on.
    public let client: PostgresClient
    /// How many times a task may be claimed, unless `applyAsync` says otherwise.
    public let maxAttempts: Int
    /// How often a waiter re-reads its task's row when no notification came (a lost one, a restarted
    /// server): notifications make waits short, polling makes them certain.
    public let pollInterval: Duration
    /// Whether a waiter takes a small result from its `NOTIFY` as it comes, without reading the
    /// task's row (the shortest wait). PostgreSQL does not say who sent a notification: any role
    /// that may connect to the database may send one, and so hand a waiter a result of its own
    /// making. Set false where not every such role is trusted: a notification then only wakes the
    /// waiter, which reads the row.
    public let takesResultsFromNotifications: Bool
    let store: TaskStore
    let watcher: ResultWatcher

    /// A queue named `name` on `client` (see ``takesResultsFromNotifications`` for the last option).
    public init(
        client: PostgresClient, name: String = "default", maxAttempts: Int = 3, pollInterval: Duration = .seconds(1),
        takesResultsFromNotifications: Bool = true, logger: Logger = Logger(label: "mp.distributed")
    ) {
        self.name = name
        self.client = client
        self.maxAttempts = max(maxAttempts, 1)
        self.pollInterval = pollInterval
        self.takesResultsFromNotifications = takesResultsFromNotifications
        self.store = TaskStore(client: client, logger: logger)
        self.watcher = ResultWatcher(client: client, logger: logger)
    }

    deinit { watcher.close() }

    /// Stops listening for results; waits in progress fall back to polling.
    public func close() { watcher.close() }

    // MARK: Submitting

    /// Enqueues `worker(input)` and returns its handle at once (Python's `apply_async`). The task
    /// is claimable after `delay`, and runs at most `maxAttempts` times (the queue's when nil).
    public func applyAsync<Input, Output>(
        _ worker: PoolWorker<Input, Output>, _ input: Input, delay: Duration = .zero, maxAttempts: Int? = nil
    ) async throws(DistributedError) -> DurableResult<Output> {
        try await mapAsync(worker, [input], delay: delay, maxAttempts: maxAttempts)[0]
    }

    /// Enqueues `worker(input)` inside the caller's transaction, on its connection: the task exists
    /// if and only if the transaction commits, together with the caller's own rows (and workers hear
    /// of it only at the commit).
    ///
    /// ```swift
    /// try await client.withTransaction(logger: logger) { connection in
    ///     try await connection.query("INSERT INTO orders (id) VALUES (\(orderID))", logger: logger)
    ///     _ = try await queue.applyAsync(sendReceipt, orderID, on: connection)
    /// }
    /// ```
    public func applyAsync<Input, Output>(
        _ worker: PoolWorker<Input, Output>, _ input: Input, on connection: PostgresConnection,
        delay: Duration = .zero, maxAttempts: Int? = nil, logger: Logger = Logger(label: "mp.distributed")
    ) async throws(DistributedError) -> DurableResult<Output> {
        try await mapAsync(worker, [input], on: connection, delay: delay, maxAttempts: maxAttempts, logger: logger)[0]
    }

    /// Enqueues one task per input in one statement and returns their handles, in input order
    /// (Python's `map_async`, one handle per input).
    public func mapAsync<Input, Output, S: Sequence<Input>>(
        _ worker: PoolWorker<Input, Output>, _ inputs: S, delay: Duration = .zero, maxAttempts: Int? = nil
    ) async throws(DistributedError) -> [DurableResult<Output>] {
        let (encoded, attempts) = try encode(inputs, delay: delay, maxAttempts: maxAttempts)
        let client = client
        let logger = store.logger
        let ids = try await translatingErrors {
            try await TaskStore.insert(
                queue: name, worker: worker.name, inputs: encoded, maxAttempts: attempts, delay: delay
            ) { query in try await client.query(query, logger: logger) }
        }
        return ids.map { DurableResult(id: $0, queue: self) }
    }

    /// ``mapAsync(_:_:delay:maxAttempts:)`` inside the caller's transaction, on its connection.
    public func mapAsync<Input, Output, S: Sequence<Input>>(
        _ worker: PoolWorker<Input, Output>, _ inputs: S, on connection: PostgresConnection,
        delay: Duration = .zero, maxAttempts: Int? = nil, logger: Logger = Logger(label: "mp.distributed")
    ) async throws(DistributedError) -> [DurableResult<Output>] {
        let (encoded, attempts) = try encode(inputs, delay: delay, maxAttempts: maxAttempts)
        let ids = try await translatingErrors {
            try await TaskStore.insert(
                queue: name, worker: worker.name, inputs: encoded, maxAttempts: attempts, delay: delay
            ) { query in try await connection.query(query, logger: logger) }
        }
        return ids.map { DurableResult(id: $0, queue: self) }
    }

    private func encode<Input: Encodable, S: Sequence<Input>>(_ inputs: S, delay: Duration, maxAttempts: Int?)
        throws(DistributedError) -> ([[UInt8]], Int)
    {
        if delay < .zero { throw .negativeTimeout(delay) }
        let attempts = maxAttempts ?? self.maxAttempts
        if attempts < 1 { throw .invalidMaxAttempts(attempts) }
        var encoded: [[UInt8]] = []
        for input in inputs { encoded.append(try PayloadFormat.current.encode(input)) }
        return (encoded, attempts)
    }

    // MARK: Results

    /// Runs `worker(input)` on some host and waits up to `timeout` (forever when nil) for its result.
    public func apply<Input, Output>(_ worker: PoolWorker<Input, Output>, _ input: Input, timeout: Duration? = nil)
        async throws(DistributedError) -> Output
    {
        try await applyAsync(worker, input).get(timeout: timeout)
    }

    /// Runs `worker` on every input and returns the outputs in input order (Python's `map`); throws
    /// the first task's error, or ``DistributedError/timeout`` if not all finished within `timeout`.
    public func map<Input, Output, S: Sequence<Input>>(
        _ worker: PoolWorker<Input, Output>, _ inputs: S, timeout: Duration? = nil
    ) async throws(DistributedError) -> [Output] {
        let handles = try await mapAsync(worker, inputs)
        return try await DurableResult.all(handles, timeout: timeout)
    }

    /// The outputs in input order as they become available (Python's `imap`); the tasks are enqueued
    /// at once, in one statement.
    public func imap<Input, Output, S: Sequence<Input>>(_ worker: PoolWorker<Input, Output>, _ inputs: S)
        -> AsyncThrowingStream<Output, any Error> where S: Sendable
    {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let handles = try await mapAsync(worker, inputs)
                    for handle in handles { continuation.yield(try await handle.get()) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// The handle of a task enqueued earlier, by its id (for instance by another process, or before a
    /// restart): results are kept by handle in the database.
    public func result<Output: Decodable & Sendable>(of id: Int64, as type: Output.Type = Output.self)
        -> DurableResult<Output>
    {
        DurableResult(id: id, queue: self)
    }

    /// The row of task `id`.
    public func status(of id: Int64) async throws(DistributedError) -> TaskStatus {
        let found = try await translatingErrors { try await store.status(of: [id]) }
        guard let status = found[id] else { throw .unknownTask(id) }
        return status
    }
}
