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
/// at ``close()`` on either). A send to an end whose reader has gone throws
/// ``ConnectionError/endOfFile``, simplex or duplex: never a SIGPIPE.
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

    /// Receives the next value, waiting up to `timeout`; throws ``ConnectionError/timeout``. The
    /// timeout covers the whole message: a message that has begun to arrive when it passes is kept,
    /// and the next receive goes on with it (nothing is lost, and the stream stays in step).
    public func receive<T: Decodable>(_ type: T.Type = T.self, timeout: Duration) throws(ConnectionError) -> T {
        guard let bytes = try receiveFrame(by: try Deadline.after(timeout, ConnectionError.self)) else {
            throw .timeout
        }
        do {
            return try bytes.withUnsafeBytes { raw throws(BinaryCodingError) in try BinaryCoding.decode(type, from: raw)
            }
        } catch {
            throw .decodingFailed(String(describing: error))
        }
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
        // Refused before it is copied: a lazy collection may announce more bytes than memory holds.
        guard bytes.count <= Int(UInt32.max) else { throw .messageTooLarge(bytes.count) }
        try Array(bytes).withUnsafeBytes { body in Result { () throws(ConnectionError) in try sendFrame(body) } }.get()
    }

    /// Sends `body` as one message: its length and its bytes in one buffer, written whole under the
    /// send lock (a pipe keeps a write of at most `PIPE_BUF` bytes from interleaving with another
    /// process's).
    @usableFromInline
    func sendFrame(_ body: UnsafeRawBufferPointer) throws(ConnectionError) {
        guard writable else { throw .wrongDirection }
        guard body.count <= Int(UInt32.max) else { throw .messageTooLarge(body.count) }
        let fd = try end.borrow()
        defer { end.giveBack() }
        let frame = [UInt8](unsafeUninitializedCapacity: 4 + body.count) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            raw.storeBytes(of: UInt32(body.count).littleEndian, toByteOffset: 0, as: UInt32.self)
            if let base = body.baseAddress { (raw.baseAddress! + 4).copyMemory(from: base, byteCount: body.count) }
            initialized = 4 + body.count
        }
        try end.sendLock.withLock { () throws(ConnectionError) in
            if end.isClosing { throw .closed }  // closed while this send waited for its turn
            try frame.withUnsafeBytes { raw in Result { () throws(ConnectionError) in try writeAll(fd, raw) } }.get()
        }
    }

    /// Receives the next message's bytes, waiting for it.
    public func receiveBytes() throws(ConnectionError) -> [UInt8] {
        guard let bytes = try receiveFrame(by: Int64(MP_FOREVER)) else { throw .timeout }  // never without a deadline
        return bytes
    }

    /// The next message's bytes, or nil if `deadline` passed first (the receive lock's wait
    /// included). What arrived of a message by then stays in the end for the next receive.
    private func receiveFrame(by deadline: Int64) throws(ConnectionError) -> [UInt8]? {
        guard readable else { throw .wrongDirection }
        let fd = try end.borrow()
        defer { end.giveBack() }
        let socket = end.isSocket
        let got = try end.receiveLock.withLock(until: deadline) { () throws(ConnectionError) -> [UInt8]? in
            do throws(ConnectionError) {
                let bytes = try end.partial.read(fd, socket: socket, deadline: deadline)
                if end.isClosing { throw ConnectionError.closed }  // closed while this receive waited
                return bytes
            } catch {
                end.partial = PartialFrame()  // the stream is over (or closed): nothing to go on with
                throw error
            }
        }
        if got == nil && end.isClosing { throw .closed }  // timed out waiting for a closed end's lock
        return got ?? nil
    }

    /// Whether a message (or the end of the stream) can be read without waiting, after waiting up
    /// to `timeout` for one (nil: forever).
    public func poll(timeout: Duration? = .zero) throws(ConnectionError) -> Bool {
        guard readable else { throw .wrongDirection }
        let deadline = try Deadline.after(timeout, ConnectionError.self)  // refused even when data waits
        let fd = try end.borrow()
        defer { end.giveBack() }
        if end.hasPartialFrame { return true }  // part of a message is here already: the rest is coming
        let rc = mp_poll_readable(fd, deadline)
        if rc < 0 { throw .system(Errno(rawValue: -rc), function: "ppoll") }
        return rc == 1
    }

    /// Closes this end here (the other end then reads ``ConnectionError/endOfFile``). A send or
    /// receive of another thread that is using the end keeps its descriptor until it returns (so
    /// the number is never another file's under it), then throws ``ConnectionError/closed``; as in
    /// Python, the close does not wake it.
    public func close() { end.close() }

    private func writeAll(_ fd: Int32, _ raw: UnsafeRawBufferPointer) throws(ConnectionError) {
        let socket: Int32 = end.isSocket ? 1 : 0
        var offset = 0
        while offset < raw.count {
            // Never SIGPIPE: a closed reader is an error here (mp_stream_write).
            let n = mp_stream_write(fd, raw.baseAddress! + offset, UInt64(raw.count - offset), socket)
            if n < 0 {
                let error = Errno(rawValue: Int32(-n))
                if error == .brokenPipe || error == .connectionReset { throw .endOfFile }
                throw .system(error, function: socket != 0 ? "send" : "write")
            }
            offset += Int(n)
        }
    }

    // MARK: Codable: a spawned child's end

    private enum CodingKeys: String, CodingKey { case fd, readable, writable }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        let fd = try descriptor()
        // The receiver would start in the middle of a message this process began to read.
        if end.hasPartialFrame {
            throw ConnectionError.encodingFailed("part of a message was received here: finish receiving it first")
        }
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
///
/// Each send, receive and poll borrows the descriptor for its duration, and a ``close()`` during
/// one only marks the end closed: the descriptor is closed when the last call gives it back. Its
/// number therefore cannot be handed to a new descriptor (another connection's, a file's) while a
/// call of another thread still reads or writes it; such a call then reports
/// ``ConnectionError/closed`` (after its read or write returns: as in Python, a close does not wake
/// a call that waits).
final class Endpoint: @unchecked Sendable {
    private struct State {
        var fd: Int32  // -1 once closed
        var users = 0  // calls between borrow and giveBack
        var closing = false  // close() was called
        var generation: UInt32  // the fork generation that counted `users`
    }
    private let state: Locked<State>
    let sendLock = InternalLock()
    let receiveLock = InternalLock()
    /// A message that a receive which ran out of time had begun to read (guarded by
    /// `receiveLock`): the next receive goes on with it.
    var partial = PartialFrame()

