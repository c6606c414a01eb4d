import CMultiprocessing

extension Event {
    /// Suspends until the flag is set, without holding a thread: a `set()` from any thread or
    /// process wakes every waiting coroutine. In async code this overload is chosen over the
    /// blocking ``wait()``.
    /// - Throws: `CancellationError`, ``EventLoopError``.
    nonisolated(nonsending) public func wait() async throws {
        _ = try await wait(until: .max)
    }

    /// Suspends up to `timeout`; returns true if the event was set (even if cleared again since).
    nonisolated(nonsending) public func wait(timeout: Duration) async throws -> Bool {
        try await wait(until: Deadline.after(timeout, SyncError.self))
    }

    nonisolated(nonsending) func wait(until deadline: Int64) async throws -> Bool {
        if mp_event_is_set(event) != 0 { return true }
        var w = mp_async_wait_t()
        let loop = try EventLoop.forCurrentContext()
        while true {
            if mp_event_wait_async(event, &w) == MP_OK { return true }
            if mp_monotonic_ns() >= deadline {
                mp_event_async_leave(event, &w)
                return false
            }
            if let error = await loop.waitOnWord(w, until: deadline).error {
                mp_event_async_leave(event, &w)
                throw error
            }
        }
    }
}
