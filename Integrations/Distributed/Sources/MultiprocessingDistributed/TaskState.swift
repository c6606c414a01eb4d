/// Where a task is in its life, as its row's `state` column says.
public enum TaskState: String, Sendable, Codable, CaseIterable {
    /// Waiting to be claimed (perhaps not before its `run_after`: a delay or a retry's back-off).
    case queued
    /// Claimed by a worker host, which holds a lease on it.
    case running
    /// Finished; its result is stored.
    case succeeded
    /// Finished without a result: it failed on its last attempt, or could never run.
    case failed

    /// Whether the task will not change any more.
    public var isFinished: Bool { self == .succeeded || self == .failed }
}

/// A task's row, as a waiter or an operator sees it.
public struct TaskStatus: Sendable {
    /// The task's id (its handle).
    public var id: Int64
    /// Its state.
    public var state: TaskState
    /// How many times a worker host claimed it.
    public var attempts: Int
    /// The most it may be claimed.
    public var maxAttempts: Int
    /// The worker host holding it now (while running), or that finished it.
    public var owner: String?
    /// The last failure, as `type: message`.
    public var error: String?
    /// The encoded result, once succeeded.
    var result: [UInt8]?
    /// The format of `result`.
    var payloadVersion: Int
}

/// A task as a worker host claimed it.
struct ClaimedTask: Sendable {
    var id: Int64
    var worker: String
    var payloadVersion: Int
    var input: [UInt8]
    /// Which attempt this is (the row's `attempts` after the claim): completion is fenced on it.
    var attempt: Int
}

/// How a task run ended on a worker host.
enum TaskOutcome: Sendable {
    case succeeded(result: [UInt8])
    /// `retryable` false: fail at once, whatever the attempts left (the input cannot be decoded).
    case failed(error: String, retryable: Bool)
}
