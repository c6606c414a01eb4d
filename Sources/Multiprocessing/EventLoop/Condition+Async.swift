import CMultiprocessing

extension Condition {
    /// Releases the lock, suspends until notified (or `timeout` passes), re-acquires the lock;
    /// returns false if the timeout expired. No thread is held while waiting: a `notify` from any
    /// thread or process wakes the coroutine. As in Python, the lock is re-acquired even when the
    /// task is cancelled, before `CancellationError` is thrown.
    ///
    /// Only a condition over a ``Lock`` can be awaited (an ``RLock`` belongs to a thread).
    /// - Throws: ``SyncError/notHeld``, ``SyncError/ownerDied(owner:)`` (the lock is held; thrown
    ///   rather than `CancellationError` when both happen), ``EventLoopError/notAwaitable(_:)``,
    ///   `CancellationError`.
    @discardableResult
    public func wait(timeout: Duration? = nil) async throws -> Bool {
        let lock = try awaitableLock()
        let deadline = try Deadline.after(timeout, SyncError.self)
        let loop = try EventLoop.forCurrentContext()
        var w = mp_async_wait_t()
        if mp_condition_wait_async_begin(condition, lock.mutex, &w) == MP_NOT_HELD { throw SyncError.notHeld }
        var deadOwner: Int32? = nil
        while true {
            var timedOut = false
            var failure: (any Error)? = nil
            while failure == nil && mp_condition_async_notified(condition, &w) == 0 {
                if mp_monotonic_ns() >= deadline {
                    timedOut = true
                    break
                }
                failure = await loop.waitOnWord(w, until: deadline).error
            }
            if let owner = try await reacquire(lock) { deadOwner = owner }
            if let failure {
                mp_condition_async_leave(condition, &w)
                // The lock is held either way; a dead previous holder is the news the caller must
                // not miss (its data may need repair): it wins over the cancellation.
                if let deadOwner { throw SyncError.ownerDied(owner: deadOwner) }
                throw failure
            }
            let status = mp_condition_wait_async_end(condition, lock.mutex, &w, timedOut ? 1 : 0)
            if status == MP_WAIT { continue }  // a wake-up meant for another waiter: the lock is released again
            if let deadOwner { throw SyncError.ownerDied(owner: deadOwner) }
            return status == MP_OK
        }
    }

    /// Suspends until `predicate` holds (checked with the lock held), or `timeout` passes; returns
    /// the predicate's last value.
    @discardableResult
    public func wait(for predicate: () throws -> Bool, timeout: Duration? = nil) async throws -> Bool {
        let deadline = try Deadline.after(timeout, SyncError.self)
        var result = try predicate()
        while !result {
            var remaining: Duration? = nil
            if deadline != .max {
                let left = deadline - mp_monotonic_ns()
                if left <= 0 { break }
                remaining = .nanoseconds(left)
            }
            try await wait(timeout: remaining)
            result = try predicate()
        }
        return result
    }

    /// Suspends until the underlying ``Lock`` is acquired (see `Lock.acquire()`).
    public func acquire() async throws {
        try await awaitableLock().acquire()
    }

    private func awaitableLock() throws(EventLoopError) -> Lock {
        guard case .lock(let lock) = lock else {
            throw .notAwaitable("a Condition over an RLock (the RLock belongs to a thread)")
        }
        return lock
    }

    /// Takes the lock back whatever happened to the task: uncancellable, and on a helper thread if
    /// the loop is shutting down. Returns the dead owner's id if the previous holder died.
    private func reacquire(_ lock: Lock) async throws -> Int32? {
        do {
            _ = try await lock.acquire(until: .max, cancellable: false)
        } catch SyncError.ownerDied(let owner) {
            return owner
        } catch {
            let status = try await BlockingPool.shared.run { mp_mutex_lock(lock.mutex, Int64(MP_FOREVER)) }
            if status == MP_OWNER_DIED { return Int32(bitPattern: lock.mutex.pointee.dead_owner) }
        }
        return nil
    }
}
