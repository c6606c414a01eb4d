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
