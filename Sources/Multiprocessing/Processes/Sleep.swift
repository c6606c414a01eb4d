import CMultiprocessing

/// Blocks the calling thread for `duration` on the monotonic clock (Python's `time.sleep`).
/// Throws ``SyncError/negativeTimeout(_:)`` for a negative duration.
public func sleep(for duration: Duration) throws(SyncError) {
    let ns = try Deadline.nanoseconds(duration, SyncError.self)
    if ns == Int64(MP_FOREVER) {
        while true { _ = mp_sleep_until(Int64.max) }
    }
    _ = mp_sleep_until(mp_monotonic_ns() &+ ns)
}
