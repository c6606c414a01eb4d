import CMultiprocessing

/// Batches: many messages under one hold of a lock, published with one store and one wake-up check.
extension Queue {
    /// Puts `items` in order, many at a time: each run of messages that finds room is written under
    /// one hold of the producer lock and published with one store, and consumers are woken once per
    /// run (DPDK's bulk enqueue). Waits while the queue is full, up to `timeout` in all (forever
    /// when nil), as ``put(_:timeout:)-yl1l`` does.
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
    @inlinable @discardableResult
    public final func put(contentsOf items: some Sequence<Element>, timeout: Duration? = nil) throws(QueueError)
        -> Int
    {
        try checkOpen()
        let deadline = try Deadline.after(timeout, QueueError.self)
        if copiesBits, !countsTasks, MemoryLayout<Element>.size <= maxMessageSize {
            // Fixed-size values in contiguous storage (an Array): their bytes go straight to the ring.
            if let outcome = items.withContiguousStorageIfAvailable({ putBits($0, deadline: deadline) }) {
                return try outcome.get()
            }
        }
        return try putEncoded(items, deadline: deadline)
    }

    /// The values' own bytes, `stride` apart, put in runs (a single put for one that travels in pieces).
    @inlinable
    final func putBits(_ values: UnsafeBufferPointer<Element>, deadline: Int64) -> Result<Int, QueueError> {
        guard let base = values.baseAddress else { return .success(0) }
        let size = UInt64(MemoryLayout<Element>.size)
        let stride = MemoryLayout<Element>.stride
        var done = 0
        var status: mp_status_t = MP_OK
        while done < values.count, status == MP_OK {
            let chunk = Swift.min(values.count - done, Int(Int32.max))
            var put: UInt64 = 0
            status = mp_queue_put_batch(
                q, UnsafeRawPointer(base + done), nil, size, UInt64(stride), UInt64(chunk), 1, deadline, &put)
            done += Int(put)
            if status == MP_OK, Int(put) < chunk {
                status = mp_queue_put(q, UnsafeRawPointer(base + done), size, deadline)  // streamed alone
                if status == MP_OK { done += 1 }
            }
        }
        return done == 0 && status != MP_OK ? .failure(Self.putError(status)) : .success(done)
    }

    /// Encodes the batch first, then puts it in runs.
    @usableFromInline
    final func putEncoded(_ items: some Sequence<Element>, deadline: Int64) throws(QueueError) -> Int {
        let batch = try EncodedBatch(items, for: self)
        if batch.count == 0 { return 0 }
        let (done, status) = putRuns(batch, from: 0, deadline: deadline)
        if done == 0 { throw Self.putError(status) }
        return done
    }

    /// Takes up to `max` items: waits for the first as ``get(timeout:)-4ik9f`` does (up to `timeout`;
    /// forever when nil), then takes the ones already there, without waiting, under the same hold
    /// of the consumer lock, and wakes producers once (the Disruptor's batch read). It stops before
    /// a message it cannot take (one of another type, or bytes that are no element: reported by
    /// the next get) and before one that travels in pieces.
    ///
    /// - Returns: Between 1 and `max` items, in queue order (an empty array when `max` is 0 or less).
    /// - Throws: As ``get(timeout:)-4ik9f``: ``QueueError/empty`` when none came in time,
    ///   ``QueueError/decodingFailed(_:)`` for a first message that is no element (consumed).
    @inlinable
    public final func get(max: Int, timeout: Duration? = nil) throws(QueueError) -> [Element] {
        try checkOpen()
        let deadline = try Deadline.after(timeout, QueueError.self)
        guard max > 0 else { return [] }
        return copiesBits ? try getBits(max: max, deadline: deadline) : try getDecoded(max: max, deadline: deadline)
    }

