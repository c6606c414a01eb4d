import CMultiprocessing

extension Lock {
    /// Suspends until the lock is acquired, without holding a thread: the coroutine waits on the
    /// lock's futex word through the event loop, so a release by any thread or process wakes it.
    /// In async code this overload is chosen over the blocking `acquire()`.
    ///
    /// The lock is held by the process (as with the blocking form), so the coroutine may release
    /// it from any thread after it resumes.
    /// - Throws: ``SyncError/ownerDied(owner:)`` (the lock is held), `CancellationError`.
    public func acquire() async throws {
        _ = try await acquire(until: .max)
    }

    /// Suspends up to `timeout` for the lock; returns whether it was acquired.
    public func acquire(timeout: Duration) async throws -> Bool {
        try await acquire(until: absoluteDeadline(timeout))
    }

    func acquire(until deadline: Int64, cancellable: Bool = true) async throws -> Bool {
        var w = mp_async_wait_t()
        var loop: EventLoop? = nil
        while true {
            switch mp_mutex_lock_async(mutex, &w) {
            case MP_OK: return true
            case MP_OWNER_DIED: throw SyncError.ownerDied(owner: Int32(bitPattern: mutex.pointee.dead_owner))
            default: break
            }
            if mp_monotonic_ns() >= deadline { return false }
            if loop == nil { loop = try EventLoop.forCurrentContext() }
            if let error = await loop!.waitOnWord(w, until: deadline, cancellable: cancellable).error { throw error }
        }
    }
}

extension Semaphore {
    /// Suspends until a permit is taken, without holding a thread (see `Lock.acquire()`).
    /// - Throws: `CancellationError`, ``EventLoopError``.
    public func acquire() async throws {
        _ = try await acquire(until: .max)
    }

    /// Suspends up to `timeout` for a permit; returns whether one was taken.
    public func acquire(timeout: Duration) async throws -> Bool {
        try await acquire(until: absoluteDeadline(timeout))
    }

    func acquire(until deadline: Int64) async throws -> Bool {
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

extension Event {
    /// Suspends until the flag is set, without holding a thread: a `set()` from any thread or
    /// process wakes every waiting coroutine. In async code this overload is chosen over the
    /// blocking ``wait()``.
    /// - Throws: `CancellationError`, ``EventLoopError``.
    public func wait() async throws {
        _ = try await wait(until: .max)
    }

    /// Suspends up to `timeout`; returns true if the event was set (even if cleared again since).
    public func wait(timeout: Duration) async throws -> Bool {
        try await wait(until: absoluteDeadline(timeout))
    }

    func wait(until deadline: Int64) async throws -> Bool {
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
