import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Errors of ``Connection`` (the two ends of a ``Pipe``).
public enum ConnectionError: Error, Equatable, Sendable {
    /// This end was closed in this process.
    case closed
    /// The other end was closed: nothing more will arrive (Python's `EOFError`).
    case endOfFile
    /// `receive(timeout:)` found nothing in time (one name for one meaning: ``PoolError/timeout``).
    case timeout
    /// The earlier name of ``timeout``.
    @available(*, deprecated, renamed: "timeout")
    public static var timedOut: ConnectionError { .timeout }
    /// A timeout below zero.
    case negativeTimeout(Duration)
    /// A message over 4 GiB - 1 bytes.
    case messageTooLarge(Int)
    /// Sending on a receive-only end, or receiving on a send-only end (`Pipe.make(duplex: false)`).
    case wrongDirection
    /// A message could not be encoded, or decoded as the requested type.
    case encodingFailed(String)
    case decodingFailed(String)
    /// The operating system refused; `function` names the call.
    case system(Errno, function: String)
}

/// A pipe between two processes or threads (Python's `multiprocessing.Pipe`).
public enum Pipe {
    /// Two connected ends. Duplex (the default): both send and receive, over a socket pair.
    /// Simplex: the first end only receives and the second only sends, as in Python.
    public static func make(duplex: Bool = true) throws(ConnectionError) -> (Connection, Connection) {
        var fds: [Int32] = [-1, -1]
        // Both return 0 or -errno (the global errno may belong to another call by then).
        let rc = duplex ? mp_stream_socketpair(&fds) : mp_pipe(&fds)
        guard rc == 0 else { throw .system(Errno(rawValue: -rc), function: duplex ? "socketpair" : "pipe2") }
        return (
            Connection(fd: fds[0], readable: true, writable: duplex),
            Connection(fd: fds[1], readable: duplex, writable: true)
        )
    }
}

/// One end of a ``Pipe``: sends and receives whole messages (length-prefixed frames), `Codable`
/// values in a compact binary encoding, or raw bytes.
///
/// A forked child inherits both ends; a spawned child receives an end in its arguments (it is
/// `Codable`: the descriptor is kept open across the spawn). Sends are atomic with respect to
/// other threads of this process, and so are receives. Decoding the same end twice in one process
/// gives two objects for one end: they share its descriptor, which closes when both are gone (or
/// at ``close()`` on either).
public final class Connection: @unchecked Sendable, Codable {
    private let end: Endpoint
    /// Whether this end can receive.
    public let readable: Bool
    /// Whether this end can send.
    public let writable: Bool

    init(fd: Int32, readable: Bool, writable: Bool) {
        end = Endpoints.adopt(fd)
        self.readable = readable
        self.writable = writable
    }

    /// The descriptor, for `poll`/`select` by the user; -1 once closed.
    public var fileDescriptor: Int32 { end.fileDescriptor }

    /// Whether ``close()`` has been called on this end here.
    public var isClosed: Bool { fileDescriptor < 0 }

    private func descriptor() throws(ConnectionError) -> Int32 {
        let fd = fileDescriptor
        if fd < 0 { throw .closed }
        return fd
    }

    /// Sends `value`.
    public func send<T: Encodable>(_ value: T) throws(ConnectionError) {
        var bytes: [UInt8] = []
        do { try BinaryCoding.encode(value, into: &bytes) } catch { throw .encodingFailed(String(describing: error)) }
        try sendBytes(bytes)
    }

    /// Receives the next value, waiting for it.
    public func receive<T: Decodable>(_ type: T.Type = T.self) throws(ConnectionError) -> T {
        let bytes = try receiveBytes()
        do {
            return try bytes.withUnsafeBytes { raw throws(BinaryCodingError) in try BinaryCoding.decode(type, from: raw)
            }
        } catch {
            throw .decodingFailed(String(describing: error))
        }
    }

    /// Receives the next value, waiting up to `timeout`; throws ``ConnectionError/timeout``.
    public func receive<T: Decodable>(_ type: T.Type = T.self, timeout: Duration) throws(ConnectionError) -> T {
        guard try poll(timeout: timeout) else { throw .timeout }
        return try receive(type)
    }

