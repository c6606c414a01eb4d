import CMultiprocessing
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// Errors of the event loop's file and socket operations.
public enum IOError: Error, Equatable, Sendable {
    /// The kernel refused: `function` names the call (`"open"`, `"read"`, `"connect"`...).
    case system(Errno, function: String)
    /// The file or socket was closed by this program before the call.
    case closed
    /// `host` could not be resolved; `reason` is the resolver's.
    case hostNotFound(String, reason: String)
    /// An argument out of range (a negative count or offset).
    case invalidArgument(String)
    /// A receive on a ``TCPConnection`` while another receive on it waits (asyncio's "already
    /// waiting for incoming data"): a stream's bytes go to one reader at a time, or two readers
    /// would each take part of a message. Nothing was received.
    case alreadyReceiving
}

/// A result of the ring as a count, or the errno it carries as an error.
@inline(__always)
func ioCount(_ result: Int32, _ operation: String) throws(IOError) -> Int {
    if result < 0 { throw .system(Errno(rawValue: -result), function: operation) }
    return Int(result)
}

/// Bytes in memory the kernel may read or write while an operation is in flight: held by the
/// operation (`LoopOperation`'s `keepAlive`, or its closure), which the loop holds until the
/// completion arrives.
///
/// One allocation: the bytes follow the object's header (a buffer of its own was a second
/// allocation, about 300 instructions with its free). They stay put while the object lives, and
/// start 8-aligned.
final class IOBuffer: ManagedBuffer<Int, UInt8> {
    /// A buffer of `count` bytes, uninitialized.
    static func make(count: Int) -> IOBuffer {
        unsafeDowncast(create(minimumCapacity: max(count, 1)) { _ in count }, to: IOBuffer.self)
    }

    /// A buffer holding a copy of `bytes`.
    static func copying(_ bytes: some Collection<UInt8>) -> IOBuffer {
        let buffer = make(count: bytes.count)
        UnsafeMutableRawBufferPointer(start: buffer.base, count: buffer.count).copyBytes(from: bytes)
        return buffer
    }

    var base: UnsafeMutableRawPointer { withUnsafeMutablePointerToElements { UnsafeMutableRawPointer($0) } }
    var count: Int { header }

    func bytes(_ n: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: n)) }
}

/// A descriptor owned by a File or a socket: closed once, by `close()` or else when its owner goes.
///
/// The number is the whole state: the swap in `take` alone decides which caller closes it. Its
/// accesses are sequentially consistent (on x86-64 the same instructions as relaxed ones) for a
/// connection's close, which looks at whether an operation is under way after taking the number,
/// while an operation marks itself under way before reading it (see `TCPConnection.close`).
/// (One atomic, not a lock: a lock was three more allocations per connection.)
/// Noncopyable, and stored in its owner: an object of its own was one more allocation per
/// connection, listener and file (about 350 instructions with its release).
struct Descriptor: ~Copyable, Sendable {
    private let fd: Atomic<Int32>

    init(_ fd: Int32) { self.fd = Atomic(fd) }

    /// The descriptor, or ``IOError/closed``.
    func get() throws(IOError) -> Int32 {
        let value = fd.load(ordering: .sequentiallyConsistent)
        if value < 0 { throw .closed }
        return value
    }

    var value: Int32? {
        let value = fd.load(ordering: .sequentiallyConsistent)
        return value < 0 ? nil : value
    }

    /// Gives the descriptor up for closing (nil if it already was).
    func take() -> Int32? {
        let value = fd.exchange(-1, ordering: .sequentiallyConsistent)
        return value < 0 ? nil : value
    }

    /// Closes through the ring. Throws ``IOError/closed`` on a second call.
    nonisolated(nonsending) func close() async throws {
        guard let fd = take() else { throw IOError.closed }
        let result: Int32
        do {
            let loop = try EventLoop.forCurrentContext()
            result = try await loop.perform(.close(fd: fd), cancellable: false)
        } catch {
            // The ring never took it (its loop is shutting down, or there is no loop to be had):
            // the descriptor is ours alone since take(), and must not be left open.
            result = mp_close(fd)
        }
        _ = try ioCount(result, "close")
    }

    /// Closes on the calling thread: for a socket, whose close never waits (the library sets no
    /// `SO_LINGER`; the kernel sends what is queued, and the FIN, after it). Through the ring it
    /// cost a suspension and a continuation, about 5 000 instructions per connection. Throws
    /// ``IOError/closed`` on a second call.
    ///
    /// The socket is shut down first: an operation in flight on it (a receive, a send, an accept)
    /// holds the socket itself, not the descriptor, so close(2) alone would neither end it nor the
    /// connection (the peer would see no end of stream; a listener would go on listening), while
    /// the number went back to the process for reuse. The shutdown ends them at once (a receive
    /// finds the end of the stream, a send EPIPE, an accept EINVAL; the callers report
    /// ``IOError/closed``).
    func closeNow() throws(IOError) { try closeNow(shuttingDownIf: { true }) }

    /// `closeNow()` for an owner that knows whether an operation may be in flight on the socket:
    /// `inFlight` is asked after the number is taken, and the shutdown made only if it says so.
    func closeNow(shuttingDownIf inFlight: () -> Bool) throws(IOError) {
        guard let fd = take() else { throw IOError.closed }
        if inFlight() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
        _ = try ioCount(mp_close(fd), "close")
    }

    deinit {
        if let fd = take() { _ = mp_close(fd) }
    }
}
