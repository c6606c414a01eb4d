import CMultiprocessing

extension Lock {
    /// Suspends until the lock is acquired, without holding a thread: the coroutine waits on the
    /// lock's futex word through the event loop, so a release by any thread or process wakes it.
    /// In async code this overload is chosen over the blocking `acquire()`.
    ///
    /// The lock is held by the process (as with the blocking form), so the coroutine may release
    /// it from any thread after it resumes.
    /// - Throws: ``SyncError/ownerDied(owner:)`` (the lock is held), `CancellationError`.
    nonisolated(nonsending) public func acquire() async throws {
        _ = try await acquire(until: .max)
    }

    /// Suspends up to `timeout` for the lock; returns whether it was acquired.
    nonisolated(nonsending) public func acquire(timeout: Duration) async throws -> Bool {
        try await acquire(until: Deadline.after(timeout, SyncError.self))
    }

    nonisolated(nonsending) func acquire(until deadline: Int64, cancellable: Bool = true) async throws -> Bool {
        var w = mp_async_wait_t()
        var loop: EventLoop? = nil
        while true {
            switch mp_mutex_lock_async(mutex, &w) {
            case MP_OK: return true
            case MP_OWNER_DIED: throw SyncError.ownerDied(owner: Int32(bitPattern: mutex.pointee.dead_owner))
            default: break
            }
            if mp_monotonic_ns() >= deadline { return try lastTry() }
            if loop == nil { loop = try EventLoop.forCurrentContext() }
            if let error = await loop!.waitOnWord(w, until: deadline, cancellable: cancellable).error { throw error }
        }
    }

    /// A try before a timed-out acquire gives up, which checks the holder's liveness: the first
    /// scheduled check is 20 ms away, so without it a timeout shorter than that would never take
    /// over a dead holder's lock (the blocking form checks once before giving up too).
    private func lastTry() throws(SyncError) -> Bool {
        switch mp_mutex_lock(mutex, Int64(MP_NOW)) {
        case MP_OK: return true
        case MP_OWNER_DIED: throw SyncError.ownerDied(owner: Int32(bitPattern: mutex.pointee.dead_owner))
        default: return false
        }
    }
}