    /// Sends `bytes` as one message.
    @inlinable
    public func sendBytes(_ bytes: some Collection<UInt8>) throws(ConnectionError) {
        // Inlinable, so that it is specialized where it is called: contiguous bytes (an array, a
        // buffer, `Data`) go to `sendFrame` as they are. Unspecialized, the generic code
        // instantiated metadata and looked up conformances at run time, whose caches a forked child
        // starts without: about 50 µs of a forkserver child's first message.
        let sent = bytes.withContiguousStorageIfAvailable { body in
            Result { () throws(ConnectionError) in try sendFrame(UnsafeRawBufferPointer(body)) }
        }
        if let sent { return try sent.get() }
        try Array(bytes).withUnsafeBytes { body in Result { () throws(ConnectionError) in try sendFrame(body) } }.get()
    }

    /// Sends `body` as one message: its length and its bytes in one buffer, written whole under the
    /// send lock (a pipe keeps a write of at most `PIPE_BUF` bytes from interleaving with another
    /// process's).
    @usableFromInline
    func sendFrame(_ body: UnsafeRawBufferPointer) throws(ConnectionError) {
        guard writable else { throw .wrongDirection }
        guard body.count <= Int(UInt32.max) else { throw .messageTooLarge(body.count) }
        let fd = try descriptor()
        let frame = [UInt8](unsafeUninitializedCapacity: 4 + body.count) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            raw.storeBytes(of: UInt32(body.count).littleEndian, toByteOffset: 0, as: UInt32.self)
            if let base = body.baseAddress { (raw.baseAddress! + 4).copyMemory(from: base, byteCount: body.count) }
            initialized = 4 + body.count
        }
        try end.sendLock.withLock { () throws(ConnectionError) in
            try frame.withUnsafeBytes { raw in Result { () throws(ConnectionError) in try writeAll(fd, raw) } }.get()
        }
    }

    /// Receives the next message's bytes, waiting for it.
    public func receiveBytes() throws(ConnectionError) -> [UInt8] {
        guard readable else { throw .wrongDirection }
        let fd = try descriptor()
        return try end.receiveLock.withLock { () throws(ConnectionError) -> [UInt8] in
            var header = [UInt8](repeating: 0, count: 4)
            try header.withUnsafeMutableBytes { raw in Result { () throws(ConnectionError) in try readAll(fd, raw) } }
                .get()
            let length = Int(header.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) })
            return try readBody(fd, length: length)
        }
    }

    /// The first piece of a message's body that a receive makes room for: a message up to this
    /// size arrives in one buffer of its exact size.
    static let firstPiece = 1 << 20

    /// A body of `length` bytes, as the header announced it. The other end wrote that header and
    /// may say anything up to 4 GiB: the buffer grows with the bytes that arrive (the first piece,
    /// then doubling), so an end that announces 4 GiB and sends 10 bytes costs 1 MiB, not 4 GiB.
    /// (Unsafe buffers, not slices or `repeatElement`: a child forked from a busy process may run
    /// this, and must not instantiate generic metadata its parent never made.)
    private func readBody(_ fd: Int32, length: Int) throws(ConnectionError) -> [UInt8] {
        var body: [UInt8] = []
        var failure: ConnectionError?
        while body.count < length, failure == nil {
            let have = body.count
            let size = min(length, max(2 * have, Connection.firstPiece))
            body = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                let base = UnsafeMutableRawPointer(buffer.baseAddress!)
                if have > 0 { body.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: have) } }
                do throws(ConnectionError) {
                    try readAll(fd, UnsafeMutableRawBufferPointer(start: base + have, count: size - have))
                    count = size
                } catch {
                    failure = error
                    count = have
                }
            }
        }
        if let failure { throw failure }
        return body
    }

    /// Whether a message (or the end of the stream) can be read without waiting, after waiting up
    /// to `timeout` for one (nil: forever).
    public func poll(timeout: Duration? = .zero) throws(ConnectionError) -> Bool {
        guard readable else { throw .wrongDirection }
        let fd = try descriptor()
        let rc = mp_poll_readable(fd, try Deadline.after(timeout, ConnectionError.self))
        if rc < 0 { throw .system(Errno(rawValue: -rc), function: "ppoll") }
        return rc == 1
    }

    /// Closes this end here (the other end then reads ``ConnectionError/endOfFile``).
    public func close() { end.close() }

    private func writeAll(_ fd: Int32, _ raw: UnsafeRawBufferPointer) throws(ConnectionError) {
        let socket = end.isSocket
        var offset = 0
        while offset < raw.count {
            // A socket without SIGPIPE (a closed peer is an error here); a simplex pipe through
            // write(2), with SIGPIPE left as the program set it.
            do {
                offset += try systemCall {
                    socket
                        ? Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                        : write(fd, raw.baseAddress! + offset, raw.count - offset)
                }
            } catch {
                if error == .brokenPipe || error == .connectionReset { throw .endOfFile }
                throw .system(error, function: socket ? "send" : "write")
            }
        }
    }

    private func readAll(_ fd: Int32, _ raw: UnsafeMutableRawBufferPointer) throws(ConnectionError) {
        var offset = 0
        while offset < raw.count {
            let n: Int
            do {
                n = try systemCall { read(fd, raw.baseAddress! + offset, raw.count - offset) }
            } catch {
                if error == .connectionReset { throw .endOfFile }
                throw .system(error, function: "read")
            }
            if n == 0 { throw .endOfFile }
            offset += n
        }
    }

    // MARK: Codable: a spawned child's end

    private enum CodingKeys: String, CodingKey { case fd, readable, writable }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        let fd = try descriptor()
        SpawnReferences.note(descriptor: fd)
        try c.encode(fd, forKey: .fd)
        try c.encode(readable, forKey: .readable)
        try c.encode(writable, forKey: .writable)
    }

    /// An end handed over by the parent; its descriptor was kept open across the spawn.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let fd = try c.decode(Int32.self, forKey: .fd)
        guard (try? systemCall { fcntl(fd, F_GETFD) }) != nil else { throw ConnectionError.closed }
        readable = try c.decode(Bool.self, forKey: .readable)
        writable = try c.decode(Bool.self, forKey: .writable)
        end = Endpoints.adopt(fd)
    }
}

