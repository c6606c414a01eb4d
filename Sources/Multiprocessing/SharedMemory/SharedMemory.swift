import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A block of memory shared between processes (Python's `multiprocessing.shared_memory`).
///
/// - Anonymous (`SharedMemory(size:)`): a memfd region, inherited by forked children and handed to
///   spawned children by descriptor (pass the object in the child's arguments: it is `Codable`).
/// - Named (`SharedMemory(create:size:)` / `SharedMemory(attach:)`): a POSIX shared-memory object
///   in `/dev/shm`, created exclusively with mode 0600 and a header (magic, version, size) that
///   ``init(attach:allowingOtherOwners:)`` checks, with the owner and the mode, so attaching to
///   something that is not ours is a typed error. The creating object owns the name: it unlinks
///   it in ``unlink()``, when it is deinitialized, or at exit, whichever comes first, in the
///   creating process only (a forked child's copy leaves the name alone unless it calls
///   ``unlink()``).
///
/// A creator that cannot clean up (killed by SIGKILL, or a forked child, which exits without
/// running deinitializers) leaves the name to the program's resource tracker: a small process that
/// the first named creation starts, shared by every process of the program, which unlinks the names
/// still registered once the program's last process has ended (as Python's `resource_tracker`
/// does). ``unlink()`` unregisters the name, so a name unlinked and later re-created, here or by
/// another program, is never removed by mistake. See <doc:NamedSharedMemory>.
public final class SharedMemory: @unchecked Sendable, Codable {
    /// The name of a named region; nil for an anonymous one.
    public let name: String?
    /// The usable size in bytes.
    public let size: Int
    /// The usable bytes (after the header, for a named region).
    public let buffer: UnsafeMutableRawBufferPointer

    let region: Region
    /// Whether this object created the name and unlinks it when it goes (in its creating process
    /// only: a forked child's copy must not take the parent's name away).
    private let ownsName: Bool
    private let creatorPID: Int32
    private let unlinked = Locked(false)

    /// A new anonymous region of `size` zero bytes.
    public init(size: Int) throws(SharedMemoryError) {
        guard size > 0 else { throw .invalidSize(size) }
        region = try Region.anonymous(size: size, label: SharedMemory.anonymousLabel)
        name = nil
        self.size = size
        buffer = UnsafeMutableRawBufferPointer(start: region.base, count: size)
        ownsName = false
        creatorPID = mp_process_id()
    }

    /// Creates the named region `name` (without a leading `/`) of `size` zero bytes.
    /// Throws ``SharedMemoryError/alreadyExists(_:)`` if the name is taken.
    public init(create name: String, size: Int) throws(SharedMemoryError) {
        let path = try SharedMemory.path(for: name)
        guard size > 0, size <= Int.max - Int(MP_REGION_HEADER_SIZE) else { throw .invalidSize(size) }
        let total = size + Int(MP_REGION_HEADER_SIZE)
        let fd = mp_shm_create(path, UInt64(total))
        if fd == -EEXIST { throw .alreadyExists(name) }
        let owned = try checked(fd, "shm_open")
        do {
            region = try Region(id: RegionRegistry.newID(), fd: owned, size: total)
        } catch {
            _ = mp_shm_unlink(path)
            throw error
        }
        mp_region_header_init(region.base.assumingMemoryBound(to: mp_region_header_t.self), UInt64(size))
        self.name = name
        self.size = size
        buffer = UnsafeMutableRawBufferPointer(start: region.base + Int(MP_REGION_HEADER_SIZE), count: size)
        ownsName = true
        creatorPID = mp_process_id()
        NamedRegions.created(path, descriptor: region.fd)
        ResourceTracker.register(path: path, descriptor: region.fd)
    }

    /// Attaches to the existing named region `name`, checking that it is one of ours: by default
    /// it must also be owned by this process's user and closed to everyone else (mode 0600, as
    /// ``init(create:size:)`` makes it), since another user who can write it can corrupt what this
    /// process reads there; `allowingOtherOwners` lifts that check (``SharedMemoryError/untrusted(_:)``).
    public init(attach name: String, allowingOtherOwners: Bool = false) throws(SharedMemoryError) {
        let path = try SharedMemory.path(for: name)
        let result = mp_shm_open(path)
        if result == -ENOENT { throw .notFound(name) }
        let fd = try checked(result, "shm_open")
        if !allowingOtherOwners && mp_fd_private_to_owner(fd) != 0 {
            closeDescriptor(fd)
            throw .untrusted(name)
        }
        // A region its creator is still making has size 0, then magic 0, for a few system calls:
        // wait that out, rather than call it too small or not ours. A second: on a loaded machine
        // the creator was seen to take over 100 ms for those calls; a region that stays unmade
        // (a stray file of zeros) is refused that much later, which only a mistake costs.
        let patience = Deadline.after(nanoseconds: 1_000_000_000)
        var actual = mp_fd_size(fd)
        while actual == 0 && mp_monotonic_ns() < patience {
            usleep(100)
            actual = mp_fd_size(fd)
        }
        guard actual >= 0 else {
            closeDescriptor(fd)
            throw .system(Errno(rawValue: Int32(-actual)), function: "fstat")
        }
        guard actual >= Int64(MP_REGION_HEADER_SIZE) else {
            closeDescriptor(fd)
            throw .tooSmall(name: name, size: Int(actual))
        }
        let mapped = try Region(id: RegionRegistry.newID(), fd: fd, size: Int(actual))
        let header = mapped.base.assumingMemoryBound(to: mp_region_header_t.self)
        while mp_region_header_magic(header) == 0 && mp_monotonic_ns() < patience { usleep(100) }
        guard mp_region_header_magic(header) == MP_REGION_MAGIC else { throw .notOurs(name) }
        guard header.pointee.version == MP_REGION_VERSION else {
            throw .versionMismatch(name: name, found: header.pointee.version, expected: MP_REGION_VERSION)
        }
        let payload = header.pointee.payload_size
        guard header.pointee.header_size == MP_REGION_HEADER_SIZE,
            payload <= UInt64(actual) - UInt64(MP_REGION_HEADER_SIZE)
        else { throw .tooSmall(name: name, size: Int(actual)) }
        region = mapped
        self.name = name
        size = Int(payload)
        buffer = UnsafeMutableRawBufferPointer(start: region.base + Int(MP_REGION_HEADER_SIZE), count: size)
        ownsName = false
        creatorPID = mp_process_id()
    }

    /// Removes the name from the system (the memory stays mapped until every user lets go) and
    /// from the resource tracker's list. Only meaningful for named regions; a second call does
    /// nothing.
    public func unlink() throws(SharedMemoryError) {
        guard let name else { return }
        let first = unlinked.withLock { done in
            defer { done = true }
            return !done
        }
        guard first else { return }
        let path = try SharedMemory.path(for: name)
        // Only while the name is still this region's: once unlinked (by another handle or process)
        // and made again, it is another region's.
        var device: UInt64 = 0
        var inode: UInt64 = 0
        var rc = mp_fd_identity(region.fd, &device, &inode)
        if rc == 0 { rc = mp_shm_unlink_same(path, device, inode) }
        NamedRegions.removed(path)
        // After the unlink, as Python does: a death in between leaves a stale registration (the
        // tracker checks the file's identity), where the other order could leave the object.
        if rc == 0 || rc == -ENOENT { ResourceTracker.unregister(path: path, descriptor: region.fd) }
        if rc == -ENOENT { throw .notFound(name) }
        _ = try checked(rc, "shm_unlink")
    }

    deinit {
        if ownsName && creatorPID == mp_process_id() { try? unlink() }
    }

    /// The memfd name of an anonymous region (``init(size:)``), checked when one is decoded.
    static let anonymousLabel = "multiprocessing-shared-memory"

    static func path(for name: String) throws(SharedMemoryError) -> String {
        guard !name.isEmpty, name.utf8.count <= 250, !name.contains("/"), !name.contains("\0") else {
            throw .invalidName(name)
        }
        return "/" + name
    }

    private enum CodingKeys: String, CodingKey { case name, region }
    /// The metadata decoding one makes, made ahead in the forkserver (``Fork/prepareServer(for:)``).
    static let decodingMetadata: [Any.Type] = [KeyedDecodingContainer<CodingKeys>.self]

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        if let name {
            try container.encode(name, forKey: .name)
        } else {
            SpawnReferences.note(region)
            try container.encode(region.id, forKey: .region)
        }
    }

    /// Attaches by name, or finds the anonymous region among those handed to this process.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let name = try container.decodeIfPresent(String.self, forKey: .name) {
            let attached = try SharedMemory(attach: name)
            region = attached.region
            self.name = name
            size = attached.size
            buffer = attached.buffer
        } else {
            let id = try container.decode(UInt64.self, forKey: .region)
            guard let found = RegionRegistry.lookup(id) else { throw SharedMemoryError.unknownRegion(id) }
            // Not another of this process's regions (a lock arena, a queue's ring): a forged id.
            guard found.isLabeled(SharedMemory.anonymousLabel) else { throw SharedMemoryError.staleHandle }
            region = found
            name = nil
            size = found.size
            buffer = UnsafeMutableRawBufferPointer(start: found.base, count: found.size)
        }
        ownsName = false
        creatorPID = mp_process_id()
    }
}

