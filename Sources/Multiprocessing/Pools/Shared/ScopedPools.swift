// Scoped pools: Python's `with Pool() as pool:` as a function that owns the pool for the duration
// of a closure. On the way out a pool is always ended: closed and joined when the closure returns,
// terminated when it throws (nobody will read the results of what is left).

/// Runs `body` with a new ``ProcessPool`` of closure workers; then closes the pool and waits for
/// its tasks and workers (Python's `with Pool() as pool:` ends in `close()` and `join()` here, so
/// that the tasks submitted in `body` finish). If `body` throws, the pool is terminated and the
/// error rethrown.
///
/// ```swift
/// let squares = try withProcessPool(processes: 4, work: { (n: Int) in n * n }) { pool in
///     try pool.map(1...10)
/// }
/// ```
///
/// The parameters are those of ``ProcessPool/init(processes:initializer:maxTasksPerChild:observer:work:)``.
public func withProcessPool<Input: Codable & Sendable, Output: Codable & Sendable, Result>(
    processes: Int? = nil, initializer: (@Sendable () throws -> Void)? = nil, maxTasksPerChild: Int? = nil,
    work: @escaping @Sendable (Input) throws -> Output,
    _ body: (ProcessPool<Input, Output>) throws -> Result
) throws -> Result {
    let pool = try ProcessPool(
        processes: processes, initializer: initializer, maxTasksPerChild: maxTasksPerChild, work: work)
    return try scoped(pool, close: pool.close, join: { try pool.join() }, terminate: pool.terminate, body)
}

/// Runs `body` with a new ``ProcessPool`` over a registered ``PoolWorker``; then closes and joins
/// it, or terminates it if `body` throws (see ``withProcessPool(processes:initializer:maxTasksPerChild:work:_:)-5z5l2``).
public func withProcessPool<Input: Codable & Sendable, Output: Codable & Sendable, Result>(
    processes: Int? = nil, maxTasksPerChild: Int? = nil, startMethod: Process.StartMethod = .forkserver,
    worker: PoolWorker<Input, Output>,
    _ body: (ProcessPool<Input, Output>) throws -> Result
) throws -> Result {
    let pool = try ProcessPool(
        processes: processes, maxTasksPerChild: maxTasksPerChild, startMethod: startMethod, worker: worker)
    return try scoped(pool, close: pool.close, join: { try pool.join() }, terminate: pool.terminate, body)
}

/// Runs `body` with a new ``ThreadPool``; then closes it and waits for its tasks and threads, or
/// terminates it if `body` throws.
///
/// ```swift
/// let lengths = try withThreadPool(threads: 4) { pool in try pool.map(words) { $0.count } }
/// ```
public func withThreadPool<Result>(threads: Int? = nil, _ body: (ThreadPool) throws -> Result) throws -> Result {
    let pool = try ThreadPool(threads: threads)
    return try scoped(pool, close: pool.close, join: { try pool.join() }, terminate: pool.terminate, body)
}

/// The async form of ``withProcessPool(processes:initializer:maxTasksPerChild:work:_:)-5z5l2``: `body`
/// may suspend, and the final join waits on a helper thread (see ``toThread(_:)``), not on the
/// caller's. A cancelled task's `body` decides what to do; if it throws, the pool is terminated.
public func withProcessPool<Input: Codable & Sendable, Output: Codable & Sendable, Result>(
    processes: Int? = nil, initializer: (@Sendable () throws -> Void)? = nil, maxTasksPerChild: Int? = nil,
    work: @escaping @Sendable (Input) throws -> Output,
    _ body: (ProcessPool<Input, Output>) async throws -> Result
) async throws -> Result {
    let pool = try ProcessPool(
        processes: processes, initializer: initializer, maxTasksPerChild: maxTasksPerChild, work: work)
    return try await scoped(pool, close: pool.close, join: { try pool.join() }, terminate: pool.terminate, body)
}

/// The async form of ``withProcessPool(processes:maxTasksPerChild:startMethod:worker:_:)-5ay4c``.
public func withProcessPool<Input: Codable & Sendable, Output: Codable & Sendable, Result>(
    processes: Int? = nil, maxTasksPerChild: Int? = nil, startMethod: Process.StartMethod = .forkserver,
    worker: PoolWorker<Input, Output>,
    _ body: (ProcessPool<Input, Output>) async throws -> Result
) async throws -> Result {
    let pool = try ProcessPool(
        processes: processes, maxTasksPerChild: maxTasksPerChild, startMethod: startMethod, worker: worker)
    return try await scoped(pool, close: pool.close, join: { try pool.join() }, terminate: pool.terminate, body)
}

/// The async form of ``withThreadPool(threads:_:)-68cys``.
public func withThreadPool<Result>(threads: Int? = nil, _ body: (ThreadPool) async throws -> Result)
    async throws -> Result
{
    let pool = try ThreadPool(threads: threads)
    return try await scoped(pool, close: pool.close, join: { try pool.join() }, terminate: pool.terminate, body)
}

/// The scope every form shares: `body`, then close and join; terminate instead when it throws.
private func scoped<Pool, Result>(
    _ pool: Pool, close: () -> Void, join: () throws -> Void, terminate: () -> Void,
    _ body: (Pool) throws -> Result
) throws -> Result {
    let result: Result
    do {
        result = try body(pool)
    } catch {
        terminate()
        throw error
    }
    close()
    try join()
    return result
}

private func scoped<Pool: Sendable, Result>(
    _ pool: Pool, close: () -> Void, join: @escaping @Sendable () throws -> Void, terminate: () -> Void,
    _ body: (Pool) async throws -> Result
) async throws -> Result {
    let result: Result
    do {
        result = try await body(pool)
    } catch {
        terminate()
        throw error
    }
    close()
    // Not toThread: a join must not be skipped because the task was cancelled meanwhile.
    try await BlockingPool.shared.run(join)
    return result
}
