import CMultiprocessing
import SystemPackage

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
}

/// A result of the ring as a count, or the errno it carries as an error.
@inline(__always)
func ioCount(_ result: Int32, _ operation: String) throws(IOError) -> Int {
    if result < 0 { throw .system(Errno(rawValue: -result), function: operation) }
    return Int(result)
}

/// Bytes in memory the kernel may read or write while an operation is in flight: owned by the
/// operation's closure, so they outlive a cancelled awaiter until the completion arrives.
final class IOBuffer: @unchecked Sendable {
    let base: UnsafeMutableRawPointer
    let count: Int

    init(count: Int) {
        self.count = count
        base = .allocate(byteCount: max(count, 1), alignment: 16)
    }

    convenience init(copying bytes: some Collection<UInt8>) {
        self.init(count: bytes.count)
        UnsafeMutableRawBufferPointer(start: base, count: count).copyBytes(from: bytes)
    }

    func bytes(_ n: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: base, count: n)) }

    deinit { base.deallocate() }
}

/// A descriptor owned by a File or a socket: closed once, by `close()` or else at deinit.
final class Descriptor: @unchecked Sendable {
    private let fd: Locked<Int32>

    init(_ fd: Int32) { self.fd = Locked(fd) }

    /// The descriptor, or ``IOError/closed``.
    func get() throws(IOError) -> Int32 {
        let value = fd.withLock { $0 }
        if value < 0 { throw .closed }
        return value
    }

    var value: Int32? {
        let value = fd.withLock { $0 }
        return value < 0 ? nil : value
    }

    /// Gives the descriptor up for closing (nil if it already was).
    func take() -> Int32? {
        fd.withLock { fd -> Int32? in
            defer { fd = -1 }
            return fd < 0 ? nil : fd
        }
    }

    /// Closes through the ring. Throws ``IOError/closed`` on a second call.
    nonisolated(nonsending) func close() async throws {
        guard let fd = take() else { throw IOError.closed }
        let loop = try EventLoop.forCurrentContext()
        _ = try ioCount(await loop.perform(cancellable: false) { ring, ud in mp_loop_close(ring, ud, fd) }, "close")
    }

    deinit {
        if let fd = take() { _ = mp_close(fd) }
    }
}
