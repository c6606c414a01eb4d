import CMultiprocessing

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
    // A heap buffer, not withUnsafeTemporaryAllocation: that one instantiates generic metadata on
    // first use, after the worker's claim, where a zygote worker that inherited a held runtime lock
    // (the hazard Zygote documents) would hold its task forever; the watchdog only replaces workers
    // stuck before their first claim. A malloc per message costs little next to a round trip.
    let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
    defer { raw.deallocate() }
    fill(raw)
}

/// One message taken from a ring: its bytes stay valid until ``finish()``.
struct TakenMessage {
    let q: UnsafeMutablePointer<mp_queue_view_t>
    /// The whole message (in the ring, or in `heap` when it came in pieces).
    let bytes: UnsafeRawBufferPointer
    private let heap: UnsafeMutableRawBufferPointer?

    /// Waits for the next message (forever when `deadline` is `.max`). Holds the ring's consumer lock
    /// for a single-piece message until ``finish()``. Returns nil when the ring is shut down (or the
    /// deadline passed).
    static func take(_ q: UnsafeMutablePointer<mp_queue_view_t>, deadline: Int64 = .max) -> TakenMessage? {
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
func putMessage(_ q: UnsafeMutablePointer<mp_queue_view_t>, _ message: UnsafeRawBufferPointer) -> Bool {
    mp_queue_put(q, message.baseAddress, UInt64(message.count), .max) == MP_OK
}
