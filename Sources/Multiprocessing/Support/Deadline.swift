import CMultiprocessing

/// An error with a case for a negative timeout: every error vocabulary of the library has one, and
/// ``Deadline`` throws it, so that no call site converts between them.
@usableFromInline
protocol NegativeTimeoutError: Error {
    static func negativeTimeout(_ timeout: Duration) -> Self
}

extension SyncError: NegativeTimeoutError {}
extension QueueError: NegativeTimeoutError {}
extension PoolError: NegativeTimeoutError {}
extension ProcessError: NegativeTimeoutError {}
extension ConnectionError: NegativeTimeoutError {}

/// The one place a timeout becomes what the C layer waits by: an absolute deadline on the monotonic
/// clock, in nanoseconds (`.max`, which is `MP_FOREVER`: never; a deadline already past, such as
/// `MP_NOW`: try once). A negative timeout is the caller's error type's `negativeTimeout`; a huge
/// one saturates to never (no deadline is further away than ~292 years anyway).
@usableFromInline
enum Deadline {
    /// The deadline `timeout` from now; never for nil. Always inline, the rest out of line: a wait
    /// with no timeout (most of them) then costs one test at the call site (the optimizer otherwise
    /// kept the whole of it as a call, merged between callers, in `Queue.put` and `get`).
    @inlinable @inline(__always)
    static func after<E: NegativeTimeoutError>(_ timeout: Duration?, _ error: E.Type) throws(E) -> Int64 {
        guard let timeout else { return .max }
        return try after(timeout, error)
    }

    /// The deadline `timeout` from now.
    @inlinable @inline(never)
    static func after<E: NegativeTimeoutError>(_ timeout: Duration, _ error: E.Type) throws(E) -> Int64 {
        after(nanoseconds: try nanoseconds(timeout, error))
    }

    /// The deadline `ns` nanoseconds from now (`.max` for `MP_FOREVER`, or when the sum overflows).
    @inlinable
    static func after(nanoseconds ns: Int64) -> Int64 {
        if ns == .max { return .max }
        let now = mp_monotonic_ns()
        return ns > .max - now ? .max : now + ns
    }

    /// `timeout` in whole nanoseconds, saturating at `.max`; a negative one is refused.
    @inlinable
    static func nanoseconds<E: NegativeTimeoutError>(_ timeout: Duration, _: E.Type) throws(E) -> Int64 {
        if timeout < .zero { throw E.negativeTimeout(timeout) }
        let (seconds, attoseconds) = timeout.components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let (total, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow2 ? .max : total
    }
}
