/// The absolute monotonic deadline (ns, `.max` for none) of a pool wait that may last `timeout`
/// (forever when nil): what ``LocalEvent/wait(deadline:)`` takes, so a wait in several steps
/// (join's two) shares one deadline.
func poolDeadline(after timeout: Duration?) throws(PoolError) -> Int64 {
    guard let timeout else { return .max }
    let ns: Int64
    do { ns = try timeoutNanoseconds(timeout) } catch { throw .negativeTimeout(timeout) }
    return monotonicDeadline(afterNanoseconds: ns)
}