    /// A socket (a duplex pipe) or not (a simplex pipe's end): found once, so that a send makes
    /// one system call, not a failed `send` and then a `write`.
    let isSocket: Bool

    fileprivate init(fd: Int32) {
        state = Locked(State(fd: fd, generation: mp_fork_generation_now()))
        var info = stat()
        isSocket = fstat(fd, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK
    }

    var fileDescriptor: Int32 { state.withLock { $0.closing ? -1 : $0.fd } }

    /// Whether ``close()`` has been called.
    var isClosing: Bool { state.withLock { $0.closing } }

    /// Whether a receive has begun a message and not finished it (false while another thread
    /// receives: a hint for `poll`, which never waits for the receive lock).
    var hasPartialFrame: Bool { receiveLock.withLock(until: Int64(MP_NOW)) { partial.started } ?? false }

    /// The descriptor, for one call; give it back after.
    func borrow() throws(ConnectionError) -> Int32 {
        var stale: Int32 = -1
        defer { if stale >= 0 { release(stale) } }
        return try state.withLock { (s: inout State) throws(ConnectionError) -> Int32 in
            stale = Self.forgetCallsOfOtherProcesses(&s)
            if s.closing || s.fd < 0 { throw .closed }
            s.users += 1
            return s.fd
        }
    }

    /// Ends a call's borrow; the last call out of a closed end closes its descriptor.
    func giveBack() {
        let fd = state.withLock { (s: inout State) -> Int32 in
            let stale = Self.forgetCallsOfOtherProcesses(&s)
            if stale >= 0 { return stale }
            if s.users > 0 { s.users -= 1 }
            guard s.closing, s.users == 0, s.fd >= 0 else { return -1 }
            defer { s.fd = -1 }
            return s.fd
        }
        if fd >= 0 { release(fd) }
    }

    func close() {
        let fd = state.withLock { (s: inout State) -> Int32 in
            let stale = Self.forgetCallsOfOtherProcesses(&s)
            if stale >= 0 { return stale }
            guard !s.closing, s.fd >= 0 else { return -1 }
            s.closing = true
            guard s.users == 0 else { return -1 }  // the last call out closes it
            defer { s.fd = -1 }
            return s.fd
        }
        if fd >= 0 { release(fd) }
    }

    /// In a forked child, the calls counted are the parent's threads', which did not come along:
    /// forgotten. An end the parent had closed under such a call is closed now (the descriptor to
    /// close, else -1): the child must not keep the peer from its end of file.
    private static func forgetCallsOfOtherProcesses(_ s: inout State) -> Int32 {
        let now = mp_fork_generation_now()
        guard s.generation != now else { return -1 }
        s.users = 0
        s.generation = now
        guard s.closing, s.fd >= 0 else { return -1 }
        defer { s.fd = -1 }
        return s.fd
    }

    private func release(_ fd: Int32) {
        Endpoints.forget(fd, self)  // first: once closed, the number may be handed out again
        closeDescriptor(fd)
    }

    deinit { close() }
}

/// The part of a message a receive has read: its 4-byte length, then its body. A receive that runs
/// out of time leaves it for the next one, so the stream stays in step.
struct PartialFrame {
    private var header: UInt32 = 0
    private var headerHave = 0
    private var body: [UInt8] = []
    private var bodyHave = 0

