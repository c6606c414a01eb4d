import CMultiprocessing

/// A process-private lock for this library's own bookkeeping (registries, object state).
///
/// Built on the same futex mutex as ``Lock`` (private futex calls), not on `Synchronization.Mutex`,
/// whose use gives false ThreadSanitizer reports on Linux. After `fork` the child is single-threaded
/// and calls ``resetAfterFork()`` on the locks it will use, since a parent thread may have held one.
final class InternalLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<mp_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mp_mutex_init(mutex, 0)
    }

    deinit { mutex.deallocate() }

    @inline(__always)
    func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        _ = mp_mutex_lock(mutex, Int64(MP_FOREVER))
        defer { _ = mp_mutex_unlock(mutex) }
        return try body()
    }

    /// In a forked child only: forget a holder that did not come along.
    func resetAfterFork() { mp_mutex_init(mutex, 0) }
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

    func resetAfterFork() { lock.resetAfterFork() }
}
