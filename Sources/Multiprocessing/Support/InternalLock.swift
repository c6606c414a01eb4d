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
}

/// A value guarded by an ``InternalLock``.
final class Locked<Value>: @unchecked Sendable {
    private let lock = InternalLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    @inline(__always)
    func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try lock.withLock { () throws(E) -> R in try body(&value) }
    }
}
