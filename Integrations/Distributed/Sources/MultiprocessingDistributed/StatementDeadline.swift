/// Runs `operation` but returns (throwing ``DistributedError/timeout``) after `limit` even if it does
/// not: a statement caught by a server crash or a dead route can wait on its connection for TCP's
/// quarter of an hour, and a worker's loop must not wait with it. The abandoned operation is
/// cancelled and left to end on its own; the fence makes retrying what it did harmless. With
/// `abandoningOnCancel`, cancelling the caller abandons it in the same way (throwing
/// `CancellationError`): a waiter must end when cancelled, a host's statements run to their end.
func withStatementDeadline<T: Sendable>(
    _ limit: Duration, abandoningOnCancel: Bool = false, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let once = Locked<CheckedContinuation<T, any Error>?>(nil)
    let work = Locked<Task<Void, Never>?>(nil)
    let finish: @Sendable (Result<T, any Error>) -> Void = { result in
        once.withLock { slot -> CheckedContinuation<T, any Error>? in
            defer { slot = nil }
            return slot
        }?.resume(with: result)
    }
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            once.withLock { $0 = continuation }
            let timer = Task {
                try? await Task.sleep(for: limit)
                if Task.isCancelled { return }
                finish(.failure(DistributedError.timeout))
                work.withLock { $0 }?.cancel()
            }
            let task = Task {
                do {
                    finish(.success(try await operation()))
                } catch {
                    finish(.failure(error))
                }
                timer.cancel()
            }
            work.withLock { $0 = task }
            // Cancelled before the handler could see a continuation to resume.
            if abandoningOnCancel && Task.isCancelled {
                finish(.failure(CancellationError()))
                task.cancel()
            }
        }
    } onCancel: {
        guard abandoningOnCancel else { return }
        finish(.failure(CancellationError()))
        work.withLock { $0 }?.cancel()
    }
}

/// Sleeps for `duration` even when the caller is cancelled: for the retry pauses of loops that
/// must finish their work by a deadline (storing outcomes, releasing tasks) after a cancellation,
/// where `Task.sleep` would return at once and make them spin.
func pauseIgnoringCancellation(for duration: Duration) async {
    await Task.detached { try? await Task.sleep(for: duration) }.value
}
