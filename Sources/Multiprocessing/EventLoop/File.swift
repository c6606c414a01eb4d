import CMultiprocessing
import SystemPackage

/// A file read and written through the event loop's io_uring (Python's `aiofiles`-style file).
///
/// ```swift
/// let file = try await File.open(path, .writeOnly, options: [.create, .truncate])
/// try await file.write(Array("hello".utf8))
/// try await file.sync()
/// try await file.close()
/// let data = try await File.open(path).read(upTo: 1 << 20)
/// ```
///
/// Reads and writes at the file position advance it; the `at:` forms (pread/pwrite) do not. Errors
/// are ``IOError``: the kernel's errno with the call's name, or ``IOError/closed`` after
/// ``close()``. A file not closed is closed when the last reference goes.
public final class File: @unchecked Sendable {
    let descriptor: Descriptor
    /// The buffer a `read(upTo:)` starts with; it doubles as the bytes fill it.
    static let firstReadSize = 1 << 16

    /// Adopts an open descriptor; the `File` closes it.
    public init(descriptor: Int32) { self.descriptor = Descriptor(descriptor) }

    /// The descriptor, nil once closed.
    public var fileDescriptor: Int32? { descriptor.value }

    /// Opens `path` (close-on-exec). `permissions` apply when `options` has `.create`.
    nonisolated(nonsending) public static func open(
        _ path: String, _ mode: FileDescriptor.AccessMode = .readOnly, options: FileDescriptor.OpenOptions = [],
        permissions: FilePermissions = [.ownerReadWrite, .groupRead, .otherRead]
    ) async throws -> File {
        // The kernel reads the path up to its first NUL: one inside would open another file
        // (Python raises ValueError, "embedded null byte").
        guard !path.utf8.contains(0) else { throw IOError.invalidArgument("a path with a NUL byte") }
        let loop = try EventLoop.forCurrentContext()
        let cPath = IOBuffer.copying(Array(path.utf8) + [0])
        let flags = mode.rawValue | options.rawValue
        let fd = try await loop.perform { ring, ud in
            mp_loop_open(ring, ud, cPath.base.assumingMemoryBound(to: CChar.self), flags, UInt32(permissions.rawValue))
        }
        return File(descriptor: Int32(try ioCount(fd, "open")))
    }

    /// Reads up to `count` bytes at the file position, fewer only at the end of the file (an
    /// empty array there).
    nonisolated(nonsending) public func read(upTo count: Int) async throws -> [UInt8] {
        try await read(upTo: count, offset: -1)
    }

    /// Reads up to `count` bytes at `offset` (pread), fewer only at the end of the file.
    nonisolated(nonsending) public func read(upTo count: Int, at offset: Int64) async throws -> [UInt8] {
        guard offset >= 0 else { throw IOError.invalidArgument("offset \(offset)") }
        return try await read(upTo: count, offset: offset)
    }

    /// One read(2) into `buffer` at `offset` (nil: the file position): the count read, 0 at the
    /// end. `buffer` must stay valid until this returns (it does while the caller awaits).
    nonisolated(nonsending) public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64? = nil)
        async throws -> Int
    {
        // A negative one would reach the kernel as -1: a read at the file's position.
        if let offset, offset < 0 { throw IOError.invalidArgument("offset \(offset)") }
        let fd = try descriptor.get()
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        let target = UnsafeSendable(base)
        let length = UInt32(clamping: buffer.count)
        let loop = try EventLoop.forCurrentContext()
        return try ioCount(
            await loop.perform { ring, ud in mp_loop_read(ring, ud, fd, target.value, length, offset ?? -1) }, "read")
    }

    nonisolated(nonsending) private func read(upTo count: Int, offset: Int64) async throws -> [UInt8] {
        guard count >= 0 else { throw IOError.invalidArgument("count \(count)") }
        _ = try descriptor.get()
        let loop = try EventLoop.forCurrentContext()
        // `count` is a most, often far more than the file holds (`read(upTo: .max)` for "all of
        // it"): the buffer grows with what arrives, as allocating `count` bytes up front could not.
        var buffer = IOBuffer.make(count: min(count, File.firstReadSize))
        var got = 0
        while got < count {
            if got == buffer.count {
                let larger = IOBuffer.make(count: count - got > buffer.count ? 2 * buffer.count : count)
                larger.base.copyMemory(from: buffer.base, byteCount: got)
                buffer = larger
            }
            let fd = try descriptor.get()  // each time: once closed, its number may be another file's
            let at = offset < 0 ? -1 : offset + Int64(got)
            let length = UInt32(clamping: buffer.count - got)
            let start = got
            let target = buffer  // held by the operation until it completes
            let n = try ioCount(
                await loop.perform { ring, ud in mp_loop_read(ring, ud, fd, target.base + start, length, at) }, "read")
            if n == 0 { break }
            got += n
        }
        return buffer.bytes(got)
    }

    /// Writes all of `bytes` at the file position.
    nonisolated(nonsending) public func write(_ bytes: [UInt8]) async throws {
        try await write(bytes, offset: -1)
    }

    /// Writes all of `bytes` at `offset` (pwrite).
    nonisolated(nonsending) public func write(_ bytes: [UInt8], at offset: Int64) async throws {
        guard offset >= 0 else { throw IOError.invalidArgument("offset \(offset)") }
        try await write(bytes, offset: offset)
    }

    nonisolated(nonsending) private func write(_ bytes: [UInt8], offset: Int64) async throws {
        _ = try descriptor.get()
        let loop = try EventLoop.forCurrentContext()
        let buffer = IOBuffer.copying(bytes)
        var done = 0
        while done < bytes.count {
            let fd = try descriptor.get()  // each time: once closed, its number may be another file's
            let at = offset < 0 ? -1 : offset + Int64(done)
            let length = UInt32(clamping: bytes.count - done)
            let start = done
            done += try ioCount(
                await loop.perform { ring, ud in mp_loop_write(ring, ud, fd, buffer.base + start, length, at) }, "write"
            )
        }
    }

    /// Flushes the file's data and metadata to the device (fsync); only its data with `dataOnly`
    /// (fdatasync).
    nonisolated(nonsending) public func sync(dataOnly: Bool = false) async throws {
        let fd = try descriptor.get()
        let loop = try EventLoop.forCurrentContext()
        _ = try ioCount(await loop.perform { ring, ud in mp_loop_fsync(ring, ud, fd, dataOnly ? 1 : 0) }, "fsync")
    }

    /// Closes the file. Throws ``IOError/closed`` if it already was.
    nonisolated(nonsending) public func close() async throws { try await descriptor.close() }
}
