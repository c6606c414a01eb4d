import CMultiprocessing
import Synchronization

/// The thread that delivers a pool's results and runs its callbacks: a blocking wait on it could
/// never end, so waits check for it.
final class DeliveryThread: Sendable {
    private let tid = Atomic<Int32>(0)

    /// Called by the result thread when it starts.
    func adoptCurrent() { tid.store(mp_thread_id(), ordering: .relaxed) }

    var isCurrent: Bool { tid.load(ordering: .relaxed) == mp_thread_id() }
}
