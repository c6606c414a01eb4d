/// When a failed task runs again: exponential back-off from `initialDelay`, doubling per attempt,
/// capped at `maxDelay`. The number of attempts is the task's own `maxAttempts`.
public struct RetryPolicy: Sendable, Equatable {
    /// The wait before the second attempt.
    public var initialDelay: Duration
    /// The longest wait between two attempts.
    public var maxDelay: Duration

    /// A policy waiting `initialDelay`, then twice as long each time, never more than `maxDelay`.
    public init(initialDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(60)) {
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// The wait after attempt `attempt` (1 for the first) failed.
    public func delay(afterAttempt attempt: Int) -> Duration {
        var delay = initialDelay
        for _ in 1..<max(attempt, 1) {
            delay *= 2
            if delay >= maxDelay { return maxDelay }
        }
        return min(delay, maxDelay)
    }
}
