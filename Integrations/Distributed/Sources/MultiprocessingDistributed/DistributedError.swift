import PostgresNIO

/// Errors of ``DurableQueue``, ``DurableResult`` and ``DurableWorker``: the package's one error type,
/// its cases named as the core's ``Multiprocessing/PoolError`` names the same meanings.
public enum DistributedError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `get(timeout:)` found the task not finished in time. The task goes on; ask again later.
    case timeout
    /// The queue or worker was shut down before the call could finish.
    case closed
    /// A timeout or delay below zero.
    case negativeTimeout(Duration)
    /// `maxAttempts` below one.
    case invalidMaxAttempts(Int)
    /// The database refused or could not be reached: what PostgreSQL or the client said.
    case database(String)
    /// A task's input or result could not be encoded or decoded.
    case coding(String)
    /// The task row carries a payload format this library version cannot read.
    case unsupportedPayloadVersion(Int)
    /// The schema in the database is newer than this library knows: upgrade the library.
    case schemaTooNew(found: Int, supported: Int)
    /// No task with this id exists (it was never committed, or its transaction rolled back).
    case unknownTask(Int64)
    /// The work function threw, on every attempt: the last error's type and description.
    case taskFailed(type: String, message: String, attempts: Int)
    /// No worker host registered the task's worker name, so it could never run.
    case unknownWorker(String)

    public var description: String {
        switch self {
        case .timeout: "timed out waiting for the result"
        case .closed: "the durable queue or worker is shut down"
        case .negativeTimeout(let d): "negative timeout or delay \(d)"
        case .invalidMaxAttempts(let n): "invalid maxAttempts \(n): at least 1"
        case .database(let message): "database: \(message)"
        case .coding(let message): "task data could not be encoded or decoded: \(message)"
        case .unsupportedPayloadVersion(let v): "unsupported payload format version \(v)"
        case .schemaTooNew(let found, let supported):
            "the database schema is version \(found); this library knows up to \(supported)"
        case .unknownTask(let id): "no task \(id)"
        case .taskFailed(let type, let message, let attempts):
            "the task failed after \(attempts) attempt(s): \(type): \(message)"
        case .unknownWorker(let name): "no worker host runs a worker named \(name)"
        }
    }
}

extension DistributedError {
    /// Any error of the database client, as this package's error (a `DistributedError` stays itself).
    static func wrap(_ error: any Error) -> DistributedError {
        if let own = error as? DistributedError { return own }
        // A transaction that rolled back because of our own error says so: that error is the answer.
        if let transaction = error as? PostgresTransactionError, let own = transaction.closureError as? DistributedError
        {
            return own
        }
        return .database(String(reflecting: error))
    }
}

/// Runs `body`, turning any error into a ``DistributedError``.
func translatingErrors<T>(_ body: () async throws -> T) async throws(DistributedError) -> T {
    do {
        return try await body()
    } catch {
        throw DistributedError.wrap(error)
    }
}
