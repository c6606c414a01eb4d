import CMultiprocessing

/// A mutual-exclusion lock that works between threads and between processes (Python's
/// `threading.Lock` and `multiprocessing.Lock` in one).
///
/// The lock lives in a process-shared arena, so a forked child that inherits it, or a spawned child
/// that receives it as an argument (it is `Codable`), locks the very same lock. Uncontended
/// acquire and release make no system call.
///
/// As in Python, any thread may release a held `Lock`; releasing a free one throws
/// ``SyncError/notHeld``. A `Lock` is held by a process: if the holder's process dies, the next
/// acquirer gets the lock within about 20 ms and is told by ``SyncError/ownerDied(owner:)`` (with the
/// dead process's id), thrown with the lock held.
///
/// ```swift
/// let lock = Lock()
/// try lock.withLock { counter.pointee += 1 }
/// if try lock.acquire(timeout: .seconds(5)) { defer { try? lock.release() }; ... }
/// ```
public final class Lock: @unchecked Sendable, Codable {
    let object: SharedObject
    let mutex: UnsafeMutablePointer<mp_mutex_t>

    /// A new, unlocked lock in shared memory.
    public init() {
        object = SharedObject(kind: .lock)
        mutex = object.pointer(to: mp_mutex_t.self)
        mp_mutex_init(mutex, MP_MUTEX_SHARED | MP_MUTEX_PROCESS_OWNED)
    }

    /// Blocks until the lock is acquired.
    /// - Throws: ``SyncError/ownerDied(owner:)`` when the previous holder died; the lock is held.
    public func acquire() throws(SyncError) {
        _ = try acquired(mp_mutex_lock(mutex, Int64(MP_FOREVER)), mutex)
    }

    /// Waits up to `timeout` for the lock; returns whether it was acquired.
    public func acquire(timeout: Duration) throws(SyncError) -> Bool {
        try acquired(mp_mutex_lock(mutex, Deadline.after(timeout, SyncError.self)), mutex)
    }

    /// Acquires the lock if it is free; never blocks. A lock whose holder has died is taken over:
    /// ``SyncError/ownerDied(owner:)`` is thrown with the lock held, as by ``acquire()-1vtaf``.
    public func tryAcquire() throws(SyncError) -> Bool {
        try acquired(mp_mutex_lock(mutex, Int64(MP_NOW)), mutex)
    }

    /// Releases the lock. Throws ``SyncError/notHeld`` if it is not locked.
    public func release() throws(SyncError) {
        try released(mp_mutex_unlock(mutex))
    }

    /// Whether some thread or process holds the lock (Python's `locked()`), a snapshot.
    public var isLocked: Bool { mp_mutex_owner(mutex) != 0 }

    /// Runs `body` holding the lock.
    ///
    /// A previous holder that died holding the lock may have left what it protects half-updated.
    /// With `recover`, this caller keeps the lock and is told: `recover(deadOwner)` runs first,
    /// under the lock, to put the state right, and then `body` (Rust's poisoned mutex hands its
    /// guard along the same way). Without it, ``SyncError/ownerDied(owner:)`` is thrown, `body`
    /// does not run, and the lock is released for the next caller.
    public func withLock<R>(
        recoveringFrom recover: ((_ deadOwner: Int32) throws -> Void)? = nil, _ body: () throws -> R
    )
        throws -> R
    {
        do {
            try acquire()
        } catch {
            guard case .ownerDied(let owner) = error, let recover else {
                try? release()
                throw error
            }
            defer { _ = mp_mutex_unlock(mutex) }
            try recover(owner)
            return try body()
        }
        defer { _ = mp_mutex_unlock(mutex) }
        return try body()
    }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }

    /// Resolves a lock handed over by another process (through a spawned child's arguments).
    public init(from decoder: any Decoder) throws {
        object = try SharedObject.decode(.lock, from: decoder)
        mutex = object.pointer(to: mp_mutex_t.self)
    }
}

/// A reentrant lock: the owning thread may acquire it again, and must release it as many times
/// (Python's `RLock`). Works between threads and processes like ``Lock``; only the owning thread may
/// release it, and if that thread dies holding it (with its process, or alone), the next acquirer
/// is told by ``SyncError/ownerDied(owner:)`` with the dead thread's id.
public final class RLock: @unchecked Sendable, Codable {
    let object: SharedObject
    let mutex: UnsafeMutablePointer<mp_mutex_t>

    /// A new, unlocked reentrant lock in shared memory.
    public init() {
        object = SharedObject(kind: .rlock)
        mutex = object.pointer(to: mp_mutex_t.self)
        mp_mutex_init(mutex, MP_MUTEX_SHARED)
    }

    /// Blocks until acquired (at once if the caller already owns it).
    /// - Throws: ``SyncError/ownerDied(owner:)`` when the previous owner died; the lock is held.
    public func acquire() throws(SyncError) {
        _ = try acquired(mp_rmutex_lock(mutex, Int64(MP_FOREVER)), mutex)
    }

    /// Waits up to `timeout`; returns whether the lock was acquired.
    public func acquire(timeout: Duration) throws(SyncError) -> Bool {
        try acquired(mp_rmutex_lock(mutex, Deadline.after(timeout, SyncError.self)), mutex)
    }

    /// Acquires if free or already owned; never blocks. Takes over from a dead owner like
    /// ``Lock/tryAcquire()``.
    public func tryAcquire() throws(SyncError) -> Bool {
        try acquired(mp_rmutex_lock(mutex, Int64(MP_NOW)), mutex)
    }

    /// Releases one level. Throws ``SyncError/notHeld`` unless the calling thread owns the lock.
    public func release() throws(SyncError) {
        try released(mp_rmutex_unlock(mutex))
    }

    /// Whether the calling thread owns the lock.
    public var isOwnedByCurrentThread: Bool { mp_mutex_owner(mutex) == mp_thread_id() }

    /// How many times the calling thread holds the lock: each ``acquire()`` adds one, each
    /// ``release()`` takes one away; 0 when another thread (or process) owns it, or nobody does
    /// (Python's `RLock._recursion_count()`).
    public var recursionCount: Int { Int(mp_rmutex_depth(mutex)) }

    /// Runs `body` holding the lock; `recover` as in ``Lock/withLock(recoveringFrom:_:)`` (`deadOwner`
    /// is the dead owner's thread id).
    public func withLock<R>(
        recoveringFrom recover: ((_ deadOwner: Int32) throws -> Void)? = nil, _ body: () throws -> R
    )
        throws -> R
    {
        do {
            try acquire()
        } catch {
            guard case .ownerDied(let owner) = error, let recover else {
                try? release()
                throw error
            }
            defer { _ = mp_rmutex_unlock(mutex) }
            try recover(owner)
            return try body()
        }
        defer { _ = mp_rmutex_unlock(mutex) }
        return try body()
    }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }

    public init(from decoder: any Decoder) throws {
        object = try SharedObject.decode(.rlock, from: decoder)
        mutex = object.pointer(to: mp_mutex_t.self)
    }
}
