import CMultiprocessing
import Synchronization

/// The thread that delivers a pool's results and runs its callbacks: a blocking wait on it could
/// never end, so waits check for it. It is a thread of the process that made the pool: in a forked
/// child, which inherits the pool's results but not this thread, a wait could never end either.
final class DeliveryThread: Sendable {
    private let tid = Atomic<Int32>(0)
    /// The process that made the pool (and this thread).
    let owner = mp_process_id()

    /// Called by the result thread when it starts.
    func adoptCurrent() { tid.store(mp_thread_id(), ordering: .relaxed) }

    var isCurrent: Bool { tid.load(ordering: .relaxed) == mp_thread_id() }

    /// Throws if a wait for a result that is not there yet could never end: one on this thread (a
    /// callback, ``PoolError/calledFromCallback``), or one in a process other than the pool's
    /// (a forked child, ``PoolError/otherProcess(owner:)``).
    func checkWaitCanEnd() throws(PoolError) {
        if isCurrent { throw .calledFromCallback }
        try checkOwnersProcess()
    }

    /// Throws ``PoolError/otherProcess(owner:)`` outside the process that made the pool.
    func checkOwnersProcess() throws(PoolError) {
        if owner != mp_process_id() { throw .otherProcess(owner: owner) }
    }
}
