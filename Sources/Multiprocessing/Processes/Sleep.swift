import CMultiprocessing

/// Blocks the calling thread for `duration` on the monotonic clock (Python's `time.sleep`).
/// Throws ``SyncError/negativeTimeout(_:)`` for a negative duration.
///
/// The thread's timer slack is 1 ns while it sleeps (`PR_SET_TIMERSLACK`; a thread the library did
/// not start gets its own value back), so it wakes on time rather than up to 50 µs late.
public func sleep(for duration: Duration) throws(SyncError) {
    let ns = try Deadline.nanoseconds(duration, SyncError.self)
    if ns == Int64(MP_FOREVER) {
        while true { _ = mp_sleep_until(Int64.max) }
    }
    _ = mp_sleep_until(mp_monotonic_ns() &+ ns)
}
