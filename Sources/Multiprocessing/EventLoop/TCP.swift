import CMultiprocessing
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A listening TCP socket whose connections are accepted through the event loop's io_uring.
///
/// ```swift
/// let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
/// let connection = try await listener.accept()
/// ```
public final class TCPListener: @unchecked Sendable {
    let descriptor: Descriptor
    /// The port it listens on (the one the system chose for port 0).
    public let port: UInt16

    private init(fd: Int32) throws(IOError) {
        descriptor = Descriptor(fd)
        port = UInt16(try ioCount(mp_socket_port(fd, 0), "getsockname"))
    }

    /// Listens on `host` (an IPv4 or IPv6 address, or a name) and `port` (0: any free one).
    nonisolated(nonsending) public static func listen(host: String = "127.0.0.1", port: UInt16 = 0, backlog: Int = 128)
        async throws
        -> TCPListener
    {
        let address = try await SocketAddress.resolve(host, port)
        let fd = withUnsafePointer(to: address.raw) { mp_tcp_listen($0, Int32(clamping: backlog)) }
        return try TCPListener(fd: Int32(try ioCount(fd, "listen")))
    }

    /// Waits for the next connection.
    nonisolated(nonsending) public func accept() async throws -> TCPConnection {
        let fd = try descriptor.get()
        let loop = try EventLoop.forCurrentContext()
        let result = try await loop.perform(.accept(fd: fd))
        if result < 0 && descriptor.value == nil { throw IOError.closed }  // closed while it waited
        let accepted = try ioCount(result, "accept")
        return TCPConnection(fd: Int32(accepted), noDelaySet: true)  // inherited from the listener
    }

    /// Stops listening; an accept waiting on it throws ``IOError/closed``. Throws
    /// ``IOError/closed`` if it already did.
    nonisolated(nonsending) public func close() async throws { try descriptor.closeNow() }
}

/// A TCP connection whose sends and receives go through the event loop's io_uring.
///
/// Small writes leave at once (TCP_NODELAY). A send to a peer that has gone throws
/// ``IOError/system(_:function:)`` with `.brokenPipe` or `.connectionReset` (never SIGPIPE).
public final class TCPConnection: @unchecked Sendable {
    let descriptor: Descriptor
    /// What the connection keeps under its lock. `unread`: bytes taken from the socket but not yet
    /// returned, what a ``receive(exactly:)`` cut short (by a timeout, a cancellation, an error, or
    /// the peer's end of stream) had received; the next receive returns them first, so that a
    /// stream loses no byte to a receive that gave up. `senders`: the sends that wait for their
    /// turn (SendTurns.swift). One lock for both: each lock is an allocation per connection (a
    /// lock and an object of their own cost 2 400 instructions per round trip, most in malloc).
    var kept: Locked<Kept> {
        if let box = keptBox.load() { return box.kept }
        return keptBox.storeIfNil(KeptBox()).kept
    }
    struct Kept {
        var unread: ArraySlice<UInt8> = []
        var senders = WaitingSenders()
    }
    /// `kept`, made at its first use: a connection whose receives never give up and whose sends
    /// never wait for each other (most) makes none. Made at init, it cost every connection about
    /// 500 instructions (an allocation, its lock's set-up, its free).
    private let keptBox = AtomicLazyReference<KeptBox>()
    final class KeptBox: Sendable { let kept = Locked<Kept>(Kept()) }
    /// Whether `unread` may hold bytes: the receive's straight path reads this flag, not the lock.
    private let mayHaveUnread = Atomic<Bool>(false)
    /// Whether a receive is under way: one reader at a time (see ``IOError/alreadyReceiving``).
    private let receiving = Atomic<Bool>(false)
    /// Whose turn it is to send (SendTurns.swift): one send at a time, in order, so that the bytes
    /// of two sends never interleave.
    let sendTurn = Atomic<UInt8>(0)

