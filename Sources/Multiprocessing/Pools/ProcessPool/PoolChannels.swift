import CMultiprocessing

/// The shared memory of one process pool: the task ring (parent to workers), the result ring
/// (workers, the watcher and the pool to the result thread), one claim slot per worker (the id
/// of the task it took last, see pool_claims.c), and one ready word per worker (its pid, once it is past
/// its start-up). All three are memfd regions: nothing appears in /dev/shm,
/// and the memory goes away with the last process that maps it.
final class PoolChannels: @unchecked Sendable {
    /// Ring sizes in bytes; pages are touched only as messages flow. Larger messages stream through.
    static let taskCapacity = 4 << 20
    static let resultCapacity = 4 << 20

    let tasks: Channel
    let results: Channel
    let claims: Region
    let slots: UnsafeMutablePointer<UInt64>
    /// `ready[i]` holds the pid of worker `i` once it has started, with ``initialized`` set once its
    /// initializer has returned (written by the worker).
    let ready: UnsafeMutablePointer<UInt64>
    /// The bit of a ready word set once the worker's initializer has returned (a pid fits in 32 bits).
    static let initialized: UInt64 = 1 << 32
    let slotCount: Int

    init(workers: Int) throws(PoolError) {
        do {
            tasks = try Channel(capacity: PoolChannels.taskCapacity, maxMessages: 0)
            results = try Channel(capacity: PoolChannels.resultCapacity, maxMessages: 0)
        } catch {
            if case .system(let errno, let function) = error { throw .system(errno, function: function) }
            throw .coding(String(describing: error))
        }
        do {
            claims = try Region.anonymous(size: max(64, workers * 16), label: "multiprocessing-pool")
        } catch {
            throw .system(error.errno ?? .noMemory, function: "memfd_create")
        }
        slots = claims.base.assumingMemoryBound(to: UInt64.self)
        ready = slots + workers
        slotCount = workers
    }

    /// What a spawned worker needs to find the same memory (mapped at its bootstrap).
    struct Handle: Codable, Sendable {
        var tasks: UInt64
        var results: UInt64
        var claims: UInt64
        var slotCount: Int

        init(tasks: UInt64, results: UInt64, claims: UInt64, slotCount: Int) {
            (self.tasks, self.results, self.claims, self.slotCount) = (tasks, results, claims, slotCount)
        }

        /// Encoded for a spawned worker: its three regions go with it (see ``SpawnReferences``).
        func encode(to encoder: any Encoder) throws {
            for id in [tasks, results, claims] {
                if let region = RegionRegistry.lookup(id) { SpawnReferences.note(region) }
            }
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(tasks, forKey: .tasks)
            try container.encode(results, forKey: .results)
            try container.encode(claims, forKey: .claims)
            try container.encode(slotCount, forKey: .slotCount)
        }
    }

    var handle: Handle {
        Handle(tasks: tasks.region.id, results: results.region.id, claims: claims.id, slotCount: slotCount)
    }

    /// In a spawned worker: the parent's channels.
    init(handle: Handle) throws(SharedMemoryError) {
        tasks = try Channel(regionID: handle.tasks)
        results = try Channel(regionID: handle.results)
        guard let region = RegionRegistry.lookup(handle.claims) else { throw .unknownRegion(handle.claims) }
        guard handle.slotCount >= 1, region.size >= handle.slotCount * 16 else { throw .staleHandle }
        claims = region
        slots = region.base.assumingMemoryBound(to: UInt64.self)
        ready = slots + handle.slotCount
        slotCount = handle.slotCount
    }

    /// Puts a notice with no payload into the result ring.
    func notify(_ header: ResultHeader) {
        withMessage(header, size: ResultHeader.size, payload: UnsafeRawBufferPointer(start: nil, count: 0)) {
            putMessage(results.queue, $0)
        }
    }
}
