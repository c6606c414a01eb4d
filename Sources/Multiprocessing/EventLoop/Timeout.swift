import CMultiprocessing

/// The time given to ``withTimeout(_:_:)`` ran out (Python's `TimeoutError`).
public struct TimeoutError: Error, Equatable, Sendable {
    /// The time that was allowed.
    public let timeout: Duration
}

/// Runs `body`, cancelling it if it has not finished within `timeout` (Python's
/// `asyncio.wait_for`): then waits for it to wind down and throws ``TimeoutError``. The timer is
/// an io_uring timeout on the caller's event loop.
///
/// ```swift
/// let reply = try await withTimeout(.seconds(2)) { try await connection.receive(upTo: 1024) }
/// ```
///
/// - Throws: ``TimeoutError``, ``SyncError/negativeTimeout(_:)``, or what `body` throws.
public func withTimeout<T: Sendable>(
    _ timeout: Duration, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let deadline = try Deadline.after(timeout, SyncError.self)
    return try await withThrowingTaskGroup(of: TimeoutOutcome<T>.self) { group in
        group.addTask { .value(try await body()) }
        group.addTask {
            try await sleep(untilMonotonic: deadline)
            return .timedOut
        }
        defer { group.cancelAll() }
        switch try await group.next()! {
        case .value(let value): return value
        case .timedOut: throw TimeoutError(timeout: timeout)
        }
    }
}

private enum TimeoutOutcome<T: Sendable>: Sendable {
    case value(T)
    case timedOut
}