    /// Whether a message has begun to arrive.
    var started: Bool { headerHave > 0 }

    /// The first piece of a message's body that a receive makes room for: a message up to this
    /// size arrives in one buffer of its exact size.
    static let firstPiece = 1 << 20

    /// Reads on from `fd` until the message is whole (returned, and this frame empty again) or
    /// `deadline` passes (nil, the part read kept). The other end wrote the header and may announce
    /// anything up to 4 GiB: the buffer grows with the bytes that arrive (the first piece, then
    /// doubling), so an end that announces 4 GiB and sends 10 bytes costs 1 MiB, not 4 GiB.
    /// (Unsafe buffers, not slices or `repeatElement`: a child forked from a busy process may run
    /// this, and must not instantiate generic metadata its parent never made.)
    mutating func read(_ fd: Int32, socket: Bool, deadline: Int64) throws(ConnectionError) -> [UInt8]? {
        while headerHave < 4 {
            let have = headerHave
            let n = try withUnsafeMutableBytes(of: &header) { raw in
                Result { () throws(ConnectionError) -> Int? in
                    try PartialFrame.readSome(fd, raw.baseAddress! + have, 4 - have, socket: socket, deadline: deadline)
                }
            }.get()
            guard let n else { return nil }
            headerHave += n
        }
        let length = Int(UInt32(littleEndian: header))
        while bodyHave < length {
            if bodyHave == body.count {  // full: a larger buffer, the bytes so far copied over
                let have = bodyHave
                let size = min(length, max(2 * have, PartialFrame.firstPiece))
                body = [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
                    let base = UnsafeMutableRawPointer(buffer.baseAddress!)
                    if have > 0 { body.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: have) } }
                    count = size  // bytes past `bodyHave` are written before the body is handed out
                }
            }
            let have = bodyHave, room = body.count - bodyHave
            let n = try body.withUnsafeMutableBytes { raw in
                Result { () throws(ConnectionError) -> Int? in
                    try PartialFrame.readSome(fd, raw.baseAddress! + have, room, socket: socket, deadline: deadline)
                }
            }.get()
            guard let n else { return nil }
            bodyHave += n
        }
        defer { self = PartialFrame() }
        return length == 0 ? [] : body
    }

    /// One read of up to `count` bytes: how many came, or nil if `deadline` passed first.
    private static func readSome(
        _ fd: Int32, _ at: UnsafeMutableRawPointer, _ count: Int, socket: Bool, deadline: Int64
    ) throws(ConnectionError) -> Int? {
        let n = mp_stream_read(fd, at, UInt64(count), socket ? 1 : 0, deadline)
        if n == -Int64(ETIMEDOUT) { return nil }
        if n < 0 {
            let error = Errno(rawValue: Int32(-n))
            if error == .connectionReset { throw .endOfFile }
            throw .system(error, function: "read")
        }
        if n == 0 { throw .endOfFile }
        return Int(n)
    }
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