    /// Fixed-size values, each loaded where it lies (specialized in the caller, as the single get).
    @inlinable
    final func getBits(max: Int, deadline: Int64) throws(QueueError) -> [Element] {
        var payload: UnsafeRawPointer? = nil
        var length: UInt64 = 0
        var total: UInt64 = 0
        let status = mp_queue_get_begin(q, deadline, &payload, &length, &total)
        let size = UInt64(MemoryLayout<Element>.size)
        guard status == MP_OK, length == size, total == size, let at = payload else {
            // A failure, or a message the single get handles (pieces, another size).
            return [try receiveOther(status, payload, length: length, total: total, deadline: deadline)]
        }
        let first = at.loadUnaligned(as: Element.self)  // a trivial type: the bytes are the value
        // Room for what is there now (the count only grows while we hold the consumer lock), and
        // never for more than the queue can hold: the count comes from shared memory, which a
        // peer may have garbled (a get(max: .max) then asked for terabytes).
        let room = Swift.min(max, 1 + Int(mp_queue_count(q)), mostHeld(ofSize: size))
        return [Element](unsafeUninitializedCapacity: room) { buffer, count in
            buffer.initializeElement(at: 0, to: first)
            count = 1
            if room == 1 {
                mp_queue_get_end(q)
                return
            }
            count += Int(
                mp_queue_get_copies(
                    q, UnsafeMutableRawPointer(buffer.baseAddress! + 1), size, UInt64(MemoryLayout<Element>.stride),
                    UInt64(room - 1)))
        }
    }

    /// The most messages of `size` bytes the queue holds at once: its ring full of their records,
    /// and its lanes full (from this process's view, not the shared header).
    @usableFromInline
    final func mostHeld(ofSize size: UInt64) -> Int {
        let ring = q.pointee.capacity / mp_queue_record_bytes(size)
        let lanes = q.pointee.lanes != nil ? UInt64(MP_QUEUE_LANES) * q.pointee.lane_slots : 0
        return Int(clamping: ring + lanes)
    }

    /// Other elements: decoded where they lie, as a single get decodes.
    @usableFromInline
    final func getDecoded(max: Int, deadline: Int64) throws(QueueError) -> [Element] {
        let next = beginGet(q, deadline)
        guard next.status == MP_OK, next.total == UInt64(next.first.count) else {
            // A failure, or a message that travels in pieces: the single get's path.
            let first = try receiveOther(
                next.status, next.first.baseAddress, length: UInt64(next.first.count), total: next.total,
                deadline: deadline)
            return [first]
        }
        return try takeBatch(first: next.first, max: max)
    }

    // MARK: Taking

    /// With the consumer lock held on a single-record message (from mp_queue_get_begin or its async
    /// form): takes it, then up to `max - 1` more that are already there, each read where it lies
    /// (as a single get does); releases the lock. A first message that does not decode is consumed
    /// and thrown, as a single get's; a later one is left for the next get to report.
    final func takeBatch(first bytes: UnsafeRawBufferPointer, max: Int) throws(QueueError) -> [Element] {
        let first: Element
        do {
            first = try take(bytes)
        } catch {
            if countsTasks { _ = mp_queue_task_done(q) }  // consumed, as decodeTaken's
            mp_queue_get_end(q)
            throw error
        }
        var items = [first]
        items.reserveCapacity(Swift.min(max, 64))
        while items.count < max {
            var payload: UnsafeRawPointer? = nil
            var length: UInt64 = 0
            guard mp_queue_get_next(q, &payload, &length) != 0 else { return items }  // the lock is released
            do {
                items.append(try take(UnsafeRawBufferPointer(start: payload, count: Int(length))))
            } catch {
                mp_queue_get_leave(q)  // left in the queue: the next get reports it
                return items
            }
        }
        mp_queue_get_end(q)
        return items
    }

    /// One message's element: a fixed-size value loaded where it lies, or decoded (and checked).
    private func take(_ bytes: UnsafeRawBufferPointer) throws(QueueError) -> Element {
        if copiesBits, bytes.count == MemoryLayout<Element>.size, let base = bytes.baseAddress {
            return base.loadUnaligned(as: Element.self)  // a trivial type: the bytes are the value
        }
        return try codec.decode(bytes)
    }

    // MARK: Putting in runs

