import CMultiprocessing

/// A condition variable between threads and processes (Python's `Condition`), over a ``Lock`` or,
/// by default, an ``RLock``.
///
/// Hold the lock to `wait`, `notify` or `notifyAll` (else ``SyncError/notHeld``). `wait` releases
/// the lock, sleeps until notified or timed out, and re-acquires it; wake-ups may be spurious, so
/// loop on a predicate, or use ``wait(for:timeout:)-17osm``.
public final class Condition: @unchecked Sendable, Codable {
    /// The lock a condition waits with.
    public enum Guard: Sendable {
        case lock(Lock)
        case rlock(RLock)
    }

    /// The lock this condition releases while waiting.
    public let lock: Guard
    let object: SharedObject
    let condition: UnsafeMutablePointer<mp_condition_t>

    /// A condition over a new ``RLock``.
    public convenience init() { self.init(lock: RLock()) }

    /// A condition over `lock`.
    public init(lock: RLock) {
        self.lock = .rlock(lock)
        (object, condition) = Condition.make()
    }

    /// A condition over `lock`.
    public init(lock: Lock) {
        self.lock = .lock(lock)
        (object, condition) = Condition.make()
    }

    private static func make() -> (SharedObject, UnsafeMutablePointer<mp_condition_t>) {
        let object = SharedObject(kind: .condition)
        let condition = object.pointer(to: mp_condition_t.self)
        mp_condition_init(condition, 1)
        return (object, condition)
    }

    private var mutex: UnsafeMutablePointer<mp_mutex_t> {
        switch lock {
        case .lock(let l): l.mutex
        case .rlock(let r): r.mutex
        }
    }

    private var recursive: Int32 {
        if case .rlock = lock { return 1 }
        return 0
    }

    /// Acquires the underlying lock.
    public func acquire() throws(SyncError) {
        switch lock {
        case .lock(let l): try l.acquire()
        case .rlock(let r): try r.acquire()
        }
    }

    /// Waits up to `timeout` for the underlying lock.
    public func acquire(timeout: Duration) throws(SyncError) -> Bool {
        switch lock {
        case .lock(let l): try l.acquire(timeout: timeout)
        case .rlock(let r): try r.acquire(timeout: timeout)
        }
    }

    /// Releases the underlying lock.
    public func release() throws(SyncError) {
        switch lock {
        case .lock(let l): try l.release()
        case .rlock(let r): try r.release()
        }
    }

    /// Runs `body` holding the underlying lock, as `Lock.withLock(_:)`.
    public func withLock<R>(_ body: () throws(SyncError) -> R) throws(SyncError) -> R {
        try mutex.withHeld(
            recursive: recursive != 0, afterOwnerDeath: { owner throws(SyncError) in throw .ownerDied(owner: owner) },
            body)
    }

    /// Runs `body` holding the underlying lock. Throws what `body` throws, or
    /// ``SyncError/ownerDied(owner:)`` without running it.
    public func withLock<R>(_ body: () throws -> R) throws -> R {
        try mutex.withHeld(
            recursive: recursive != 0, afterOwnerDeath: { owner in throw SyncError.ownerDied(owner: owner) }, body)
    }

    /// Runs `body` holding the underlying lock, after `recover(deadOwner)` if its previous holder
    /// died holding it, as ``Lock/withLock(recoveringFrom:_:)``.
    public func withLock<R, E: Error>(
        recoveringFrom recover: (_ deadOwner: Int32) throws(E) -> Void, _ body: () throws(E) -> R
    ) throws(E) -> R {
        try mutex.withHeld(recursive: recursive != 0, afterOwnerDeath: recover, body)
    }

    /// Releases the lock, waits until notified (or `timeout` passes), re-acquires the lock.
    /// Returns false if the timeout expired.
    @discardableResult
    public func wait(timeout: Duration? = nil) throws(SyncError) -> Bool {
        let deadline = try Deadline.after(timeout, SyncError.self)
        return try acquired(mp_condition_wait(condition, mutex, recursive, deadline), mutex)
    }

    /// Waits until `predicate` holds (checked with the lock held), or `timeout` passes.
    /// Returns the predicate's last value.
    @discardableResult
    public func wait(for predicate: () throws -> Bool, timeout: Duration? = nil) throws -> Bool {
        // One deadline for every wait (saturating: a huge timeout is never, not a wrapped past).
        let deadline = try Deadline.after(timeout, SyncError.self)
        var result = try predicate()
        while !result {
            if deadline != .max && deadline <= mp_monotonic_ns() { break }
            _ = try acquired(mp_condition_wait(condition, mutex, recursive, deadline), mutex)
            result = try predicate()
        }
        return result
    }

    /// Wakes up to `n` of the callers waiting now, as Python's does: a `wait` that begins after this
    /// call cannot take its wake-up. Waiters are served in groups (those waiting at a notify that
    /// found the previous group served), older groups first; within a group, in no set order. A
    /// waiter that dies while waiting stays counted until a notify reaches it (it may absorb one, as
    /// with Python's `multiprocessing.Condition`); one that dies after being woken passes its
    /// wake-up on to another waiter within 20 ms.
    public func notify(_ n: Int = 1) throws(SyncError) {
        try checkHeld()
        guard n > 0 else { return }
        mp_condition_notify(condition, UInt32(clamping: n))
    }

    /// Wakes every waiter.
    public func notifyAll() throws(SyncError) {
        try checkHeld()
        mp_condition_notify(condition, UInt32.max)
    }

    private func checkHeld() throws(SyncError) {
        let held: Bool
        switch lock {
        case .lock(let l): held = l.isLocked
        case .rlock(let r): held = r.isOwnedByCurrentThread
        }
        if !held { throw .notHeld }
    }

    private enum CodingKeys: String, CodingKey { case condition, lock, rlock }
    /// The metadata decoding one makes, made ahead in the forkserver (``Fork/prepareServer(for:)``).
    static let decodingMetadata: [Any.Type] = [KeyedDecodingContainer<CodingKeys>.self]

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(object.encodedHandle, forKey: .condition)
        switch lock {
        case .lock(let l): try container.encode(l, forKey: .lock)
        case .rlock(let r): try container.encode(r, forKey: .rlock)
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let handle = try container.decode(SharedHandle.self, forKey: .condition)
        object = try SharedObject(handle: handle, expecting: .condition)
        condition = object.pointer(to: mp_condition_t.self)
        if let l = try container.decodeIfPresent(Lock.self, forKey: .lock) {
            lock = .lock(l)
        } else {
            lock = .rlock(try container.decode(RLock.self, forKey: .rlock))
        }
    }
}
