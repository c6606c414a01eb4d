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
nonisolated(nonsending) public func sleep(for duration: Duration) async throws {
    let ns = try nanoseconds(duration)
    if ns == 0 { return try await yieldOnce() }
    // A deadline after now by construction: no second look at the clock (sleep(untilMonotonic:)).
    try await sleep(timerAt: ns == Int64(MP_FOREVER) ? .max : Deadline.after(nanoseconds: ns))
}

/// Suspends the calling coroutine until `deadline`; at once (after one turn of the loop) if it
/// has passed. See `sleep(for:)`.
nonisolated(nonsending) public func sleep(until deadline: ContinuousClock.Instant) async throws {
    try await sleep(untilMonotonic: monotonic(deadline))
}

/// Suspends the calling coroutine for `duration`, to wake at most `tolerance` late rather than
/// after the machine's wake-up latency (`Clock.sleep(for:tolerance:)`'s meaning of tolerance).
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
/// lasts at most the learned latency (never more than 250 µs) and costs that much CPU per sleep.
/// A `nil` tolerance, or one above the latency, is the plain timer of `sleep(for:)`. A thread that
/// waits for a CPU (a machine busier than its cores) still wakes late: no margin covers that.
///
/// It never returns before the deadline. Called off any loop, the timer runs on the shared loop
/// and the polling on the caller's executor.
///
/// - Throws: ``SyncError/negativeTimeout(_:)`` for a negative duration or tolerance,
///   `CancellationError` (also while polling), ``EventLoopError``.
nonisolated(nonsending) public func sleep(for duration: Duration, tolerance: Duration?) async throws {
    let ns = try nanoseconds(duration)
    let deadline = ns == Int64(MP_FOREVER) ? Int64.max : Deadline.after(nanoseconds: ns)
    try await sleep(untilMonotonic: deadline, tolerance: tolerance)
}

/// Suspends the calling coroutine until `deadline`, waking at most `tolerance` late. See
/// ``sleep(for:tolerance:)``.
nonisolated(nonsending) public func sleep(until deadline: ContinuousClock.Instant, tolerance: Duration?) async throws {
    try await sleep(untilMonotonic: monotonic(deadline), tolerance: tolerance)
}

/// `duration` in whole nanoseconds, as `Deadline.nanoseconds`: by one 64-bit division when its
/// attoseconds fit in an `Int64` (up to 9.2 s), rather than through `components` (a 128-bit
/// division and multiplication, 300 instructions per sleep).
@inline(__always)
private func nanoseconds(_ duration: Duration) throws(SyncError) -> Int64 {
    let attoseconds = duration.attoseconds
    if attoseconds >= 0 && attoseconds <= Int128(Int64.max) { return Int64(attoseconds) / 1_000_000_000 }
    return try Deadline.nanoseconds(duration, SyncError.self)
}

/// `deadline` as the C layer's absolute monotonic nanoseconds, through the time left (the two
/// clocks' origins differ).
private func monotonic(_ deadline: ContinuousClock.Instant) throws(SyncError) -> Int64 {
    let left = deadline - ContinuousClock.now
    let ns = left <= .zero ? 0 : (try Deadline.nanoseconds(left, SyncError.self))
    return ns == Int64(MP_FOREVER) ? .max : Deadline.after(nanoseconds: ns)
}

@inline(__always)
nonisolated(nonsending) func sleep(untilMonotonic deadline: Int64) async throws {
    if deadline <= mp_monotonic_ns() { return try await yieldOnce() }
    try await sleep(timerAt: deadline)
}

/// A sleep that is due already: only a yield (as asyncio.sleep(0) does); a timer would cost a
/// kernel round trip.
@inline(__always)
nonisolated(nonsending) private func yieldOnce() async throws {
    try Task.checkCancellation()
    await Task.yield()
    try Task.checkCancellation()
}

/// The timer of a sleep until `deadline`, on the caller's loop (in one of its slots: see
/// `LoopSlot`), or on the shared loop off any loop.
@inline(__always)
nonisolated(nonsending) private func sleep(timerAt deadline: Int64) async throws {
    if let loop = EventLoop.current {
        // Held until the timer's cancellation handler is removed: it may use the loop till then.
        defer { extendLifetime(loop) }
        return try await loop.sleepOnOwnThread(until: deadline)
    }
    let loop = try EventLoop.forCurrentContext()
    _ = try await loop.perform(LoopOperation(timeoutAt: deadline))
}

nonisolated(nonsending) func sleep(untilMonotonic deadline: Int64, tolerance: Duration?) async throws {
    let slack = try tolerance.map { d throws(SyncError) in try Deadline.nanoseconds(d, SyncError.self) }
    let loop = try EventLoop.forCurrentContext()
    // How early to arm the timer: the wake-up latency not covered by the tolerance.
    let lead = slack.map { loop.wakeLatency.margin - $0 } ?? 0
    if lead <= 0 || deadline == .max { return try await sleep(untilMonotonic: deadline) }
    try Task.checkCancellation()
    let early = deadline - lead
    if early > mp_monotonic_ns() {
        if loop.inEventLoop {
            try await loop.sleepOnOwnThread(until: early)
        } else {
            _ = try await loop.perform(LoopOperation(timeoutAt: early))
        }
        loop.wakeLatency.record(mp_monotonic_ns() - early)
    }
    // The last stretch: one clock read per turn of the loop, whose other jobs run in between.
    repeat {
        await Task.yield()
        try Task.checkCancellation()
    } while mp_monotonic_ns() < deadline
}

/// How late a loop's timers wake its coroutine (timer expiry to the coroutine running again): an
/// estimate of the 99th percentile, which precise sleeps use as their margin. A sample above the
/// estimate raises it by an eighth, one below lowers it by an eighth of 1/99 of that, so it settles
/// where 1 % of the samples lie above it, however far above (a frugal streaming quantile). A
/// sample above `maximumMargin` is not a wake-up but a preemption (the thread waited for a CPU, a
/// scheduler tick of 4 ms here) or a long job of the loop: no margin covers it, and counting it
/// would lengthen the polling, whose CPU time makes the next preemption likelier. Any thread may
/// record (a sleep off any loop polls on its own executor); a race loses one sample.
final class WakeLatency: Sendable {
    /// Before any sample: about the 99th percentile of this VM's wake-up of a halted vCPU.
    static let initialMargin: Int64 = 100_000
    /// Bounds of the margin: the polling of one sleep lasts at most `maximumMargin`, a few times the
    /// exit latency of a deep C-state or a halted vCPU's.
    static let minimumMargin: Int64 = 5_000
    static let maximumMargin: Int64 = 250_000
    /// The percentile tracked, as the share of samples above it: 1 in 100.
    private static let above: Int64 = 1

    private let estimate = Atomic<Int64>(initialMargin)

    /// How long before its deadline a precise sleep arms its timer.
    var margin: Int64 { estimate.load(ordering: .relaxed) }

    /// One wake-up `ns` after its timer's expiry.
    func record(_ ns: Int64) {
        if ns > Self.maximumMargin { return }
        let q = estimate.load(ordering: .relaxed)
        let step = q / 8
        let next = ns > q ? q + step : q - step * Self.above / (100 - Self.above)
        estimate.store(Swift.min(Swift.max(next, Self.minimumMargin), Self.maximumMargin), ordering: .relaxed)
    }
}
