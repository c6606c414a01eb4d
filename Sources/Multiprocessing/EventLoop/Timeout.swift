import CMultiprocessing

/// The time given to ``withTimeout(_:_:)`` ran out (Python's `TimeoutError`).
public struct TimeoutError: Error, Equatable, Sendable {
    /// The time that was allowed.
    public let timeout: Duration
}

/// Runs `body`, cancelling it if it has not finished within `timeout` (Python's
/// `asyncio.wait_for`): then waits for it to wind down and throws ``TimeoutError``, unless it
/// returned all the same (it had finished as the time ran out): then its value is returned, not
/// lost. The timer is an io_uring timeout on the caller's event loop.
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
        case .timedOut:
            // The body may have finished as well: the loop can find its completion in the same
            // batch as the timer's, behind it. What it returned is not thrown away (a receive's
            // bytes would be lost with it), as asyncio's timeout returns what completed.
            group.cancelAll()
            if case .value(let value)? = try? await group.next() { return value }
            throw TimeoutError(timeout: timeout)
        }
    }
}

private enum TimeoutOutcome<T: Sendable>: Sendable {
    case value(T)
    case timedOut
}
