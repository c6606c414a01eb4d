import CMultiprocessing

/// Puts task messages into the task ring for the result thread, which must never wait for room
/// there: callbacks run on it and may submit tasks, and if it waited while the workers waited for
/// room in the result ring (which only it drains), neither would move. A message that does not go
/// in at once is copied and handed to a thread of its own, started on first need, that puts it.
final class TaskFeeder: @unchecked Sendable {
    struct Message {
        let id: UInt64
        let bytes: UnsafeMutableRawBufferPointer
    }

    private struct State {
        var messages = FIFO<Message>()
        var started = false
        var stopping = false
    }

    private let q: UnsafeMutablePointer<mp_queue_view_t>
    private let state = Locked(State())
    /// A permit per queued message, and one to stop.
    private let ready = LocalSemaphore()
    private let stopped = LocalEvent()
    /// Called (on the feeder's thread) for a message the ring refused: it was shut down.
    private let refused: @Sendable (UInt64) -> Void

    init(queue: UnsafeMutablePointer<mp_queue_view_t>, refused: @escaping @Sendable (UInt64) -> Void) {
        q = queue
        self.refused = refused
    }

    /// Puts `message` without waiting if it fits now and nothing is queued before it; else queues
    /// a copy for the feeder thread. Returns false if the ring was shut down. Result thread only.
    func put(_ id: UInt64, _ message: UnsafeRawBufferPointer) -> Bool {
        let backlog = state.withLock { !$0.messages.isEmpty }
        // A message larger than one record streams, and could wait for room midway: never here.
        if !backlog && UInt64(message.count) <= mp_queue_max_record(q) {
            switch mp_queue_put(q, message.baseAddress, UInt64(message.count), 0) {
            case MP_OK: return true
            case MP_SHUTDOWN, MP_CORRUPTED: return false
            default: break  // full: the feeder waits for room instead
            }
        }
        let start = state.withLock { s -> Bool in
            s.messages.append(Message(id: id, bytes: copy(message)))
            defer { s.started = true }
            return !s.started
        }
        if start { startThread() }
        ready.release()
        return true
    }

    /// Stops the thread (if it ever started) once its queue is empty; the ring is shut down by then.
    func stop() {
        let started = state.withLock { s -> Bool in
            s.stopping = true
            return s.started
        }
        guard started else { return }
        ready.release()
        stopped.wait()
    }

    private func copy(_ message: UnsafeRawBufferPointer) -> UnsafeMutableRawBufferPointer {
        let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: max(message.count, 1), alignment: 16)
        if message.count > 0 { bytes.baseAddress!.copyMemory(from: message.baseAddress!, byteCount: message.count) }
        return UnsafeMutableRawBufferPointer(rebasing: bytes[0..<message.count])
    }

    private func startThread() {
        do {
            try Thread(name: "pool-feeder") { self.loop() }.start()
        } catch {
            // No thread: put here, waiting (the rare case of both rings full may then stall).
            state.withLock { $0.started = false }
            loop(once: true)
        }
    }

    private func loop(once: Bool = false) {
        while true {
            if !once { ready.acquire() }
            let (next, stop) = state.withLock { s -> (Message?, Bool) in
                guard let next = s.messages.popFirst() else { return (nil, s.stopping) }
                return (next, false)
            }
            if let next {
                if !putMessage(q, UnsafeRawBufferPointer(next.bytes)) { refused(next.id) }
                next.bytes.deallocate()
            } else if stop || once {
                break
            }
        }
        if !once { stopped.set() }
    }
}