/// Names this process created and has not unlinked: unlinked at exit, so a program that forgets
/// leaves nothing in /dev/shm. (A SIGKILLed creator cannot clean up, nor can a forked child, which
/// exits without atexit handlers: ``ResourceTracker`` unlinks theirs when the program ends.)
enum NamedRegions {
    /// The file each name stood for when this process made it (device and inode): at exit a name
    /// is unlinked only while it still stands for that file.
    private struct File: Sendable {
        var device: UInt64 = 0
        var inode: UInt64 = 0
    }
    private static let names = Locked<(pid: Int32, paths: [String: File])>((0, [:]))
    static func created(_ path: String, descriptor: Int32) {
        ProgramExit.install()
        var file = File()
        _ = mp_fd_identity(descriptor, &file.device, &file.inode)
        names.withLock { state in
            if state.pid != mp_process_id() { state = (mp_process_id(), [:]) }
            state.paths[path] = file
        }
    }

    static func removed(_ path: String) {
        names.withLock { _ = $0.paths.removeValue(forKey: path) }
    }

    /// Makes the list (and its generic metadata) in a parent before a fork: a forked child that
    /// calls `exit` reads it at its end, and must not be the first to (see ``Fork``).
    static func prepareForFork() {
        let paths = names.withLock { state -> [String: File] in state.paths }
        for _ in paths where false {}  // the iteration's metadata too (unlinkAll's loop)
    }

    static func unlinkAll() {
        let paths = names.withLock { state -> [String: File] in
            state.pid == mp_process_id() ? state.paths : [:]
        }
        if paths.isEmpty { return }  // a forked child's exit, most often
        for (path, file) in paths { _ = mp_shm_unlink_same(path, file.device, file.inode) }
    }
}
