import CMultiprocessing

/// Suspends the calling coroutine for `duration` (Python's `asyncio.sleep`), without holding a
/// thread: an io_uring timeout on the caller's event loop (the shared loop off any loop).
///
/// The timeout is an absolute deadline on the monotonic clock, armed in the kernel with no timer
/// slack, so the wake-up comes as soon as the loop's thread can run. Cancelling the task removes
/// the timeout at once and throws `CancellationError`. In async code this overload is chosen over
/// the blocking `sleep(for:)`, which would hold the thread.
///
/// - Throws: ``SyncError/negativeTimeout(_:)`` for a negative duration, `CancellationError`,
///   ``EventLoopError``.
public func sleep(for duration: Duration) async throws {
    let ns = try Deadline.nanoseconds(duration, SyncError.self)
    try await sleep(untilMonotonic: ns == Int64(MP_FOREVER) ? .max : Deadline.after(nanoseconds: ns))
}

/// Suspends the calling coroutine until `deadline`; at once (after one turn of the loop) if it
/// has passed. See `sleep(for:)`.
public func sleep(until deadline: ContinuousClock.Instant) async throws {
    let left = deadline - ContinuousClock.now
    let ns = left <= .zero ? 0 : (try Deadline.nanoseconds(left, SyncError.self))
    try await sleep(untilMonotonic: ns == Int64(MP_FOREVER) ? .max : Deadline.after(nanoseconds: ns))
}

func sleep(untilMonotonic deadline: Int64) async throws {
    if deadline <= mp_monotonic_ns() {
        // Already due: only yield (as asyncio.sleep(0) does); a timer would cost a kernel round trip.
        try Task.checkCancellation()
        await Task.yield()
        return try Task.checkCancellation()
    }
    let loop = try EventLoop.forCurrentContext()
    _ = try await loop.perform { ring, userData in mp_loop_timeout(ring, userData, deadline) }
}
