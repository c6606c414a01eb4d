import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// The shared-memory channel under every queue: one region holding the C `mp_queue_t` header and
/// its ring, and this process's view of it (`mp_queue_view_t`: the bounds fixed when the channel
/// was made or attached here, which the C code uses instead of the shared header's; see queue.c's
/// "Trust"). Found by region id in a spawned child (the region is handed over at spawn).
final class Channel: @unchecked Sendable {
    let region: Region
    /// This process's view; owned here, freed with the channel.
    let queue: UnsafeMutablePointer<mp_queue_view_t>

    static let minimumCapacity = 4096
    /// The machine's memory: no message or ring can be larger.
    static let physicalMemory = Int(sysconf(Int32(_SC_PHYS_PAGES))) &* Int(sysconf(Int32(_SC_PAGESIZE)))
    /// 4 GiB, or the machine's memory if it has less: a larger ring would only fail later, at a
    /// page fault, in whichever process touched it first.
    static let maximumCapacity = min(1 << 32, physicalMemory)

    /// A new channel whose ring holds at least `capacity` bytes. A get accepts messages of up to
    /// `maxMessage` bytes (and never more than the machine's memory): a longer one announced in the
    /// ring is corruption, and nothing is allocated for it. With a `slotSize` (1 to
    /// `MP_QUEUE_MAX_SLOT` bytes, an unbounded channel) the channel also has lanes: each producer
    /// thread puts messages of exactly that size into a lock-free lane of its own (queue_lanes.c).
    init(capacity: Int, maxMessages: Int, maxMessage: Int = .max, slotSize: Int = 0) throws(QueueError) {
        guard capacity >= Channel.minimumCapacity, capacity <= Channel.maximumCapacity else {
            throw .invalidCapacity(capacity)
        }
        var ring = Channel.minimumCapacity
        while ring < capacity { ring <<= 1 }  // a power of two: offsets are masks
        let slot = maxMessages == 0 && (1...Int(MP_QUEUE_MAX_SLOT)).contains(slotSize) ? UInt32(slotSize) : 0
        do {
            region = try Region.anonymous(
                size: Int(mp_queue_size(UInt64(ring), slot)), label: "multiprocessing-queue")
        } catch {
            throw .system(error.errno ?? .noMemory, function: "memfd_create")
        }
        let header = region.base.assumingMemoryBound(to: mp_queue_t.self)
        mp_queue_init(header, UInt64(ring), UInt32(maxMessages), 1, slot)
        queue = Channel.view(of: header, mapped: region.size, maxMessage: maxMessage)!
    }

    /// The channel in region `regionID`, handed to this process; its header is checked against
    /// the mapping once, here.
    init(regionID: UInt64, maxMessage: Int = .max) throws(SharedMemoryError) {
        guard let found = RegionRegistry.lookup(regionID) else { throw .unknownRegion(regionID) }
        guard found.size >= Int(MP_QUEUE_HEADER_SIZE) else { throw .staleHandle }
        region = found
        let header = found.base.assumingMemoryBound(to: mp_queue_t.self)
        guard let view = Channel.view(of: header, mapped: found.size, maxMessage: maxMessage) else {
            throw .staleHandle
        }
        queue = view
    }

    private static func view(of header: UnsafeMutablePointer<mp_queue_t>, mapped: Int, maxMessage: Int)
        -> UnsafeMutablePointer<mp_queue_view_t>?
    {
        let view = UnsafeMutablePointer<mp_queue_view_t>.allocate(capacity: 1)
        let limit = UInt64(min(maxMessage, physicalMemory))
        guard mp_queue_view_attach(view, header, UInt64(mapped), limit, 1) == 0 else {
            view.deallocate()
            return nil
        }
        return view
    }

    deinit { queue.deallocate() }

    var capacity: Int { Int(queue.pointee.capacity) }

    /// The shared header (counters that only inform, such as a JoinableQueue's unfinished tasks).
    var header: UnsafeMutablePointer<mp_queue_t> { queue.pointee.header! }
}

extension SharedMemoryError {
    var errno: Errno? {
        if case .system(let e, _) = self { return e }
        return nil
    }
}
