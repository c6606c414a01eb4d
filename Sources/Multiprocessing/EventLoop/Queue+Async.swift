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
    nonisolated(nonsending) public func put(_ item: Element, timeout: Duration? = nil) async throws {
        try checkOpen()
        let deadline = try Deadline.after(timeout, QueueError.self)
        var bytes: [UInt8] = []
        try codec.withBytes(item, maxMessageSize) { bytes = Array($0) }
        if UInt64(bytes.count) > mp_queue_max_record(q) {
            try await toThread { try self.send(item, deadline: deadline) }
            return
        }
        let joinable = countsTasks
        if joinable { mp_queue_task_add(q) }  // before the item is visible, as send does
        do {
            try await putBytes(bytes, deadline: deadline)
        } catch {
            if joinable { mp_queue_task_undo(q) }
            throw error
        }
    }

    /// Whether a batch's items may go into the thread's lane: only on an event loop's own thread,
    /// where every step of the coroutine runs. A Task of Swift's global executor may resume on
    /// another thread when it waits for room, and the rest of the batch would go into that
    /// thread's lane and overtake the items left in the first: its batches go through the ring,
    /// which keeps them in order. (A single put is one item: it takes the lane of the thread it
    /// runs on, as a blocking put does.)
    private var lanesKeepBatchOrder: Bool { mp_loop_current() != nil }

    /// `lanes` false keeps the message in the ring (see `lanesKeepBatchOrder`).
    nonisolated(nonsending) private func putBytes(_ bytes: [UInt8], deadline: Int64, lanes: Bool = true) async throws {
        var w = mp_async_wait_t()
        var loop: EventLoop? = nil
        let lanes: Int32 = lanes ? 1 : 0
        while true {
            let status = bytes.withUnsafeBytes { mp_queue_put_async(q, &w, $0.baseAddress, UInt64($0.count), lanes) }
            switch status {
            case MP_OK: return
            case MP_SHUTDOWN: throw QueueError.shutDown
            case MP_CORRUPTED: throw QueueError.corrupted
            case MP_OWNER_DIED:
                // The producer lock's holder died: the blocking put recovers the lock, in the ring
                // (the helper thread's lane is not this coroutine's).
                let slice = min(deadline, Deadline.after(nanoseconds: 100_000_000))
                let queue = UnsafeSendable(q)
                let status = try await toThread {
                    var length = UInt64(bytes.count)
                    var put: UInt64 = 0
                    return mp_queue_put_batch(queue.value, bytes, &length, 0, 0, 1, 0, slice, &put)
                }
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
    nonisolated(nonsending) public func get(timeout: Duration? = nil) async throws -> Element {
        try checkOpen()
        let deadline = try Deadline.after(timeout, QueueError.self)
        return try await receiveAsync(deadline: deadline) { bytes in
            defer { mp_queue_get_end(self.q) }
            return try self.decodeTaken(bytes)
        } single: {
            $0
        }
    }

    /// Takes up to `max` items, suspending while the queue is empty (up to `timeout`; forever when
    /// nil): the first as ``get(timeout:)-2955o`` does, then the ones already there under the same hold
    /// of the consumer lock (see the blocking `get(max:timeout:)`).
    /// - Returns: Between 1 and `max` items, in queue order (an empty array when `max` is 0 or less).
    /// - Throws: ``QueueError/empty`` after the timeout, ``QueueError`` as the blocking get,
    ///   `CancellationError`.
    nonisolated(nonsending) public func get(max: Int, timeout: Duration? = nil) async throws -> [Element] {
        try checkOpen()
        let deadline = try Deadline.after(timeout, QueueError.self)
        guard max > 0 else { return [] }
        return try await receiveAsync(deadline: deadline) { bytes in
            try self.takeBatch(first: bytes, max: max)
        } single: {
            [$0]
        }
    }

    /// Puts `items` in order, suspending while the queue is full (up to `timeout` in all; forever
    /// when nil) without holding a thread: the runs that find room go in as the blocking
    /// `put(contentsOf:timeout:)` puts them, and where the queue is full the coroutine waits for
    /// room as ``put(_:timeout:)-9pq3n`` does.
    /// - Returns: How many items were put: all of them, unless the timeout passed, the queue was
    ///   shut down or the task was cancelled midway; then the first ones, in order, are in the queue.
    /// - Throws: When not even the first item could be put, as ``put(_:timeout:)-9pq3n``; an encoding
    ///   error or ``QueueError/messageTooLarge(size:limit:)`` before anything is put.
    @discardableResult
    nonisolated(nonsending) public func put(contentsOf items: some Sequence<Element>, timeout: Duration? = nil)
        async throws -> Int
    {
        try checkOpen()
        let deadline = try Deadline.after(timeout, QueueError.self)
        let batch = try EncodedBatch(items, for: self)
        var done = 0
        while done < batch.count {
            let lanes = lanesKeepBatchOrder
            let (put, status) = putRuns(batch, from: done, deadline: 0, lanes: lanes)  // what fits now
            done += put
            if done == batch.count { break }
            if status == MP_SHUTDOWN || status == MP_CORRUPTED {
                if done == 0 { throw Self.putError(status) }
                return done
            }
            // Full, or the producer lock busy: wait for room as a single put does.
            let joinable = countsTasks
            if joinable { mp_queue_task_add(q) }
            do {
                let bytes = batch.message(at: done)
                if UInt64(bytes.count) > mp_queue_max_record(q) {
                    let queue = UnsafeSendable(q)
                    let status = try await toThread {
                        bytes.withUnsafeBytes { mp_queue_put(queue.value, $0.baseAddress, UInt64($0.count), deadline) }
                    }
                    if status != MP_OK { throw Self.putError(status) }
                } else {
                    try await putBytes(bytes, deadline: deadline, lanes: lanes)
                }
            } catch {
                if joinable { mp_queue_task_undo(q) }
                if done == 0 { throw error }
                return done
            }
            done += 1
        }
        return done
    }

    /// The async get's loop: `whole` takes a single-record message with the consumer lock held (and
    /// releases it); `single` wraps an element the other paths produced.
    nonisolated(nonsending) private func receiveAsync<R>(
        deadline: Int64, whole: (UnsafeRawBufferPointer) throws -> R, single: (Element) -> R
    ) async throws -> R {
        var w = mp_async_wait_t()
        var loop: EventLoop? = nil
        while true {
            var payload: UnsafeRawPointer? = nil
            var length: UInt64 = 0
            var total: UInt64 = 0
            switch mp_queue_get_async(q, &w, &payload, &length, &total) {
            case MP_OK:
                if total == length { return try whole(UnsafeRawBufferPointer(start: payload, count: Int(length))) }
                if let whole = try await reassemble(total) {
                    return single(try whole.withUnsafeBytes { try decodeTaken($0) })
                }
                continue  // its producer died midway: take the next message
            case MP_SHUTDOWN: throw QueueError.shutDown
            case MP_CORRUPTED: throw QueueError.corrupted
            case MP_OWNER_DIED:
                // The consumer lock's holder died: the blocking get recovers the lock.
                let slice = min(deadline, Deadline.after(nanoseconds: 100_000_000))
                do {
                    return single(try await toThread { try self.receive(deadline: slice) })
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
    nonisolated(nonsending) private func reassemble(_ total: UInt64) async throws -> [UInt8]? {
        let queue = UnsafeSendable(q)
        return try await BlockingPool.shared.run { () -> [UInt8]? in
            var bytes = [UInt8](repeating: 0, count: Int(total))
            let status = bytes.withUnsafeMutableBytes { mp_queue_get_rest(queue.value, $0.baseAddress!, total) }
            if status == MP_CORRUPTED { throw QueueError.corrupted }
            return status == MP_ABORTED ? nil : bytes
        }
    }
}

extension JoinableQueue {
    /// Suspends until every item put has been marked done (up to `timeout`; forever when nil),
    /// without holding a thread: the coroutine waits on the queue's count of unfinished tasks
    /// through the event loop, so the ``taskDone()`` that finishes the last task, in any thread or
    /// process, wakes it, and the loop runs its other coroutines meanwhile. In async code this
    /// overload is chosen over the blocking `join(timeout:)`.
    /// - Returns: Whether every task was done; false if the timeout passed first.
    /// - Throws: ``QueueError/negativeTimeout(_:)``, `CancellationError`, ``EventLoopError``.
    @discardableResult
    nonisolated(nonsending) public func join(timeout: Duration? = nil) async throws -> Bool {
        try await join(until: Deadline.after(timeout, QueueError.self))
    }

    nonisolated(nonsending) func join(until deadline: Int64) async throws -> Bool {
        var w = mp_async_wait_t()
        defer { mp_queue_join_async_leave(q, &w) }  // a timeout or a cancellation leaves the joiners
        var loop: EventLoop? = nil
        while true {
            if mp_queue_join_async(q, &w) == MP_OK { return true }
            if mp_monotonic_ns() >= deadline { return false }
            if loop == nil { loop = try EventLoop.forCurrentContext() }
            if let error = await loop!.waitOnWord(w, until: deadline).error { throw error }
        }
    }
}

extension SimpleQueue {
    /// Puts `item` (see `Queue.put(_:timeout:)`).
    nonisolated(nonsending) public func put(_ item: Element) async throws { try await queue.put(item, timeout: nil) }

    /// Takes the next item, suspending while there is none (see `Queue.get(timeout:)`).
    nonisolated(nonsending) public func get() async throws -> Element { try await queue.get(timeout: nil) }

    /// Takes the next item, suspending up to `timeout`; throws ``QueueError/empty`` after it.
    nonisolated(nonsending) public func get(timeout: Duration) async throws -> Element {
        try await queue.get(timeout: timeout)
    }
}
