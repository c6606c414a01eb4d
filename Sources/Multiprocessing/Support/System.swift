import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// The one place where C results become Swift errors. The C target returns `-errno` (never touching
/// errno across the boundary); EINTR is retried in C where retrying is right.
@inline(__always)
func checkedErrno(_ result: Int32, _ function: String) -> Result<Int32, Errno> {
    if result >= 0 { return .success(result) }
    return .failure(Errno(rawValue: -result))
}

/// A Duration as whole nanoseconds for the C calls: negative is an error, huge saturates to
/// "forever" (no deadline can be further away than ~292 years anyway).
@inline(__always)
func timeoutNanoseconds(_ timeout: Duration) throws(SyncError) -> Int64 {
    if timeout < .zero { throw .negativeTimeout(timeout) }
    let (seconds, attoseconds) = timeout.components
    let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
    if overflow { return Int64(MP_FOREVER) }
    let (total, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
    return overflow2 ? Int64(MP_FOREVER) : total
}

/// An absolute monotonic deadline `ns` nanoseconds from now, for the C calls: `.max` (forever) for
/// `MP_FOREVER` or when the sum would overflow.
@inline(__always)
func monotonicDeadline(afterNanoseconds ns: Int64) -> Int64 {
    if ns == Int64(MP_FOREVER) { return .max }
    let now = mp_monotonic_ns()
    return ns > .max - now ? .max : now + ns
}

/// An absolute monotonic deadline for `timeout` (nil: none), the form every C wait takes.
func absoluteDeadline(_ timeout: Duration?) throws(SyncError) -> Int64 {
    guard let timeout else { return .max }
    return monotonicDeadline(afterNanoseconds: try timeoutNanoseconds(timeout))
}

/// The monotonic time `ns` from now, saturating at "never".
@inline(__always)
func deadlineAfter(_ ns: Int64) -> Int64 { monotonicDeadline(afterNanoseconds: ns) }

extension Duration {
    /// The duration in seconds as a Double (for printing and arithmetic in examples).
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

/// The number of CPUs this process may run on (Python's `multiprocessing.cpu_count()`).
public var cpuCount: Int {
    let n = sysconf(Int32(_SC_NPROCESSORS_ONLN))
    return n > 0 ? n : 1
}
