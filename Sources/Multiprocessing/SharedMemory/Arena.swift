import CMultiprocessing

/// The process-shared arena from which the synchronization primitives are allocated, so that
/// `Lock()` works across threads and across forked and spawned processes, as Python's
/// `multiprocessing.Lock` does.
///
/// Layout of an arena region (all fields plain integers, changed only under `guard`):
///
///     slot 0:   guard mp_mutex_t | magic | next unused slot | free-list head | slot count
///     slot i:   kind | generation | creator pid | next free | payload (48 bytes)
///
/// Slots are one cache line each, so two primitives never share a line. The allocation policy lives
/// here in Swift; the guard is the C futex mutex (process-shared), so a forked child may allocate
/// from an inherited arena while its parent does too. A slot is freed only by the process that
/// created it (a forked child's copy of the object must not free the parent's lock); freeing bumps
/// the generation, which makes stale handles detectable.
final class Arena: @unchecked Sendable {
    static let slotSize = 64
    static let payloadOffset = 16
    static let payloadSize = slotSize - payloadOffset
    static let regionSize = 4 << 20
    static let magic: UInt32 = 0x4152_4e41  // "ANRA"

    let region: Region
    private let capacity: UInt32

    private var guardWord: UnsafeMutablePointer<mp_mutex_t> {
        region.base.assumingMemoryBound(to: mp_mutex_t.self)
    }
    private var fields: UnsafeMutablePointer<UInt32> {
        (region.base + MemoryLayout<mp_mutex_t>.size).assumingMemoryBound(to: UInt32.self)
    }
    // fields[0] magic, [1] next unused slot, [2] free-list head (0: empty), [3] slot count

    private init(region: Region) {
        self.region = region
        self.capacity = UInt32(region.size / Arena.slotSize)
    }

    static func create() throws(SharedMemoryError) -> Arena {
        let region = try Region.anonymous(size: regionSize, label: "multiprocessing-arena")
        let arena = Arena(region: region)
        mp_mutex_init(arena.guardWord, MP_MUTEX_SHARED | MP_MUTEX_PROCESS_OWNED)
        arena.fields[0] = magic
        arena.fields[1] = 1
        arena.fields[2] = 0
        arena.fields[3] = arena.capacity
        return arena
    }

    /// The arena in `region`, if the region is one (a spawned child sees only descriptors).
    static func existing(in region: Region) -> Arena? {
        guard region.size >= slotSize else { return nil }
        let arena = Arena(region: region)
        return arena.fields[0] == magic ? arena : nil
    }

    struct Slot {
        let index: UInt32
        let generation: UInt32
    }

    private func header(_ index: UInt32) -> UnsafeMutablePointer<UInt32> {
        (region.base + Int(index) * Arena.slotSize).assumingMemoryBound(to: UInt32.self)
    }

    func payload(_ index: UInt32) -> UnsafeMutableRawPointer {
        region.base + Int(index) * Arena.slotSize + Arena.payloadOffset
    }

    /// A zeroed slot of `kind`, or nil when the arena is full.
    func allocate(kind: SharedKind) -> Slot? {
        withGuard { () -> Slot? in
            var index = fields[2]
            if index != 0 {
                fields[2] = header(index)[3]
            } else if fields[1] < capacity {
                index = fields[1]
                fields[1] += 1
            } else {
                return nil
            }
            let h = header(index)
            h[0] = kind.rawValue
            h[2] = UInt32(bitPattern: mp_process_id())
            h[3] = 0
            payload(index).initializeMemory(as: UInt8.self, repeating: 0, count: Arena.payloadSize)
            return Slot(index: index, generation: h[1])
        }
    }

    /// Returns a slot to the free list, if the calling process created it.
    func free(_ slot: Slot) {
        withGuard {
            let h = header(slot.index)
            guard h[1] == slot.generation, h[2] == UInt32(bitPattern: mp_process_id()) else { return }
            h[0] = 0
            h[1] &+= 1
            h[3] = fields[2]
            fields[2] = slot.index
        }
    }

    /// Checks that a handle still names a live object of `kind`.
    func validate(index: UInt32, generation: UInt32, kind: SharedKind) -> Bool {
        guard index > 0, index < capacity else { return false }
        return withGuard {
            let h = header(index)
            return h[0] == kind.rawValue && h[1] == generation
        }
    }

    private func withGuard<R>(_ body: () -> R) -> R {
        // The guard covers a few integer stores; if its holder died, the state it left is usable.
        _ = mp_mutex_lock(guardWord, Int64(MP_FOREVER))
        defer { _ = mp_mutex_unlock(guardWord) }
        return body()
    }
}

/// What a slot holds; checked when a handle is resolved.
enum SharedKind: UInt32, Codable, Sendable {
    case lock = 1, rlock, semaphore, condition, event, barrier
}

/// The arenas of this process, newest last. A forked child inherits them; a spawned child finds
/// its parent's among the regions it adopts.
enum Arenas {
    private static let all = Locked<[Arena]>([])

    static func allocate(kind: SharedKind) -> (Arena, Arena.Slot) {
        all.withLock { arenas in
            if let arena = arenas.last, let slot = arena.allocate(kind: kind) { return (arena, slot) }
            let arena: Arena
            do {
                arena = try Arena.create()
            } catch {
                // Like a failed heap allocation: the OS refused 4 MiB of shared memory.
                fatalError("swift-multiprocessing: cannot create a shared-memory arena: \(error)")
            }
            arenas.append(arena)
            return (arena, arena.allocate(kind: kind)!)
        }
    }

    static func arena(for regionID: UInt64) -> Arena? {
        if let arena = all.withLock({ $0.first { $0.region.id == regionID } }) { return arena }
        guard let region = RegionRegistry.lookup(regionID), let arena = Arena.existing(in: region) else {
            return nil
        }
        all.withLock { $0.insert(arena, at: 0) }  // keep the newest last: allocation goes there
        return arena
    }
}
