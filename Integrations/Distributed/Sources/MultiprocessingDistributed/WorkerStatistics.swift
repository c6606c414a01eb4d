/// What a ``DurableWorker`` did since it started.
public struct WorkerStatistics: Sendable, Equatable, CustomStringConvertible {
    /// Tasks claimed from the database.
    public var claimed = 0
    /// Tasks that ran to an outcome in the local pool (a result or an error).
    public var executed = 0
    /// Results the database accepted.
    public var completed = 0
    /// Failures the database accepted (each retried or failed for good).
    public var failed = 0
    /// Outcomes the fence refused: this host had lost the task's lease (it was reaped and perhaps
    /// claimed again elsewhere).
    public var refused = 0
    /// Claimed tasks handed back unstarted, when draining.
    public var released = 0
    /// Expired leases this host's reaper returned to the queue (or failed, after the last attempt).
    public var reaped = 0

    public var description: String {
        "claimed=\(claimed) executed=\(executed) completed=\(completed) failed=\(failed) refused=\(refused) "
            + "released=\(released) reaped=\(reaped)"
    }
}