    /// Puts the batch's messages from `start` on in runs (mp_queue_put_batch), sending one alone
    /// where a run stops before it (a message that travels in pieces). Counts the tasks of a
    /// JoinableQueue for exactly the messages put. `lanes` false keeps them out of the calling
    /// thread's lane (mp_queue_put_async). The count put and the status that stopped it.
    final func putRuns(_ batch: EncodedBatch, from start: Int, deadline: Int64, lanes: Bool = true)
        -> (Int, mp_status_t)
    {
        var done = start
        var status: mp_status_t = MP_OK
        batch.withPointers { data, lengths in
            while done < batch.count, status == MP_OK {
                let chunk = Swift.min(batch.count - done, Int(Int32.max))
                if countsTasks { mp_queue_task_add_many(q, UInt32(chunk)) }  // before they are visible
                var put: UInt64 = 0
                status = mp_queue_put_batch(
                    q, data.map { $0 + batch.offset(of: done) }, lengths.map { $0 + done }, UInt64(batch.size),
                    UInt64(batch.stride), UInt64(chunk), lanes ? 1 : 0, deadline, &put)
                var finished = Int(put)
                if status == MP_OK, finished < chunk {
                    // Larger than one record: streamed alone.
                    let index = done + finished
                    status = mp_queue_put(
                        q, data.map { $0 + batch.offset(of: index) }, batch.length(of: index), deadline)
                    if status == MP_OK { finished += 1 }
                }
                if countsTasks { mp_queue_task_undo_many(q, UInt32(chunk - finished)) }
                done += finished
            }
        }
        return (done - start, status)
    }

    @usableFromInline
    static func putError(_ status: mp_status_t) -> QueueError {
        status == MP_SHUTDOWN ? .shutDown : status == MP_CORRUPTED ? .corrupted : .full
    }
}

/// A batch's messages, encoded before any is put: fixed-size elements as the array of their values
/// (each message `size` bytes, `stride` apart), others encoded back to back with their lengths.
struct EncodedBatch {
    let count: Int
    let size: Int
    let stride: Int
    private let bytes: [UInt8]
    private let lengths: [UInt64]
    private let offsets: [Int]

    init<Element>(_ items: some Sequence<Element>, for queue: Queue<Element>) throws(QueueError) {
        var bytes: [UInt8] = []
        var lengths: [UInt64] = []
        var offsets: [Int] = []
        var count = 0
        if queue.copiesBits {
            let size = MemoryLayout<Element>.size
            if size > queue.maxMessageSize { throw .messageTooLarge(size: size, limit: queue.maxMessageSize) }
            let values = ContiguousArray(items)
            bytes = values.withUnsafeBytes { [UInt8]($0) }
            count = values.count
            self.size = size
            self.stride = MemoryLayout<Element>.stride
        } else {
            for item in items {
                try queue.codec.withBytes(item, queue.maxMessageSize) { encoded in
                    offsets.append(bytes.count)
                    lengths.append(UInt64(encoded.count))
                    bytes.append(contentsOf: encoded)
                }
                count += 1
            }
            self.size = 0
            self.stride = 0
        }
        self.count = count
        self.bytes = bytes
        self.lengths = lengths
        self.offsets = offsets
    }

    /// Where message `index` starts in the batch's bytes.
    func offset(of index: Int) -> Int { lengths.isEmpty ? index * stride : offsets[index] }

    /// Message `index`'s length.
    func length(of index: Int) -> UInt64 { lengths.isEmpty ? UInt64(size) : lengths[index] }

    /// Message `index`'s bytes, on their own.
    func message(at index: Int) -> [UInt8] {
        let start = offset(of: index)
        return Array(bytes[start..<(start + Int(length(of: index)))])
    }

    /// The bytes, and the lengths (nil for fixed-size messages), for the C calls.
    func withPointers<R>(_ body: (UnsafeRawPointer?, UnsafePointer<UInt64>?) -> R) -> R {
        bytes.withUnsafeBytes { data in
            lengths.withUnsafeBufferPointer { lengths in
                body(data.baseAddress, lengths.isEmpty ? nil : lengths.baseAddress)
            }
        }
    }
}
