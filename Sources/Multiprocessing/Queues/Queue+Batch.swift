import CMultiprocessing

/// Batches: many messages under one hold of a lock, published with one store and one wake-up check.
extension Queue {
    /// Puts `items` in order, many at a time: each run of messages that finds room is written under
    /// one hold of the producer lock and published with one store, and consumers are woken once per
    /// run (DPDK's bulk enqueue). Waits while the queue is full, up to `timeout` in all (forever
    /// when nil), as ``put(_:timeout:)`` does.
    ///
    /// Every item is encoded before any is put, so an item that cannot be encoded (or is larger
    /// than ``maxMessageSize``) throws and puts nothing.
    ///
    /// - Returns: How many items were put: all of them, unless the timeout passed or the queue was
    ///   shut down midway; then the first ones, in order, are in the queue and the rest are not.
    /// - Throws: ``QueueError/full`` (timeout), ``QueueError/shutDown`` or ``QueueError/corrupted``
    ///   when not even the first item could be put; ``QueueError/closed``, an encoding error,
    ///   ``QueueError/messageTooLarge(size:limit:)`` or ``QueueError/negativeTimeout(_:)`` before
    ///   anything is put.
    @discardableResult
    public final func put(contentsOf items: some Sequence<Element>, timeout: Duration? = nil) throws(QueueError)
        -> Int
    {
        try checkOpen()
        let deadline = try deadline(after: timeout)
        let batch = ContiguousArray(items)
        if batch.isEmpty { return 0 }
        return copiesBits ? try putBits(batch, deadline: deadline) : try putEncoded(batch, deadline: deadline)
    }

    /// Takes up to `max` items: waits for the first as ``get(timeout:)`` does (up to `timeout`;
    /// forever when nil), then takes the ones already there, without waiting, under the same hold
    /// of the consumer lock, and wakes producers once (the Disruptor's batch read).
    ///
    /// - Returns: Between 1 and `max` items, in queue order (an empty array when `max` is 0 or less).
    /// - Throws: As ``get(timeout:)``: ``QueueError/empty`` when none came in time.
    public final func get(max: Int, timeout: Duration? = nil) throws(QueueError) -> [Element] {
        try checkOpen()
        let deadline = try deadline(after: timeout)
        guard max > 0 else { return [] }
        return copiesBits ? try getBits(max: max, deadline: deadline) : try getDecoded(max: max, deadline: deadline)
    }

    // MARK: Fixed-size elements: their bytes, straight between the caller's array and the ring

    private func putBits(_ batch: ContiguousArray<Element>, deadline: Int64) throws(QueueError) -> Int {
        let size = MemoryLayout<Element>.size
        if size > maxMessageSize { throw .messageTooLarge(size: size, limit: maxMessageSize) }
        let outcome = batch.withUnsafeBytes { bytes in
            putAll(count: batch.count) { first, count, put in
                mp_queue_put_batch(
                    q, bytes.baseAddress! + first * MemoryLayout<Element>.stride, nil, UInt64(size),
                    UInt64(MemoryLayout<Element>.stride), UInt64(count), deadline, &put)
            } single: { index in
                mp_queue_put(q, bytes.baseAddress! + index * MemoryLayout<Element>.stride, UInt64(size), deadline)
            }
        }
        return try outcome.get()
    }

    private func getBits(max: Int, deadline: Int64) throws(QueueError) -> [Element] {
        var payload: UnsafeRawPointer? = nil
        var length: UInt64 = 0
        var total: UInt64 = 0
        let status = mp_queue_get_begin(q, deadline, &payload, &length, &total)
        let size = UInt64(MemoryLayout<Element>.size)
        guard status == MP_OK, length == size, total == length, var payload else {
            // A failure, or a message the single get handles (pieces, another size).
            return [try receiveOther(status, payload, length: length, total: total, deadline: deadline)]
        }
        var items: [Element] = []
        items.reserveCapacity(Swift.min(max, 64))
        while true {
            items.append(payload.loadUnaligned(as: Element.self))  // a trivial type: the bytes are the value
            if items.count == max {
                mp_queue_get_end(q)
                return items
            }
            var next: UnsafeRawPointer? = nil
            guard mp_queue_get_next(q, &next, &length) != 0 else { return items }
            guard length == size, let next else {
                mp_queue_get_leave(q)  // another type's message: the next get reports it
                return items
            }
            payload = next
        }
    }

