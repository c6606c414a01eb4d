import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// One mapping of shared memory in this process: an anonymous memfd region or a named one.
///
/// Regions that can be handed to a spawned child by descriptor (memfd regions) are listed in
/// ``RegionRegistry``; a spawned child maps the same descriptors at bootstrap under the same ids,
/// so a ``SharedHandle`` means the same bytes in both processes.
final class Region: @unchecked Sendable {
    let id: UInt64
    let fd: Int32
    let base: UnsafeMutableRawPointer
    let size: Int
    /// What the region was made for (its memfd's name), when this process made it; nil for a named
    /// region and for one a spawned child adopted (see ``isLabeled(_:)``).
    let label: String?

    /// Maps `size` bytes of `fd`, taking ownership of the descriptor.
    init(id: UInt64, fd: Int32, size: Int, label: String? = nil) throws(SharedMemoryError) {
        var error: Int32 = 0
        guard let base = mp_map_shared(fd, UInt64(size), &error) else {
            closeDescriptor(fd)
            throw .system(Errno(rawValue: error), function: "mmap")
        }
        self.id = id
        self.fd = fd
        self.base = base
        self.size = size
        self.label = label
    }

    /// Whether the region was made as an anonymous region labelled `label`: a decoder checks it, so
    /// that an id naming another of the process's regions (a lock arena, a queue's ring) is not
    /// taken for the kind it expects. An adopted region is asked of the kernel, by its memfd's name.
    func isLabeled(_ label: String) -> Bool {
        if let own = self.label { return own == label }
        var path = [CChar](repeating: 0, count: 256)
        let n = readlink("/proc/self/fd/\(fd)", &path, path.count - 1)
        guard n > 0 else { return false }
        return String(decoding: path[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) == "/memfd:\(label) (deleted)"
    }

    /// A new anonymous region (zero-filled), listed for spawned children.
    static func anonymous(size: Int, label: String) throws(SharedMemoryError) -> Region {
        guard size > 0 else { throw .invalidSize(size) }
        let fd = try checked(mp_memfd_create(label, UInt64(size)), "memfd_create")
        let region = try Region(id: RegionRegistry.newID(), fd: fd, size: size, label: label)
        RegionRegistry.register(region)
        return region
    }

    deinit {
        RegionRegistry.unregister(id: id)
        _ = mp_unmap(base, UInt64(size))
        closeDescriptor(fd)
    }
}

@inline(__always)
func checked(_ result: Int32, _ function: String) throws(SharedMemoryError) -> Int32 {
    switch checkedErrno(result, function) {
    case .success(let value): return value
    case .failure(let errno): throw .system(errno, function: function)
    }
}

/// What a spawned child needs to map a parent's region: its id, descriptor and size.
struct RegionDescriptor: Codable, Equatable, Sendable {
    var id: UInt64
    var fd: Int32
    var size: Int
}

/// The anonymous regions of this process, by id, held weakly: a region lives as long as the objects
/// in it. Spawn passes those that a child's argument refers to (see ``SpawnReferences``).
enum RegionRegistry {
    private struct Entry {
        weak var region: Region?
    }
    private static let entries = Locked<[UInt64: Entry]>([:])

    static func newID() -> UInt64 {
        var generator = SystemRandomNumberGenerator()
        return generator.next() | 1  // never 0, which marks "no region"
    }

    static func register(_ region: Region) {
        entries.withLock { $0[region.id] = Entry(region: region) }
    }

    static func unregister(id: UInt64) {
        entries.withLock { entries in
            if entries[id]?.region == nil { entries[id] = nil }
        }
    }

    static func lookup(_ id: UInt64) -> Region? {
        entries.withLock { $0[id]?.region }
    }

    /// The parent's regions mapped in a spawned child, kept for the child's whole life: objects
    /// decoded from handles point into them.
    private static let adopted = Locked<[Region]>([])

    /// In a spawned child: maps the parent's regions under their ids.
    /// Maps the regions a child was handed. Each descriptor must be a memfd made by
    /// ``Region/anonymous(size:label:)`` (sealed against shrinking and growing) of at least its
    /// stated size: anything else, mapped, could make an access fault (SIGBUS).
    static func adopt(_ descriptors: [RegionDescriptor]) throws(SharedMemoryError) {
        for d in descriptors {
            guard d.size > 0, mp_memfd_check(d.fd, UInt64(d.size), 0) >= 0 else { throw .invalidDescriptor(d.fd) }
            let region = try Region(id: d.id, fd: d.fd, size: d.size)
            register(region)
            adopted.withLock { $0.append(region) }
        }
    }
}
