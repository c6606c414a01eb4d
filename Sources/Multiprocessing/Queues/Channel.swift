import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// The shared-memory channel under every queue: one region holding the C `mp_queue_t` header and
/// its ring. Found by region id in a spawned child (the region is handed over at spawn).
final class Channel: @unchecked Sendable {
    let region: Region
    let queue: UnsafeMutablePointer<mp_queue_t>

    static let minimumCapacity = 4096
    /// 4 GiB, or the machine's memory if it has less: a larger ring would only fail later, at a
    /// page fault, in whichever process touched it first.
    static let maximumCapacity = min(1 << 32, Int(sysconf(Int32(_SC_PHYS_PAGES))) &* Int(sysconf(Int32(_SC_PAGESIZE))))

    init(capacity: Int, maxMessages: Int) throws(QueueError) {
        guard capacity >= Channel.minimumCapacity, capacity <= Channel.maximumCapacity else {
            throw .invalidCapacity(capacity)
        }
        var ring = Channel.minimumCapacity
        while ring < capacity { ring <<= 1 }  // a power of two: offsets are masks
        do {
            region = try Region.anonymous(size: Int(mp_queue_size(UInt64(ring))), label: "multiprocessing-queue")
        } catch {
            throw .system(error.errno ?? .noMemory, function: "memfd_create")
        }
        queue = region.base.assumingMemoryBound(to: mp_queue_t.self)
        mp_queue_init(queue, UInt64(ring), UInt32(maxMessages), 1)
    }

    init(regionID: UInt64) throws(SharedMemoryError) {
        guard let found = RegionRegistry.lookup(regionID) else { throw .unknownRegion(regionID) }
        guard found.size >= Int(MP_QUEUE_HEADER_SIZE) else { throw .staleHandle }
        region = found
        queue = found.base.assumingMemoryBound(to: mp_queue_t.self)
        guard Int(mp_queue_size(queue.pointee.capacity)) == found.size else { throw .staleHandle }
    }

    var capacity: Int { Int(queue.pointee.capacity) }
}

extension SharedMemoryError {
    var errno: Errno? {
        if case .system(let e, _) = self { return e }
        return nil
    }
}

/// An absolute monotonic deadline for the C calls: forever for nil, now for `.zero`.
@inlinable
func deadline(after timeout: Duration?) throws(QueueError) -> Int64 {
    guard let timeout else { return .max }
    return try deadline(afterTimeout: timeout)
}

@usableFromInline
func deadline(afterTimeout timeout: Duration) throws(QueueError) -> Int64 {
    let ns: Int64
    do { ns = try timeoutNanoseconds(timeout) } catch { throw .negativeTimeout(timeout) }
    return monotonicDeadline(afterNanoseconds: ns)
}