    /// Owns `fd`, and sets TCP_NODELAY on it unless `noDelaySet` (an accepted socket inherits it
    /// from its listener, which ``TCPListener/listen(host:port:backlog:)`` sets it on).
    init(fd: Int32, noDelaySet: Bool = false) {
        descriptor = Descriptor(fd)
        if !noDelaySet { _ = mp_tcp_nodelay(fd) }
    }

    /// Connects to `host` (an address or a name) and `port`.
    ///
    /// A connect to a nearby host does its whole handshake in the kernel call that submits it.
    /// Where the loop's thread may run on more than one CPU, connects that a loop submits together (many
    /// tasks connecting at once) go to the kernel's io_uring workers (threads named `iou-wrk-*`)
    /// beyond the first, so that their handshakes run beside the loop; a connect on its own stays
    /// on the loop's thread.
    /// - Throws: ``IOError/system(_:function:)`` with `.connectionRefused` when nobody listens.
    nonisolated(nonsending) public static func connect(host: String, port: UInt16) async throws -> TCPConnection {
        let address = try await SocketAddress.resolve(host, port)
        let fd = Int32(try ioCount(withUnsafePointer(to: address.raw) { mp_tcp_socket($0) }, "socket"))
        let connection = TCPConnection(fd: fd)
        let loop = try EventLoop.forCurrentContext()
        _ = try ioCount(await loop.perform(.connect(fd: fd, address: address.raw)), "connect")
        return connection  // TCP_NODELAY, set on the socket before the connect, holds after it
    }

    /// The local port.
    public var localPort: UInt16? { descriptor.value.flatMap { fd in UInt16(exactly: mp_socket_port(fd, 0)) } }
    /// The peer's port.
    public var remotePort: UInt16? { descriptor.value.flatMap { fd in UInt16(exactly: mp_socket_port(fd, 1)) } }

    /// Sends all of `bytes`.
    ///
    /// What the socket's buffer takes at once is sent by the calling thread, without the ring; the
    /// rest, if any, goes through the ring, which waits for room. (A send through the ring makes the
    /// same first try in the kernel, after a suspension, a continuation and a cancellation record:
    /// about 5 000 instructions more per send.)
    ///
    /// Sends from several tasks go out one after another, whole, in the order they were called:
    /// a send waits for the one before it to finish (a cancellation while it waits throws
    /// `CancellationError` and sends nothing).
    nonisolated(nonsending) public func send(_ bytes: [UInt8]) async throws {
        _ = try descriptor.get()
        if bytes.isEmpty { return }
        try Task.checkCancellation()
        guard await takeSendTurn() else { throw CancellationError() }
        defer { giveSendTurn() }
        let fd = try descriptor.get()  // again: closed while this send waited for its turn
        let sent = bytes.withUnsafeBytes { mp_tcp_send_now(fd, $0.baseAddress!, UInt32(clamping: $0.count)) }
        if sent != -EAGAIN { _ = try ioCount(sent, "send") }
        var done = max(Int(sent), 0)
        if done == bytes.count { return }
        let loop = try EventLoop.forCurrentContext()
        let buffer = IOBuffer.copying(bytes[done...])
        let offset = done
        while done < bytes.count {
            // Looked up for each piece: once the connection is closed, its number may be another
            // descriptor's, and the rest of the bytes must not go there.
            let fd = try descriptor.get()
            let start = done - offset
            let length = UInt32(clamping: bytes.count - done)
            let result = try await loop.perform(
                .send(fd: fd, bytes: buffer.base + start, length: length), keeping: buffer)
            if result < 0 && descriptor.value == nil { throw IOError.closed }  // closed while it waited
            done += try ioCount(result, "send")
        }
    }

