/// Runs `operation` but returns (throwing ``DistributedError/timeout``) after `limit` even if it does
/// not: a statement caught by a server crash or a dead route can wait on its connection for TCP's
/// quarter of an hour, and a worker's loop must not wait with it. The abandoned operation is
/// cancelled and left to end on its own; the fence makes retrying what it did harmless.
func withStatementDeadline<T: Sendable>(
    _ limit: Duration, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let once = Locked<CheckedContinuation<T, any Error>?>(nil)
    let work = Locked<Task<Void, Never>?>(nil)
    return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
        once.withLock { $0 = continuation }
        let finish: @Sendable (Result<T, any Error>) -> Void = { result in
            once.withLock { slot -> CheckedContinuation<T, any Error>? in
                defer { slot = nil }
                return slot
            }?.resume(with: result)
        }
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
    }
}