extension Connection {
    /// In the forkserver, before it serves (``Fork/prepareServer(for:)``): a connection decoded and a
    /// message sent and received through a pipe of its own, so that a child handed a connection
    /// (the commonest argument) finds this code's metadata and witness tables already made.
    static func prepareChildren() {
        Endpoints.prepare()
        guard let (reader, writer) = try? Pipe.make(duplex: false) else { return }
        defer {
            reader.close()
            writer.close()
        }
        guard let bytes = try? SpawnCoding.encode(writer),
            let decoded = try? SpawnCoding.decode(Connection.self, from: bytes)
        else { return }
        try? decoded.sendBytes([1])
        _ = try? reader.receiveBytes()
    }
}

/// One open descriptor of this process and the locks that keep its messages whole, shared by every
/// ``Connection`` object that stands for it. It closes the descriptor at ``close()``, or when the
/// last of those objects goes.
final class Endpoint: @unchecked Sendable {
    private let state: Locked<Int32>  // the descriptor, -1 once closed
    let sendLock = InternalLock()
    let receiveLock = InternalLock()

    /// A socket (a duplex pipe) or not (a simplex pipe's end): found once, so that a send makes
    /// one system call, not a failed `send` and then a `write`.
    let isSocket: Bool

    fileprivate init(fd: Int32) {
        state = Locked(fd)
        var info = stat()
        isSocket = fstat(fd, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK
    }

    var fileDescriptor: Int32 { state.withLock { $0 } }

    func close() {
        let fd = state.withLock { fd -> Int32 in
            defer { fd = -1 }
            return fd
        }
        guard fd >= 0 else { return }
        Endpoints.forget(fd, self)  // first: once closed, the number may be handed out again
        closeDescriptor(fd)
    }

    deinit { close() }
}

/// The open ends of this process by descriptor, held weakly, so that every ``Connection`` for one
/// descriptor (made here, or decoded once or more) shares one ``Endpoint``.
enum Endpoints {
    private struct Entry {
        weak var end: Endpoint?
    }
    private static let table = Locked<[Int32: Entry]>([:])

    /// Runs the table's lazy initialiser and makes the metadata of an insertion (before a fork:
    /// see ``Fork``), with an end that owns no descriptor.
    static func prepare() {
        let none = Endpoint(fd: -1)
        table.withLock { table in
            table[-1] = Entry(end: none)
            table[-1] = nil
        }
    }

    static func adopt(_ fd: Int32) -> Endpoint {
        table.withLock { table in
            if let end = table[fd]?.end { return end }
            let end = Endpoint(fd: fd)
            table[fd] = Entry(end: end)
            return end
        }
    }

    static func forget(_ fd: Int32, _ end: Endpoint) {
        table.withLock { table in
            if let current = table[fd]?.end, current !== end { return }
            table[fd] = nil
        }
    }
}