    /// Receives what has arrived, up to `maxBytes` (waiting for at least one byte); an empty array
    /// once the peer has closed its side. Bytes that a ``receive(exactly:)`` which gave up had
    /// received come first, without waiting.
    ///
    /// Up to 4 096 bytes (`MP_RECV_BUFFER_SIZE`) arrive in a buffer the kernel picks from the
    /// loop's ring when the data comes: a receive that waits holds no memory, and the only
    /// allocation is the returned array. Larger receives, and receives that find every buffer of
    /// the ring taken, use a buffer of their own.
    ///
    /// - Throws: ``IOError/alreadyReceiving`` while another receive on this connection waits.
    nonisolated(nonsending) public func receive(upTo maxBytes: Int = 65536) async throws -> [UInt8] {
        guard maxBytes > 0 else { throw IOError.invalidArgument("maxBytes \(maxBytes)") }
        try beginReceive()
        defer { receiving.store(false, ordering: .releasing) }
        return try await receiveHeld(upTo: maxBytes)
    }

    /// Claims the connection's reading side for one receive, or throws if another receive has it.
    private func beginReceive() throws(IOError) {
        // Sequentially consistent: see `close()`.
        guard receiving.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged
        else {
            throw .alreadyReceiving
        }
    }

    /// `receive(upTo:)` by the receive that holds the reading side. Inlined into both receives:
    /// an async call of its own is a frame allocated and freed (about 120 instructions).
    @inline(__always)
    nonisolated(nonsending) private func receiveHeld(upTo maxBytes: Int) async throws -> [UInt8] {
        let fd = try descriptor.get()
        if mayHaveUnread.load(ordering: .acquiring), let bytes = takeUnread(upTo: maxBytes) { return bytes }
        let loop = try EventLoop.forCurrentContext()
        let length = UInt32(clamping: maxBytes)
        if maxBytes <= Int(MP_RECV_BUFFER_SIZE) {
            let (n, bytes) = try await loop.receiveSelected(fd: fd, length: length)
            if n != -ENOBUFS && n != -EOPNOTSUPP {
                try checkOpen(after: n)
                _ = try ioCount(n, "recv")
                return bytes
            }
            // Looked up again: closed while the first receive waited, its number may be another's.
            return try await receive(fd: try descriptor.get(), maxBytes, on: loop)
        }
        return try await receive(fd: fd, maxBytes, on: loop)
    }

    /// A receive into a buffer of its own.
    @inline(__always)
    nonisolated(nonsending) private func receive(fd: Int32, _ maxBytes: Int, on loop: EventLoop) async throws
        -> [UInt8]
    {
        let buffer = IOBuffer.make(count: maxBytes)
        let length = UInt32(clamping: maxBytes)
        let n = try await loop.perform(.receive(fd: fd, into: buffer.base, length: length), keeping: buffer)
        try checkOpen(after: n)
        return buffer.bytes(try ioCount(n, "recv"))
    }

    /// A receive that found no bytes (the end of the stream, or an error) because this program
    /// closed the connection while it waited: ``IOError/closed``, not the peer's end of stream.
    private func checkOpen(after result: Int32) throws(IOError) {
        if result <= 0 && descriptor.value == nil { throw .closed }
    }

    /// Receives exactly `count` bytes; nil if the peer closes first.
    ///
    /// Nothing is lost when it gives up: if the peer closes first, or the receive throws (a
    /// ``withTimeout(_:_:)`` around it that expires, its task cancelled, an error), the bytes it
    /// had already received stay with the connection, and the next receive returns them first
    /// (as asyncio's `readexactly` leaves them in the stream's buffer).
    ///
    /// Memory grows with the bytes that arrive, not with `count` up front (a count read from the
    /// peer, a length prefix, may be anything): each receive asks for at most 64 KiB.
    ///
    /// - Throws: ``IOError/alreadyReceiving`` while another receive on this connection waits.
    nonisolated(nonsending) public func receive(exactly count: Int) async throws -> [UInt8]? {
        guard count >= 0 else { throw IOError.invalidArgument("count \(count)") }
        try beginReceive()
        defer { receiving.store(false, ordering: .releasing) }
        var bytes: [UInt8] = []
        if count > 0, mayHaveUnread.load(ordering: .acquiring), let kept = takeUnread(upTo: count) { bytes = kept }
        while bytes.count < count {
            let chunk: [UInt8]
            do {
                chunk = try await receiveHeld(upTo: min(count - bytes.count, 65536))
            } catch {
                keepUnread(bytes)
                throw error
            }
            if chunk.isEmpty {
                keepUnread(bytes)
                return nil
            }
            // The first piece is kept as it came, often the whole message: no array of our own
            // and no copy (an allocation, about 400 instructions).
            if bytes.isEmpty {
                bytes = chunk
            } else {
                bytes += chunk  // grows by doubling, as the bytes arrive
            }
        }
        return bytes
    }

