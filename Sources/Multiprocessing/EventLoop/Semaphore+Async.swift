import CMultiprocessing

extension Semaphore {
    /// Suspends until a permit is taken, without holding a thread (see `Lock.acquire()`).
    /// - Throws: `CancellationError`, ``EventLoopError``.
    nonisolated(nonsending) public func acquire() async throws {
        _ = try await acquire(until: .max)
    }

    /// Suspends up to `timeout` for a permit; returns whether one was taken.
    nonisolated(nonsending) public func acquire(timeout: Duration) async throws -> Bool {
        try await acquire(until: Deadline.after(timeout, SyncError.self))
    }

    nonisolated(nonsending) func acquire(until deadline: Int64) async throws -> Bool {
        var w = mp_async_wait_t()
        var loop: EventLoop? = nil
        while true {
            if mp_semaphore_acquire_async(semaphore, &w) == MP_OK { return true }
            if mp_monotonic_ns() >= deadline {
                mp_semaphore_async_leave(semaphore, &w, 0)
                return false
            }
            if loop == nil { loop = try EventLoop.forCurrentContext() }
            if let error = await loop!.waitOnWord(w, until: deadline).error {
                mp_semaphore_async_leave(semaphore, &w, 0)
                throw error
            }
        }
    }
}
