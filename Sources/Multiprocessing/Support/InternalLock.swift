import CMultiprocessing

/// A process-private lock for this library's own bookkeeping (registries, object state).
///
/// Built on the same futex mutex as ``Lock`` (private futex calls), not on `Synchronization.Mutex`,
/// whose use gives false ThreadSanitizer reports on Linux. It stays usable in a forked child: a
/// thread of the parent may have held it at the fork, and such a lock re-initialises itself on
/// first use there (see `mp_private_lock_t`). Never fork while holding one.
final class InternalLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<mp_private_lock_t>

    init() {
        lock = .allocate(capacity: 1)
        mp_private_lock_init(lock)
    }

    deinit { lock.deallocate() }

    @inline(__always)
    func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        mp_private_lock_lock(lock)
        defer { mp_private_lock_unlock(lock) }
        return try body()
    }

    /// Runs `body` holding the lock, if it can be taken by `deadline` (absolute monotonic
    /// nanoseconds; `MP_FOREVER`: no limit); nil if not.
    func withLock<R, E: Error>(until deadline: Int64, _ body: () throws(E) -> R) throws(E) -> R? {
        guard mp_private_lock_lock_until(lock, deadline) == MP_OK else { return nil }
        defer { mp_private_lock_unlock(lock) }
        return try body()
    }
}

/// A value guarded by the lock of ``InternalLock``, the two in one allocation (the value, then
/// the lock, in a `ManagedBuffer`): a value and an ``InternalLock`` of its own took three (the
/// holder, the lock's object and its word), about 700 instructions of malloc and free per
/// `Locked`, which a TCP connection, say, makes one of.
///
/// A reference to that allocation: copies of a `Locked` guard the same value.
struct Locked<Value>: @unchecked Sendable {
    private final class Storage: ManagedBuffer<Value, mp_private_lock_t> {}
    private let storage: Storage

    init(_ value: Value) {
        storage = unsafeDowncast(Storage.create(minimumCapacity: 1) { _ in value }, to: Storage.self)
        storage.withUnsafeMutablePointerToElements { mp_private_lock_init($0) }
    }

    @inline(__always)
    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try storage.withUnsafeMutablePointers { (value, lock) throws(E) -> R in
            mp_private_lock_lock(lock)
            defer { mp_private_lock_unlock(lock) }
            return try body(&value.pointee)
        }
    }
}
