import CMultiprocessing

extension Queue {
    /// Puts `item`, suspending while the queue is full (up to `timeout`; forever when nil),
    /// without holding a thread: a consumer in any thread or process that makes room wakes the
    /// coroutine. In async code this overload is chosen over the blocking `put(_:timeout:)`.
    ///
    /// A message larger than a quarter of the ring travels in pieces; such a put runs the blocking
    /// path on a helper thread.
    /// - Throws: ``QueueError/full`` after the timeout, ``QueueError`` as the blocking put,
    ///   `CancellationError`.
    public func put(_ item: Element, timeout: Duration? = nil) async throws {
        try checkOpen()
        let deadline = try deadline(after: timeout)
        var bytes: [UInt8] = []
        try codec.withBytes(item, maxMessageSize) { bytes = Array($0) }
        if UInt64(bytes.count) > mp_queue_max_record(q) {
            try await toThread { try self.send(item, deadline: deadline) }
            return
        }
        let joinable = self is JoinableQueue<Element>
        if joinable { mp_queue_task_add(q) }  // before the item is visible, as JoinableQueue.send
        do {
            try await putBytes(bytes, deadline: deadline)
        } catch {
            if joinable { mp_queue_task_undo(q) }
            throw error
        }
    }

    private func putBytes(_ bytes: [UInt8], deadline: Int64) async throws {
        var w = mp_async_wait_t()
        var loop: EventLoop? = nil
        while true {
            let status = bytes.withUnsafeBytes { mp_queue_put_async(q, &w, $0.baseAddress, UInt64($0.count)) }
            switch status {
            case MP_OK: return
            case MP_SHUTDOWN: throw QueueError.shutDown
            case MP_CORRUPTED: throw QueueError.corrupted
            case MP_OWNER_DIED:
                // The producer lock's holder died: the blocking put recovers the lock.
                let slice = min(deadline, deadlineAfter(100_000_000))
                let queue = UnsafeSendable(q)
                let status = try await toThread { mp_queue_put(queue.value, bytes, UInt64(bytes.count), slice) }
                if status == MP_OK { return }
                if status == MP_SHUTDOWN { throw QueueError.shutDown }
                if status == MP_CORRUPTED { throw QueueError.corrupted }
                if slice >= deadline { throw QueueError.full }
                continue
            default: break
            }
            if mp_monotonic_ns() >= deadline {
                mp_queue_async_after_wait(q, &w, 0)
                throw QueueError.full
            }
            if loop == nil { loop = try EventLoop.forCurrentContext() }
            let outcome = await loop!.waitOnWord(w, until: deadline)
            mp_queue_async_after_wait(q, &w, outcome == .woken ? 1 : 0)
            if let error = outcome.error { throw error }
        }
    }

    /// Takes the next item, suspending while the queue is empty (up to `timeout`; forever when
    /// nil), without holding a thread: a put from any thread or process wakes the coroutine. In
    /// async code this overload is chosen over the blocking `get(timeout:)`.
    /// - Throws: ``QueueError/empty`` after the timeout, ``QueueError`` as the blocking get,
    ///   `CancellationError`.
    public func get(timeout: Duration? = nil) async throws -> Element {
        try checkOpen()
        let deadline = try deadline(after: timeout)
        var w = mp_async_wait_t()
        var loop: EventLoop? = nil
        while true {
            var payload: UnsafeRawPointer? = nil
            var length: UInt64 = 0
            var total: UInt64 = 0
            switch mp_queue_get_async(q, &w, &payload, &length, &total) {
            case MP_OK:
                if total == length {
                    defer { mp_queue_get_end(q) }
                    return try codec.decode(UnsafeRawBufferPointer(start: payload, count: Int(length)))
                }
                if let whole = try await reassemble(total) { return try whole.withUnsafeBytes { try codec.decode($0) } }
                continue  // its producer died midway: take the next message
            case MP_SHUTDOWN: throw QueueError.shutDown
            case MP_CORRUPTED: throw QueueError.corrupted
            case MP_OWNER_DIED:
                // The consumer lock's holder died: the blocking get recovers the lock.
                let slice = min(deadline, deadlineAfter(100_000_000))
                do {
                    return try await toThread { try self.receive(deadline: slice) }
                } catch QueueError.empty where slice < deadline {
                    continue
                }
            default: break
            }
            if mp_monotonic_ns() >= deadline {
                mp_queue_async_after_wait(q, &w, 0)
                throw QueueError.empty
            }
            if loop == nil { loop = try EventLoop.forCurrentContext() }
            let outcome = await loop!.waitOnWord(w, until: deadline)
            mp_queue_async_after_wait(q, &w, outcome == .woken ? 1 : 0)
            if let error = outcome.error { throw error }
        }
    }

    /// The rest of a message that came in pieces, copied on a helper thread (its producer may
    /// still be streaming it). Not cancellable: the consumer lock is held until it is done.
    private func reassemble(_ total: UInt64) async throws -> [UInt8]? {
        let queue = UnsafeSendable(q)
        return try await BlockingPool.shared.run { () -> [UInt8]? in
            var bytes = [UInt8](repeating: 0, count: Int(total))
            let status = bytes.withUnsafeMutableBytes { mp_queue_get_rest(queue.value, $0.baseAddress!, total) }
            if status == MP_CORRUPTED { throw QueueError.corrupted }
            return status == MP_ABORTED ? nil : bytes
        }
    }
}

extension SimpleQueue {
    /// Puts `item` (see `Queue.put(_:timeout:)`).
    public func put(_ item: Element) async throws { try await queue.put(item, timeout: nil) }

    /// Takes the next item, suspending while there is none (see `Queue.get(timeout:)`).
    public func get() async throws -> Element { try await queue.get(timeout: nil) }

    /// Takes the next item, suspending up to `timeout`; throws ``QueueError/empty`` after it.
    public func get(timeout: Duration) async throws -> Element { try await queue.get(timeout: timeout) }
}
