import CMultiprocessing

/// A process-private counting semaphore, unbounded, starting at zero (``Semaphore`` is the one
/// shared between processes). A release wakes a sleeper only if one sleeps. Its `mp_semaphore_t`
/// uses private futex calls and lives in memory this object owns.
final class LocalSemaphore: @unchecked Sendable {
    private let semaphore: UnsafeMutablePointer<mp_semaphore_t>

    init() {
        semaphore = .allocate(capacity: 1)
        mp_semaphore_init(semaphore, 0, MP_SEMAPHORE_MAX, 0)
    }

    deinit { semaphore.deallocate() }

    /// Adds `count` permits.
    func release(_ count: Int = 1) {
        // Unbounded: only 2^31 permits never taken could overflow, and that would be a bug upstream.
        _ = mp_semaphore_release(semaphore, UInt32(count))
    }

    /// Takes a permit, waiting for one.
    func acquire() { _ = mp_semaphore_acquire(semaphore, Int64(MP_FOREVER)) }

    /// Takes a permit, waiting until `deadline` (monotonic ns, `.max` for none); false if none came.
    func acquire(deadline: Int64) -> Bool {
        mp_semaphore_acquire(semaphore, deadline) == MP_OK
    }
}
