import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

// The two funnels through which system calls reach Swift errors. The C target's calls return
// `-errno` (they never leave errno to be read across the boundary) and retry EINTR in C where
// retrying is right: `checkedErrno` reads them. The calls the Swift layer makes itself go through
// `systemCall`, as NIO's `syscall(blocking:where:)` and swift-system's `valueOrErrno` do: nothing
// else reads `errno` or loops on EINTR.

/// A C target result (`>= 0`, or `-errno`) as a result.
@inline(__always)
func checkedErrno(_ result: Int32, _ function: String) -> Result<Int32, Errno> {
    if result >= 0 { return .success(result) }
    return .failure(Errno(rawValue: -result))
}

/// Runs a system call of the libc convention (`-1` and errno on failure): the failure becomes the
/// `Errno` the call set, read at once (the next call may overwrite it), and EINTR is retried, since
/// a signal delivered to this thread is not the call's failure. A caller that must see EINTR (to
/// recompute a timeout, say) passes `retryingInterrupts: false`.
@inline(__always)
func systemCall<T: FixedWidthInteger>(retryingInterrupts: Bool = true, _ call: () -> T) throws(Errno) -> T {
    while true {
        let result = call()
        if result != -1 { return result }
        let error = Errno(rawValue: errno)
        if error == .interrupted && retryingInterrupts { continue }
        throw error
    }
}

/// Closes a descriptor this code owns. The outcome is not reported and EINTR is not retried: Linux
/// frees the number whatever `close` returns, and a retry could close another thread's new
/// descriptor of the same number. Not generic, so a forked child may call it.
func closeDescriptor(_ fd: Int32) {
    _ = Glibc.close(fd)
}

/// A duplicate of `fd` that is closed on exec (a plain `dup` would leak into spawned children).
func duplicateDescriptor(_ fd: Int32) throws(Errno) -> Int32 {
    try systemCall { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
}

extension Duration {
    /// The duration in seconds as a Double (for printing and arithmetic in examples).
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
