import Synchronization

/// The turns of a connection's senders: one send at a time, in the order they came, so that the
/// bytes of two tasks' sends never interleave on the stream. (A send that the socket's buffer
/// cannot take at once finishes through the ring, after a suspension: without turns, another
/// task's send could put its bytes in between.)
///
/// `state` is 0 (free), 1 (a send has the turn) or 2 (it has, and others wait in `waiting`). A turn
/// is taken (0 → 1) and given back (1 → 0) by one CAS, without the lock; 1 → 2, and every change
/// from 2, happen under the lock, with the list they describe. Acquire on taking and release on
/// giving order one send's use of the socket before the next one's.
final class SendTurns: Sendable {
    private let state = Atomic<UInt8>(0)
    private let waiting = Locked<Waiting>(Waiting())

    private struct Waiting {
        var next: UInt64 = 0
        var senders: [(id: UInt64, turn: UnsafeContinuation<Bool, Never>)] = []
    }

    /// Takes the turn, after the sends that came before; false if the task was cancelled while it
    /// waited (it then has no turn).
    @inline(__always)
    nonisolated(nonsending) func take() async -> Bool {
        if state.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged { return true }
        return await wait()
    }

    /// Gives the turn to the first send that waits, or back.
    @inline(__always)
    func give() {
        if state.compareExchange(expected: 1, desired: 0, ordering: .releasing).exchanged { return }
        let first = waiting.withLock { w -> UnsafeContinuation<Bool, Never>? in
            guard !w.senders.isEmpty else {
                state.store(0, ordering: .releasing)
                return nil
            }
            let first = w.senders.removeFirst()
            // The turn passes to it without ever being free: 1 if nobody else waits.
            if w.senders.isEmpty { state.store(1, ordering: .releasing) }
            return first.turn
        }
        first?.resume(returning: true)
    }

    nonisolated(nonsending) private func wait() async -> Bool {
        let id = waiting.withLock { w -> UInt64 in
            w.next += 1
            return w.next
        }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (turn: UnsafeContinuation<Bool, Never>) in
                let outcome = waiting.withLock { w -> Bool? in
                    while true {
                        let now = state.load(ordering: .acquiring)
                        if now == 0 {
                            if state.compareExchange(expected: 0, desired: 1, ordering: .acquiring).exchanged {
                                return true
                            }
                            continue
                        }
                        // Checked under the lock: a cancellation either comes before this (and is
                        // seen) or after the append (and its handler, taking the lock, finds it).
                        if Task.isCancelled { return false }
                        if now == 1, !state.compareExchange(expected: 1, desired: 2, ordering: .relaxed).exchanged {
                            continue
                        }
                        w.senders.append((id, turn))
                        return nil
                    }
                }
                if let outcome { turn.resume(returning: outcome) }
            }
        } onCancel: {
            let cancelled = waiting.withLock { w -> UnsafeContinuation<Bool, Never>? in
                guard let at = w.senders.firstIndex(where: { $0.id == id }) else { return nil }
                let sender = w.senders.remove(at: at)
                if w.senders.isEmpty { state.store(1, ordering: .relaxed) }  // the send with the turn goes on
                return sender.turn
            }
            cancelled?.resume(returning: false)
        }
    }
}
