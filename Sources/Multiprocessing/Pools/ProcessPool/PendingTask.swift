/// Where the outcome of a process pool's task goes: the task's ``AsyncResult`` (a single input),
/// or the ``ChunkSink`` of the `map` or `imap` call the task is a chunk of. ``PoolCore`` moves only
/// bytes; the typed side decodes them here, on the result thread (or fails a task that could not be
/// submitted on the submitting one).
protocol TaskReceiver: AnyObject, Sendable {
    /// Decodes the `count` outputs of chunk `chunk` (sent as `kind`) from `payload` and settles it.
    func receive(chunk: Int, kind: ResultKind, count: Int, payload: UnsafeRawBufferPointer)
    /// Settles chunk `chunk` with `error`.
    func fail(chunk: Int, _ error: any Error)
}

/// An unfinished task of a process pool, as its ``PendingTable`` keeps it: the receiver of its
/// outcome and, for a chunk of a `map` or `imap` call, its index in the call (0 for a single task;
/// the index travels here, not in a wrapper object per task).
struct PendingTask {
    let receiver: any TaskReceiver
    let chunk: Int
    /// When it was submitted (monotonic ns), for the pool's observer; 0 when there is none.
    var submitted: Int64 = 0

    init(_ receiver: any TaskReceiver, chunk: Int = 0) {
        self.receiver = receiver
        self.chunk = chunk
    }

    func receive(kind: ResultKind, count: Int, payload: UnsafeRawBufferPointer) {
        receiver.receive(chunk: chunk, kind: kind, count: count, payload: payload)
    }

    func fail(_ error: any Error) { receiver.fail(chunk: chunk, error) }
}

extension AsyncResult: TaskReceiver where Value: Codable {
    func receive(chunk _: Int, kind: ResultKind, count _: Int, payload: UnsafeRawBufferPointer) {
        guard kind == .value else { return complete(error: PoolError.coding("a chunk's result for a single task")) }
        do { complete(value: try ValueCodec<Value>().decode(payload)) } catch { complete(error: error) }
    }

    func fail(chunk _: Int, _ error: any Error) { complete(error: error) }
}

extension ChunkSink: TaskReceiver where Output: Codable {
    func receive(chunk: Int, kind: ResultKind, count: Int, payload: UnsafeRawBufferPointer) {
        guard kind == .values else {
            return deliver(chunk: chunk, .failure(PoolError.coding("a single result for a chunk")))
        }
        do { deliver(chunk: chunk, .success(try ValueCodec<Output>().decode(payload, count: count))) } catch {
            deliver(chunk: chunk, .failure(error))
        }
    }

    func fail(chunk: Int, _ error: any Error) { deliver(chunk: chunk, .failure(error)) }
}
