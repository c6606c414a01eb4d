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
/// if try lock.acquire(timeout: .seconds(5)) { defer { try? lock.release() }; counter.pointee += 1 }
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

    /// Runs `body` holding the lock, and releases it however `body` ends.
    ///
    /// If the previous holder died holding the lock, ``SyncError/ownerDied(owner:)`` is thrown,
    /// `body` does not run, and the lock is released for the next caller. To repair what the dead
    /// holder left half-updated, use ``withLock(recoveringFrom:_:)``.
    ///
    /// This form is chosen for a body that throws nothing, or one annotated
    /// `() throws(SyncError) in`: its one error type is ``SyncError``. (Swift infers `any Error`
    /// for an unannotated closure that contains `try`, which takes the untyped form below.)
    public func withLock<R>(_ body: () throws(SyncError) -> R) throws(SyncError) -> R {
        try mutex.withHeld(
            recursive: false, afterOwnerDeath: { owner throws(SyncError) in throw .ownerDied(owner: owner) }, body)
    }

    /// Runs `body` holding the lock, and releases it however `body` ends. Throws what `body` throws,
    /// or ``SyncError/ownerDied(owner:)`` without running it (as the typed form above).
    public func withLock<R>(_ body: () throws -> R) throws -> R {
        try mutex.withHeld(
            recursive: false, afterOwnerDeath: { owner in throw SyncError.ownerDied(owner: owner) }, body)
    }

    /// Runs `body` holding the lock; if the previous holder died holding it, runs
    /// `recover(deadOwner)` first, under the lock, to put right what it left half-updated (Rust's
    /// poisoned mutex hands its guard along the same way). Throws only what `recover` or `body`
    /// throws: with a recovery, acquiring cannot fail.
    public func withLock<R, E: Error>(
        recoveringFrom recover: (_ deadOwner: Int32) throws(E) -> Void, _ body: () throws(E) -> R
    ) throws(E) -> R {
        try mutex.withHeld(recursive: false, afterOwnerDeath: recover, body)
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

    /// Runs `body` holding the lock (once more, if the caller already owns it), and releases that
    /// level however `body` ends; a dead owner as in `Lock.withLock(_:)`.
    public func withLock<R>(_ body: () throws(SyncError) -> R) throws(SyncError) -> R {
        try mutex.withHeld(
            recursive: true, afterOwnerDeath: { owner throws(SyncError) in throw .ownerDied(owner: owner) }, body)
    }

    /// Runs `body` holding the lock. Throws what `body` throws, or ``SyncError/ownerDied(owner:)``
    /// without running it.
    public func withLock<R>(_ body: () throws -> R) throws -> R {
        try mutex.withHeld(recursive: true, afterOwnerDeath: { owner in throw SyncError.ownerDied(owner: owner) }, body)
    }

    /// Runs `body` holding the lock, after `recover(deadOwner)` if the previous owner died holding
    /// it, as ``Lock/withLock(recoveringFrom:_:)`` (`deadOwner` is the dead owner's thread id).
    public func withLock<R, E: Error>(
        recoveringFrom recover: (_ deadOwner: Int32) throws(E) -> Void, _ body: () throws(E) -> R
    ) throws(E) -> R {
        try mutex.withHeld(recursive: true, afterOwnerDeath: recover, body)
    }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }

    public init(from decoder: any Decoder) throws {
        object = try SharedObject.decode(.rlock, from: decoder)
        mutex = object.pointer(to: mp_mutex_t.self)
    }
}

extension UnsafeMutablePointer<mp_mutex_t> {
    /// The one `withLock` of ``Lock`` and ``RLock``: takes the mutex (waiting forever), runs
    /// `afterOwnerDeath` when the holder before died with it (which throws, or repairs), then
    /// `body`, and releases the mutex on every way out. A forever wait ends only in the lock or in
    /// an owner's death: every other status is this library's bug.
    @inline(__always)
    func withHeld<R, E: Error>(
        recursive: Bool, afterOwnerDeath: (_ deadOwner: Int32) throws(E) -> Void, _ body: () throws(E) -> R
    ) throws(E) -> R {
        let status = recursive ? mp_rmutex_lock(self, Int64(MP_FOREVER)) : mp_mutex_lock(self, Int64(MP_FOREVER))
        switch status {
        case MP_OK, MP_OWNER_DIED: break
        default: unexpected(status)
        }
        defer { _ = recursive ? mp_rmutex_unlock(self) : mp_mutex_unlock(self) }
        if status == MP_OWNER_DIED { try afterOwnerDeath(Int32(bitPattern: pointee.dead_owner)) }
        return try body()
    }
}
