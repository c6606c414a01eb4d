import Synchronization

/// A wake-up that is never lost: ``ring()`` before ``wait(upTo:)`` makes the next wait return at once.
/// The worker's claim loop and result waiters sleep on one, woken by a notification, a freed slot or
/// shutdown, with a deadline as the polling fallback.
final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Mutex(State())

    init() {}

    /// Wakes the waiter, or the next one if none waits now.
    func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.rung = true
            return nil
        }
        waiter?.resume()
    }

    /// Returns when rung, or after `timeout` (the polling fallback), or when the task is cancelled.
    /// One waiter at a time.
    func wait(upTo timeout: Duration) async {
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            self?.ring()
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.rung {
                        state.rung = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            ring()
        }
        // A ring from the timer that came after the waker's: not a wake-up for the next wait.
        state.withLock { $0.rung = false }
    }
}
