import CMultiprocessing

/// A process-private event: a flag that threads of this process set, clear and wait for (``Event``
/// is the one shared between processes). Its `mp_event_t` uses private futex calls and lives in
/// memory this object owns.
final class LocalEvent: @unchecked Sendable {
    private let event: UnsafeMutablePointer<mp_event_t>

    init(isSet: Bool = false) {
        event = .allocate(capacity: 1)
        mp_event_init(event, 0)
        if isSet { mp_event_set(event) }
    }

    deinit { event.deallocate() }

    var isSet: Bool { mp_event_is_set(event) != 0 }

    /// Sets the flag and wakes every waiter.
    func set() { mp_event_set(event) }

    func clear() { mp_event_clear(event) }

    /// Waits until the flag is set.
    func wait() { _ = mp_event_wait(event, Int64(MP_FOREVER)) }

    /// Waits until the flag is set or `deadline` (monotonic ns, `.max` for none) passes. True if it
    /// was set, even if cleared again before this thread woke.
    func wait(deadline: Int64) -> Bool {
        mp_event_wait(event, deadline) == MP_OK
    }
}