    /// Up to `maxBytes` of the bytes kept by a receive that gave up, oldest first; nil if none. A
    /// slice, so that taking a little at a time from a large remainder copies each byte once.
    private func takeUnread(upTo maxBytes: Int) -> [UInt8]? {
        kept.withLock { k -> [UInt8]? in
            if k.unread.isEmpty { return nil }
            let taken = Array(k.unread.prefix(maxBytes))
            k.unread = k.unread.count <= maxBytes ? [] : k.unread.dropFirst(maxBytes)
            mayHaveUnread.store(!k.unread.isEmpty, ordering: .releasing)
            return taken
        }
    }

    /// Puts `bytes` back before the bytes kept already (they were received before them: a
    /// receive takes the kept bytes first and receives from the socket only once none are left).
    private func keepUnread(_ bytes: [UInt8]) {
        if bytes.isEmpty { return }
        kept.withLock { k in
            k.unread = ArraySlice(bytes + k.unread)
            mayHaveUnread.store(true, ordering: .releasing)
        }
    }

    /// Closes the connection; a receive or send waiting on it throws ``IOError/closed``. Throws
    /// ``IOError/closed`` if it already was.
    ///
    /// The shutdown that ends an operation in flight (see `Descriptor.closeNow()`) is made only if
    /// a receive or a send is under way: a connection's usual close, with neither, is one system
    /// call, not two. A receive sets `receiving`, and a send takes `sendTurn`, before it reads the
    /// descriptor; the close reads both after taking it. All four accesses are sequentially
    /// consistent, so either the operation finds the descriptor gone or the close sees it.
    nonisolated(nonsending) public func close() async throws {
        try descriptor.closeNow(shuttingDownIf: {
            receiving.load(ordering: .sequentiallyConsistent) || sendTurn.load(ordering: .sequentiallyConsistent) != 0
        })
    }
}

/// A resolved TCP address, as a value (no allocation): the ring copies it when a connect is queued.
struct SocketAddress: Sendable {
    let raw: mp_socket_address_t

    /// A numeric address at once, without a call of its own (inlined into the caller's frame: an
    /// async call is a frame allocated and freed); a name on a helper thread (getaddrinfo blocks).
    @inline(__always)
    nonisolated(nonsending) static func resolve(_ host: String, _ port: UInt16) async throws -> SocketAddress {
        if let numeric = numeric(host, port) { return numeric }
        return try await resolveName(host, port)
    }

    /// `host` as an address literal, or nil if it is a name.
    static func numeric(_ host: String, _ port: UInt16) -> SocketAddress? {
        var raw = mp_socket_address_t()
        // withCString, not the implicit conversion, which copies a small string (an address such
        // as "127.0.0.1") into an allocated array; withCString copies it on the stack.
        let rc = host.withCString { mp_resolve($0, port, 1, &raw) }
        return rc == 0 ? SocketAddress(raw: raw) : nil
    }

    nonisolated(nonsending) private static func resolveName(_ host: String, _ port: UInt16) async throws
        -> SocketAddress
    {
        try await toThread { () throws(IOError) -> SocketAddress in
            var raw = mp_socket_address_t()
            let rc = host.withCString { mp_resolve($0, port, 0, &raw) }
            if rc != 0 { throw .hostNotFound(host, reason: String(cString: mp_resolve_error(rc))) }
            return SocketAddress(raw: raw)
        }
    }
}
