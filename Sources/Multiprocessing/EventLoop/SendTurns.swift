import Synchronization

/// The sends of a ``TCPConnection`` that wait for their turn, oldest first (kept under the
/// connection's lock, in `kept.senders`).
struct WaitingSenders {
    var next: UInt64 = 0
    var queue: [(id: UInt64, turn: UnsafeContinuation<Bool, Never>)] = []
}

/// The turns of a connection's senders: one send at a time, in the order they came, so that the
/// bytes of two tasks' sends never interleave on the stream. (A send that the socket's buffer
/// cannot take at once finishes through the ring, after a suspension: without turns, another
/// task's send could put its bytes in between.)
///
/// `sendTurn` is 0 (free), 1 (a send has the turn) or 2 (it has, and others wait in
/// `kept.senders`). A turn is taken (0 → 1) and given back (1 → 0) by one CAS, without the lock;
/// 1 → 2, and every change from 2, happen under the lock, with the queue they describe. Taking
/// (sequentially consistent, for `TCPConnection.close()`, which includes acquire) and giving
/// (release) order one send's use of the socket before the next one's.
extension TCPConnection {
    /// Takes the turn, after the sends that came before; false if the task was cancelled while it
    /// waited (it then has no turn).
    @inline(__always)
    nonisolated(nonsending) func takeSendTurn() async -> Bool {
        // Sequentially consistent, not only acquiring: see `TCPConnection.close()`.
        let taken = sendTurn.compareExchange(expected: 0, desired: 1, ordering: .sequentiallyConsistent).exchanged
        if taken { return true }
        return await waitForSendTurn()
    }

    /// Gives the turn to the first send that waits, or back.
    @inline(__always)
    func giveSendTurn() {
        if sendTurn.compareExchange(expected: 1, desired: 0, ordering: .releasing).exchanged { return }
        let first = kept.withLock { k -> UnsafeContinuation<Bool, Never>? in
            guard !k.senders.queue.isEmpty else {
                sendTurn.store(0, ordering: .releasing)
                return nil
            }
            let first = k.senders.queue.removeFirst()
            // The turn passes to it without ever being free: 1 if nobody else waits.
            if k.senders.queue.isEmpty { sendTurn.store(1, ordering: .releasing) }
            return first.turn
        }
        first?.resume(returning: true)
    }

    nonisolated(nonsending) private func waitForSendTurn() async -> Bool {
        let id = kept.withLock { k -> UInt64 in
            k.senders.next += 1
            return k.senders.next
        }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (turn: UnsafeContinuation<Bool, Never>) in
                let outcome = kept.withLock { k -> Bool? in
                    while true {
                        let now = sendTurn.load(ordering: .acquiring)
                        if now == 0 {
                            if sendTurn.compareExchange(expected: 0, desired: 1, ordering: .sequentiallyConsistent)
                                .exchanged
                            {
                                return true
                            }
                            continue
                        }
                        // Checked under the lock: a cancellation either comes before this (and is
                        // seen) or after the append (and its handler, taking the lock, finds it).
                        if Task.isCancelled { return false }
                        if now == 1, !sendTurn.compareExchange(expected: 1, desired: 2, ordering: .relaxed).exchanged {
                            continue
                        }
                        k.senders.queue.append((id, turn))
                        return nil
                    }
                }
                if let outcome { turn.resume(returning: outcome) }
            }
        } onCancel: {
            let cancelled = kept.withLock { k -> UnsafeContinuation<Bool, Never>? in
                guard let at = k.senders.queue.firstIndex(where: { $0.id == id }) else { return nil }
                let sender = k.senders.queue.remove(at: at)
                if k.senders.queue.isEmpty { sendTurn.store(1, ordering: .relaxed) }  // the send with the turn goes on
                return sender.turn
            }
            cancelled?.resume(returning: false)
        }
    }
}
