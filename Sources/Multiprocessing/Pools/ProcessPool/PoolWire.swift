import CMultiprocessing

/// The messages of a process pool, as bytes in its two shared-memory rings.
///
/// Task ring (parent to workers): a ``TaskHeader`` and the inputs. Result ring (workers, the
/// watcher thread and the pool itself to the result thread): a ``ResultHeader`` and the outputs or
/// a ``RemoteFailure``. Both sides run the same program, so headers travel in native layout.
struct TaskHeader {
    var id: UInt64
    var count: UInt32
    /// A ``TaskForm`` (plain integers only: the header is loaded from raw bytes).
    var form: UInt32

    static let size = MemoryLayout<TaskHeader>.size
}

enum TaskForm: UInt32 {
    /// One input, encoded alone (applyAsync, apply, run).
    case single = 1
    /// `count` inputs (a chunk of map or imap).
    case chunk = 2
}

struct ResultHeader {
    var id: UInt64
    /// A ``ResultKind``.
    var kind: UInt32
    /// Outputs in the message, or the exit code of an exited worker.
    var count: Int32
    /// The worker's index in the pool.
    var worker: UInt32
    var pid: Int32

    static let size = MemoryLayout<ResultHeader>.size
}

enum ResultKind: UInt32 {
    /// One output (the answer to a `.single` task).
    case value = 1
    /// `count` outputs (a chunk).
    case values = 2
    /// The work function threw, or the data could not be coded: a ``RemoteFailure`` follows.
    case failure = 3
    /// From the watcher thread: the worker exited (`count` holds its Python-style exit code).
    case workerExited = 4
    /// The worker's initializer threw: a ``RemoteFailure`` follows.
    case initializerFailed = 5
    /// From the pool: the result thread should stop.
    case stop = 6
}

extension RemoteFailure {
    /// Whether the failure is the data's (coding), not the work function's.
    var poolError: PoolError {
        type == RemoteFailure.codingType ? .coding(message) : .taskFailed(type: type, message: message)
    }

    static let codingType = "Multiprocessing.PoolError.coding"

    static func coding(_ error: any Error) -> RemoteFailure {
        var failure = RemoteFailure(error)
        failure.type = codingType
        return failure
    }
}

/// How one side of a pool turns its values into bytes and back: fixed-size trivial values are
/// copied as they are (a chunk of a million `Int`s is one copy), any other `Codable` value goes
/// through ``BinaryCoding``.
struct ValueCodec<Value: Codable>: Sendable {
    let bitwise: Bool

    init() { bitwise = _isPOD(Value.self) }

    /// Calls `body` with the bytes of `value`.
    func withBytes(of value: Value, _ body: (UnsafeRawBufferPointer) -> Void) throws(PoolError) {
        if bitwise {
            withUnsafeBytes(of: value) { body($0) }
            return
        }
        do { try BinaryCoding.withEncoding(of: value, body) } catch { throw .coding(String(describing: error)) }
    }

    /// Calls `body` with the bytes of `values`.
    func withBytes(of values: ArraySlice<Value>, _ body: (UnsafeRawBufferPointer) -> Void) throws(PoolError) {
        if bitwise {
            values.withUnsafeBytes { body($0) }
            return
        }
        do { try BinaryCoding.withEncoding(of: Array(values), body) } catch {
            throw .coding(String(describing: error))
        }
    }

    func decode(_ bytes: UnsafeRawBufferPointer) throws(PoolError) -> Value {
        if bitwise {
            guard bytes.count == MemoryLayout<Value>.size else {
                throw .coding("\(bytes.count) bytes are not a \(Value.self)")
            }
            // A trivial type: the bytes are the value. A plain load, not a temporary allocation,
            // whose generic Result metadata a forked worker might have to instantiate (see withMessage).
            return bytes.loadUnaligned(as: Value.self)
        }
        do { return try BinaryCoding.decode(Value.self, from: bytes) } catch {
            throw .coding(String(describing: error))
        }
    }

    func decode(_ bytes: UnsafeRawBufferPointer, count: Int) throws(PoolError) -> [Value] {
        if bitwise {
            let stride = MemoryLayout<Value>.stride
            guard count >= 0, bytes.count == count * stride else {
                throw .coding("\(bytes.count) bytes are not \(count) × \(Value.self)")
            }
            return [Value](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0 {
                    UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(
                        from: bytes.baseAddress!, byteCount: bytes.count)
                }
                initialized = count
            }
        }
        let values: [Value]
        do { values = try BinaryCoding.decode([Value].self, from: bytes) } catch {
            throw .coding(String(describing: error))
        }
        guard values.count == count else { throw .coding("\(values.count) values where \(count) were sent") }
        return values
    }
}

/// Calls `body` with a message made of a header and a payload, contiguous.
func withMessage<Header>(
    _ header: Header, size headerSize: Int, payload: UnsafeRawBufferPointer,
    _ body: (UnsafeRawBufferPointer) -> Void
) {
    let total = headerSize + payload.count
    func fill(_ raw: UnsafeMutableRawBufferPointer) {
        withUnsafeBytes(of: header) { raw.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: headerSize) }
        if payload.count > 0 {
            (raw.baseAddress! + headerSize).copyMemory(from: payload.baseAddress!, byteCount: payload.count)
        }
        body(UnsafeRawBufferPointer(raw))
    }
    // A heap buffer, not withUnsafeTemporaryAllocation: that one instantiates generic Result
    // metadata on first use, behind a runtime lock that a forked worker inherits held when another
    // thread of the parent was taking it at the fork, and a worker stuck after claiming a task
    // would hold that task forever (the watchdog only replaces workers stuck before their first
    // claim). A malloc per message costs little next to a task's round trip.
    let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
    defer { raw.deallocate() }
    fill(raw)
}

/// One message taken from a ring: its bytes stay valid until ``finish()``.
struct TakenMessage {
    let q: UnsafeMutablePointer<mp_queue_t>
    /// The whole message (in the ring, or in `heap` when it came in pieces).
    let bytes: UnsafeRawBufferPointer
    private let heap: UnsafeMutableRawBufferPointer?

    /// Waits for the next message (forever when `deadline` is `.max`). Holds the ring's consumer lock
    /// for a single-piece message until ``finish()``. Returns nil when the ring is shut down (or the
    /// deadline passed).
    static func take(_ q: UnsafeMutablePointer<mp_queue_t>, deadline: Int64 = .max) -> TakenMessage? {
        while true {
            let next = beginGet(q, deadline)
            guard next.status == MP_OK else { return nil }
            if next.total == UInt64(next.first.count) { return TakenMessage(q: q, bytes: next.first, heap: nil) }
            let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(next.total), alignment: 16)
            if mp_queue_get_rest(q, whole.baseAddress!, next.total) == MP_OK {
                return TakenMessage(q: q, bytes: UnsafeRawBufferPointer(whole), heap: whole)
            }
            whole.deallocate()  // its producer died midway: take the next message
        }
    }

    /// Consumes the message (if still in the ring) and frees what it used.
    func finish() {
        if let heap { heap.deallocate() } else { mp_queue_get_end(q) }
    }

    func header<Header>(_ type: Header.Type) -> Header {
        bytes.loadUnaligned(as: Header.self)
    }

    func payload(after headerSize: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[headerSize...])
    }
}

/// Puts `message` into `q`, waiting for room; false if the ring was shut down.
@discardableResult
func putMessage(_ q: UnsafeMutablePointer<mp_queue_t>, _ message: UnsafeRawBufferPointer) -> Bool {
    mp_queue_put(q, message.baseAddress, UInt64(message.count), .max) == MP_OK
}
