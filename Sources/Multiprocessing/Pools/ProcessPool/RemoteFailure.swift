/// The error a work function threw, as it crosses from a worker process to the parent: its type
/// and description always, and, when the error is `Codable`, the error itself (its type's mangled
/// name and its encoding), so that the parent can throw the very error (as Python re-raises the
/// worker's exception).
struct RemoteFailure: Codable, Sendable {
    var type: String
    var message: String
    /// The error's type, mangled (`_mangledTypeName`): worker and parent run the same program.
    var mangledType: String? = nil
    /// The error, binary-coded (its type's fingerprint first), when it is `Codable`.
    var encoded: [UInt8]? = nil
}

extension RemoteFailure {
    init(_ error: any Error) {
        if let pool = error as? PoolError, case .taskFailed(let type, let message) = pool {
            self.type = type
            self.message = message
            return
        }
        type = String(reflecting: Swift.type(of: error))
        message = String(describing: error)
        // The original error too, when it can travel: a type the parent can find by name and decode.
        if let codable = error as? any (Error & Codable), let name = _mangledTypeName(Swift.type(of: error)) {
            encoded = try? BinaryCoding.encode(codable)
            mangledType = encoded == nil ? nil : name
        }
    }

    /// What the task's caller gets: the original error when it came along and decodes here as its
    /// own type; otherwise a ``PoolError`` (the data's coding, or `taskFailed` with type and message).
    var error: any Error {
        if type == RemoteFailure.codingType { return PoolError.coding(message) }
        if let mangledType, let encoded, let original = RemoteFailure.decode(encoded, as: mangledType) {
            return original
        }
        return PoolError.taskFailed(type: type, message: message)
    }

    /// The error of the type named `mangled`, decoded from `bytes`; nil when this program has no
    /// such `Codable` error type or the bytes are not one (the fingerprint checks the type).
    private static func decode(_ bytes: [UInt8], as mangled: String) -> (any Error)? {
        guard let type = _typeByName(mangled) as? any (Error & Codable).Type else { return nil }
        func open<E: Error & Codable>(_: E.Type) -> (any Error)? {
            bytes.withUnsafeBytes { try? BinaryCoding.decode(E.self, from: $0) }
        }
        return open(type)
    }

    static let codingType = "Multiprocessing.PoolError.coding"

    static func coding(_ error: any Error) -> RemoteFailure {
        var failure = RemoteFailure(type: String(reflecting: Swift.type(of: error)), message: String(describing: error))
        if let pool = error as? PoolError, case .taskFailed(let type, let message) = pool {
            failure = RemoteFailure(type: type, message: message)
        }
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
