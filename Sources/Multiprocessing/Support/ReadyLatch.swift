import CMultiprocessing

/// A lock and a one-time "ready" flag that threads wait for, in one allocation: what a result
/// handle (``AsyncResult``, one per task) needs to guard its state and let waiters sleep.
///
/// The words live in this object's own storage (a `ManagedBuffer`: the event as its header, the
/// mutex as its one element), so their addresses stay put for the futex calls. Both are private:
/// never shared with another process. Not `Sendable` only because `ManagedBuffer` is not: its
/// owner (a `Sendable` handle) shares it between threads, which is what it is for.
final class ReadyLatch: ManagedBuffer<mp_event_t, mp_mutex_t> {
    /// A latch not yet ready, its lock free.
    static func make() -> ReadyLatch {
        let latch = unsafeDowncast(create(minimumCapacity: 1) { _ in mp_event_t() }, to: ReadyLatch.self)
        latch.withUnsafeMutablePointers { event, mutex in
            mutex.initialize(to: mp_mutex_t())
            mp_mutex_init(mutex, 0)
            mp_event_init(event, 0)
        }
        return latch
    }

    @inline(__always)
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        try withUnsafeMutablePointerToElements { mutex in
            _ = mp_mutex_lock(mutex, Int64(MP_FOREVER))
            defer { _ = mp_mutex_unlock(mutex) }
            return try body()
        }
    }

    var isReady: Bool { withUnsafeMutablePointerToHeader { mp_event_is_set($0) != 0 } }

    /// Marks it ready (for good) and wakes every waiter.
    func markReady() { withUnsafeMutablePointerToHeader { mp_event_set($0) } }

    /// Waits until it is ready or `deadline` (monotonic ns, `.max` for none) passes; true if ready.
    func wait(deadline: Int64) -> Bool {
        withUnsafeMutablePointerToHeader { mp_event_wait($0, deadline) == MP_OK }
    }
}
