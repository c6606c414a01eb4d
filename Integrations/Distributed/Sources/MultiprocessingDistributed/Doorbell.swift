import Synchronization

/// A wake-up that is never lost: ``ring()`` before ``wait(upTo:)`` makes the next wait return at once.
/// The worker's claim loop, its completer and result waiters sleep on one, woken by a notification,
/// a finished task or shutdown, with a deadline as the polling fallback.
final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var waiter: (id: UInt64, continuation: CheckedContinuation<Void, Never>)?
        var nextID: UInt64 = 0
        /// A wait whose deadline passed or whose task was cancelled before it parked.
        var expired: UInt64?
    }
    private let state = Mutex(State())

    init() {}

    /// Wakes the waiter, or the next one if none waits now.
    func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            state.rung = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns when rung, or after `timeout` (the polling fallback), or when the task is cancelled.
    /// One waiter at a time. The deadline ends only its own wait: it never leaves a ring behind.
    func wait(upTo timeout: Duration) async {
        let id = state.withLock { state in
            state.nextID &+= 1
            return state.nextID
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            self.expire(id)
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.rung || state.expired == id {
                        state.rung = false
                        return true
                    }
                    state.waiter = (id, continuation)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            expire(id)
        }
    }

    /// Ends wait `id` if it is still waiting (or before it parks).
    private func expire(_ id: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter, waiter.id == id else {
                state.expired = id
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }
}
