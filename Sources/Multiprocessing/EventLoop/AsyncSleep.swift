import CMultiprocessing
import Synchronization

/// Suspends the calling coroutine for `duration` (Python's `asyncio.sleep`), without holding a
/// thread: an io_uring timeout on the caller's event loop (the shared loop off any loop).
///
/// The timeout is an absolute deadline on the monotonic clock, armed in the kernel with no timer
/// slack, so the wake-up comes as soon as the loop's thread can run. Cancelling the task removes
/// the timeout at once and throws `CancellationError`. In async code this overload is chosen over
/// the blocking `sleep(for:)`, which would hold the thread. For a wake-up closer to the deadline
/// than the machine's wake-up latency, see ``sleep(for:tolerance:)``.
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
    try await sleep(untilMonotonic: monotonic(deadline))
}

/// Suspends the calling coroutine for `duration` and wakes it at most `tolerance` late, however
/// long the machine takes to wake a sleeping thread (`Clock.sleep(for:tolerance:)`'s meaning).
///
/// ```swift
/// try await sleep(for: .milliseconds(1), tolerance: .zero)  // wakes within microseconds
/// ```
///
/// A plain timer wakes a halted CPU, and that takes tens of microseconds on a virtual machine
/// (more when it is busy). With a `tolerance` below the wake-up latency this loop has seen, the
/// timer is armed that much early, and the coroutine then polls the monotonic clock (vDSO, no
/// system call) until the deadline, once per turn of its loop: the loop's other coroutines and
/// completions run between polls, and it does not sleep in the kernel meanwhile. The polling
/// lasts at most the learned latency (never more than 1 ms) and costs that much CPU per sleep.
/// A `nil` tolerance, or one above the latency, is the plain timer of `sleep(for:)`.
///
/// It never returns before the deadline. Called off any loop, the timer runs on the shared loop
/// and the polling on the caller's executor.
///
/// - Throws: ``SyncError/negativeTimeout(_:)`` for a negative duration or tolerance,
///   `CancellationError` (also while polling), ``EventLoopError``.
public func sleep(for duration: Duration, tolerance: Duration?) async throws {
    let ns = try Deadline.nanoseconds(duration, SyncError.self)
    let deadline = ns == Int64(MP_FOREVER) ? Int64.max : Deadline.after(nanoseconds: ns)
    try await sleep(untilMonotonic: deadline, tolerance: tolerance)
}

/// Suspends the calling coroutine until `deadline`, waking at most `tolerance` late. See
/// ``sleep(for:tolerance:)``.
public func sleep(until deadline: ContinuousClock.Instant, tolerance: Duration?) async throws {
    try await sleep(untilMonotonic: monotonic(deadline), tolerance: tolerance)
}

/// `deadline` as the C layer's absolute monotonic nanoseconds, through the time left (the two
/// clocks' origins differ).
private func monotonic(_ deadline: ContinuousClock.Instant) throws(SyncError) -> Int64 {
    let left = deadline - ContinuousClock.now
    let ns = left <= .zero ? 0 : (try Deadline.nanoseconds(left, SyncError.self))
    return ns == Int64(MP_FOREVER) ? .max : Deadline.after(nanoseconds: ns)
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

func sleep(untilMonotonic deadline: Int64, tolerance: Duration?) async throws {
    let slack = try tolerance.map { d throws(SyncError) in try Deadline.nanoseconds(d, SyncError.self) }
    let loop = try EventLoop.forCurrentContext()
    // How early to arm the timer: the wake-up latency not covered by the tolerance.
    let lead = slack.map { loop.wakeLatency.margin - $0 } ?? 0
    if lead <= 0 || deadline == .max { return try await sleep(untilMonotonic: deadline) }
    try Task.checkCancellation()
    let early = deadline - lead
    if early > mp_monotonic_ns() {
        _ = try await loop.perform { ring, userData in mp_loop_timeout(ring, userData, early) }
        loop.wakeLatency.record(mp_monotonic_ns() - early)
    }
    // The last stretch: one clock read per turn of the loop, whose other jobs run in between.
    repeat {
        await Task.yield()
        try Task.checkCancellation()
    } while mp_monotonic_ns() < deadline
}

/// How late a loop's timers wake its coroutine (timer expiry to the coroutine running again), learned
/// from its precise sleeps as TCP learns its retransmission timeout (RFC 6298): a smoothed mean
/// and mean deviation, the margin their sum with four deviations. Any thread may record (a sleep
/// off any loop polls on its own executor); a race loses one sample, which only slows the learning.
final class WakeLatency: Sendable {
    /// Before any sample: about this VM's wake-up of a halted vCPU at the 99th percentile.
    static let initialMean: Int64 = 50_000
    static let initialDeviation: Int64 = 15_000
    /// Bounds of the margin: the polling of one sleep lasts at most `maximumMargin`.
    static let minimumMargin: Int64 = 5_000
    static let maximumMargin: Int64 = 1_000_000

    private let mean = Atomic<Int64>(initialMean)
    private let deviation = Atomic<Int64>(initialDeviation)

    /// How long before its deadline a precise sleep arms its timer.
    var margin: Int64 {
        let m = mean.load(ordering: .relaxed) + 4 * deviation.load(ordering: .relaxed)
        return Swift.min(Swift.max(m, Self.minimumMargin), Self.maximumMargin)
    }

    /// One wake-up `ns` after its timer's expiry. A sample above the maximum margin (the thread was
    /// preempted, or the loop ran a long job) is clipped: polling could not have covered it anyway.
    func record(_ ns: Int64) {
        let sample = Swift.min(Swift.max(ns, 0), Self.maximumMargin)
        let m = mean.load(ordering: .relaxed)
        let d = deviation.load(ordering: .relaxed)
        deviation.store(d + (abs(sample - m) - d) / 4, ordering: .relaxed)
        mean.store(m + (sample - m) / 8, ordering: .relaxed)
    }
}
