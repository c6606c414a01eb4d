import CBenchPeers
import Foundation
import Multiprocessing
import Synchronization

/// Runs `body` with the calling thread pinned to the `slot`-th CPU it may use (0 or 1: CPUs 0 and
/// 1), so that the two sides of a contest never share a CPU; when the thread may use fewer than
/// two CPUs it stays as it is. The thread gets its CPUs back afterwards. A thread inherits the CPUs
/// of the thread that starts it: start the other side before pinning the starter.
func pinned<T>(to slot: Int, _ body: () throws -> T) rethrows -> T {
    var saved = bench_cpu_set_t()
    bench_pin_thread(Int32(slot), &saved)
    defer { bench_unpin_thread(&saved) }
    return try body()
}

/// Runs `body(side)` on two new threads, side 0 pinned to CPU slot 0 and side 1 to slot 1, both
/// let go at once (the first would otherwise be done before the second starts, uncontended), and
/// returns when both have ended.
func onTwoPinnedThreads(_ body: @escaping @Sendable (_ side: Int) -> Void) throws {
    let startLine = StartLine()
    let threads = (0..<2).map { side in
        Multiprocessing.Thread {
            pinned(to: side) {
                startLine.arrive(expecting: 2)
                body(side)
            }
        }
    }
    for t in threads { try t.start() }
    for t in threads { try t.join() }
}

/// Holds threads until all have arrived, so that they start their contest together.
final class StartLine: Sendable {
    private let arrived = Atomic<Int>(0)

    func arrive(expecting count: Int) {
        arrived.add(1, ordering: .acquiringAndReleasing)
        // Yields: with fewer CPUs than threads (not pinned then) the others need this one's CPU.
        while arrived.load(ordering: .acquiring) < count { sched_yield() }
    }
}
