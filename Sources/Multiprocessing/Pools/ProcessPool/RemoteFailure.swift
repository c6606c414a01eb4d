/// The error a work function threw, as it crosses from a worker process to the parent.
struct RemoteFailure: Codable, Sendable {
    var type: String
    var message: String
}

extension RemoteFailure {
    init(_ error: any Error) {
        if let pool = error as? PoolError, case .taskFailed(let type, let message) = pool {
            self.type = type
            self.message = message
        } else {
            type = String(reflecting: Swift.type(of: error))
            message = String(describing: error)
        }
    }

    /// Whether the failure is the data's (coding), not the work function's.
    var poolError: PoolError {
        type == RemoteFailure.codingType ? .coding(message) : .taskFailed(type: type, message: message)
    }

    static let codingType = "Multiprocessing.PoolError.coding"

    static func coding(_ error: any Error) -> RemoteFailure {
        var failure = RemoteFailure(error)
        failure.type = codingType
        return failure
    }
}

extension PoolError {
    /// A task's error as a pool error (a process pool's tasks only ever fail with pool errors).
    init(_ error: any Error) {
        self = (error as? PoolError) ?? .taskFailed(type: String(reflecting: type(of: error)), message: "\(error)")
    }
}