    // MARK: Other elements: encoded, back to back

    private func putEncoded(_ batch: ContiguousArray<Element>, deadline: Int64) throws(QueueError) -> Int {
        var bytes: [UInt8] = []
        var lengths: [UInt64] = []
        var offsets: [Int] = []
        lengths.reserveCapacity(batch.count)
        offsets.reserveCapacity(batch.count)
        for item in batch {
            try codec.withBytes(item, maxMessageSize) { encoded in
                offsets.append(bytes.count)
                lengths.append(UInt64(encoded.count))
                bytes.append(contentsOf: encoded)
            }
        }
        let outcome = bytes.withUnsafeBytes { all in
            lengths.withUnsafeBufferPointer { lengths in
                putAll(count: batch.count) { first, count, put in
                    mp_queue_put_batch(
                        q, all.baseAddress.map { $0 + offsets[first] }, lengths.baseAddress! + first, 0, 0,
                        UInt64(count), deadline, &put)
                } single: { index in
                    mp_queue_put(q, all.baseAddress.map { $0 + offsets[index] }, lengths[index], deadline)
                }
            }
        }
        return try outcome.get()
    }

    private func getDecoded(max: Int, deadline: Int64) throws(QueueError) -> [Element] {
        let next = beginGet(q, deadline)
        guard next.status == MP_OK, next.total == UInt64(next.first.count) else {
            return [
                try receiveOther(
                    next.status, next.first.baseAddress, length: UInt64(next.first.count), total: next.total,
                    deadline: deadline)
            ]
        }
        // Each message is decoded where it lies, under the consumer lock, as a single get does.
        let first: Element
        do {
            first = try codec.decode(next.first)
        } catch {
            mp_queue_get_end(q)  // as a single get: the message that does not decode is the error
            throw error
        }
        var items = [first]
        items.reserveCapacity(Swift.min(max, 64))
        while items.count < max {
            var payload: UnsafeRawPointer? = nil
            var length: UInt64 = 0
            guard mp_queue_get_next(q, &payload, &length) != 0 else { return items }
            do {
                items.append(try codec.decode(UnsafeRawBufferPointer(start: payload, count: Int(length))))
            } catch {
                mp_queue_get_leave(q)  // left in the queue: the next get reports it
                return items
            }
        }
        mp_queue_get_end(q)
        return items
    }

    // MARK: Putting in runs

    /// Puts `count` messages through `batch` (first index, count, put count → status), sending one
    /// alone through `single` where `batch` stops before it (a message that travels in pieces).
    /// Undoes the tasks of a JoinableQueue for the messages not put. The count put, or the error
    /// when none was.
    private func putAll(
        count: Int,
        batch: (_ first: Int, _ count: Int, _ put: inout UInt64) -> mp_status_t,
        single: (_ index: Int) -> mp_status_t
    ) -> Result<Int, QueueError> {
        var done = 0
        var status: mp_status_t = MP_OK
        while done < count, status == MP_OK {
            let chunk = Swift.min(count - done, Int(Int32.max))
            if countsTasks { mp_queue_task_add_many(q, UInt32(chunk)) }  // before they are visible
            var put: UInt64 = 0
            status = batch(done, chunk, &put)
            var finished = Int(put)
            if status == MP_OK, finished < chunk {
                status = single(done + finished)  // larger than one record: streamed alone
                if status == MP_OK { finished += 1 }
            }
            if countsTasks { mp_queue_task_undo_many(q, UInt32(chunk - finished)) }
            done += finished
        }
        if done == 0 {
            return .failure(status == MP_SHUTDOWN ? .shutDown : status == MP_CORRUPTED ? .corrupted : .full)
        }
        return .success(done)
    }
}
