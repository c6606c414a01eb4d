/// Runs the coroutines concurrently and returns their results in order (Python's
/// `asyncio.gather`). The first error cancels the others, waits for them, and is rethrown.
///
/// ```swift
/// let (a, b) = try await gather({ @Sendable in try await fetch(1) }, { @Sendable in try await fetch(2) })
/// ```
///
/// The children are child tasks: they run on the caller's event loop (they inherit its executor
/// preference), so a gather of sleeps takes as long as the longest one.
public func gather<each T: Sendable>(
    _ body: repeat @escaping @Sendable () async throws -> each T
) async throws -> (repeat each T) {
    var thunks: [@Sendable () async throws -> any Sendable] = []
    repeat thunks.append(erased(each body))
    let values = try await gather(thunks)
    var index = 0
    func next<V>(_: V.Type) -> V {
        defer { index += 1 }
        return values[index] as! V  // built from the same pack, in the same order
    }
    return (repeat next((each T).self))
}

/// Runs the coroutines concurrently and returns their results in order; the first error cancels
/// the others and is rethrown.
public func gather<T: Sendable>(_ bodies: [@Sendable () async throws -> T]) async throws -> [T] {
    try await withThrowingTaskGroup(of: (Int, T).self) { group in
        for (i, body) in bodies.enumerated() {
            group.addTask { (i, try await body()) }
        }
        var results = [T?](repeating: nil, count: bodies.count)
        for try await (i, value) in group { results[i] = value }
        return results.map { $0! }
    }
}

/// Runs the coroutines concurrently and returns every outcome, value or error, in order (Python's
/// `asyncio.gather(..., return_exceptions=True)`). An error cancels nothing.
public func gatherResults<T: Sendable>(_ bodies: [@Sendable () async throws -> T]) async -> [Result<T, any Error>] {
    await withTaskGroup(of: (Int, Result<T, any Error>).self) { group in
        for (i, body) in bodies.enumerated() {
            group.addTask {
                do { return (i, .success(try await body())) } catch { return (i, .failure(error)) }
            }
        }
        var results = [Result<T, any Error>?](repeating: nil, count: bodies.count)
        for await (i, outcome) in group { results[i] = outcome }
        return results.map { $0! }
    }
}

private func erased<V: Sendable>(
    _ body: @escaping @Sendable () async throws -> V
) -> @Sendable () async throws -> any Sendable {
    { try await body() }
}
