import Synchronization

/// The tasks one host claimed for one pool and has not started yet: runners take them one at a
/// time; when draining, ``close()`` hands back the unstarted ones for release.
final class LocalBuffer: Sendable {
    private struct State {
        var tasks: [ClaimedTask] = []
        var head = 0
        var takers: [CheckedContinuation<ClaimedTask?, Never>] = []
        var closed = false
        /// Tasks taken and still running.
        var running = 0
    }
    private let state = Mutex(State())

    init() {}

    /// Claimed and not finished: what the claim loop subtracts from the host's capacity.
    var load: Int { state.withLock { $0.tasks.count - $0.head + $0.running } }

    func put(_ claimed: [ClaimedTask]) {
        var handOff: [(CheckedContinuation<ClaimedTask?, Never>, ClaimedTask)] = []
        state.withLock { state in
            state.tasks.append(contentsOf: claimed)
            while !state.takers.isEmpty && state.head < state.tasks.count {
                handOff.append((state.takers.removeFirst(), state.tasks[state.head]))
                state.head += 1
                state.running += 1
            }
            if state.head > 1024 && state.head * 2 > state.tasks.count {
                state.tasks.removeFirst(state.head)
                state.head = 0
            }
        }
        for (taker, task) in handOff { taker.resume(returning: task) }
    }

    /// The next task, waiting for one; nil once closed. The caller calls ``finished()`` after it.
    func take() async -> ClaimedTask? {
        await withCheckedContinuation { continuation in
            let now: ClaimedTask?? = state.withLock { state in
                if state.head < state.tasks.count {
                    defer { state.head += 1 }
                    state.running += 1
                    return .some(state.tasks[state.head])
                }
                if state.closed { return .some(nil) }
                state.takers.append(continuation)
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// A taken task finished.
    func finished() { state.withLock { $0.running -= 1 } }

    /// No more tasks: waiting takers get nil; returns the unstarted tasks.
    func close() -> [ClaimedTask] {
        let (left, takers) = state.withLock { state in
            state.closed = true
            defer {
                state.tasks = []
                state.head = 0
                state.takers = []
            }
            return (Array(state.tasks[state.head...]), state.takers)
        }
        for taker in takers { taker.resume(returning: nil) }
        return left
    }
}
