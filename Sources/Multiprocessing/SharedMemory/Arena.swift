import CMultiprocessing

/// The process-shared arena from which the synchronization primitives are allocated, so that
/// `Lock()` works across threads and across forked and spawned processes, as Python's
/// `multiprocessing.Lock` does.
///
/// Layout of an arena region: the C `mp_arena_header_t` in slot 0 (its guard mutex, a magic
/// number, the next unused slot, the free-list head, the slot count), then `mp_arena_slot_t`s (kind,
/// generation, creator pid, next free, a 48-byte payload), all plain integers changed only under
/// the guard.
///
/// Slots are one cache line each, so two primitives never share a line. The allocation policy lives
/// here in Swift; the guard is the C futex mutex (process-shared), so a forked child may allocate
/// from an inherited arena while its parent does too. A slot is freed only by the process that
/// created it (a forked child's copy of the object must not free the parent's lock); freeing bumps
/// the generation, which makes stale handles detectable. Every index read from the region is
/// checked against this process's own slot count before use: another process can write anything
/// there, and a bad index must not make this one write outside the region.
final class Arena: @unchecked Sendable {
    static let slotSize = MemoryLayout<mp_arena_slot_t>.size
    static let payloadOffset = MemoryLayout<mp_arena_slot_t>.offset(of: \.payload)!
    static let payloadSize = slotSize - payloadOffset
    static let regionSize = 4 << 20

    let region: Region
    private let capacity: UInt32

    private var header: UnsafeMutablePointer<mp_arena_header_t> {
        region.base.assumingMemoryBound(to: mp_arena_header_t.self)
    }

    private init(region: Region) {
        self.region = region
        self.capacity = UInt32(region.size / Arena.slotSize)
    }

    static func create() throws(SharedMemoryError) -> Arena {
        let region = try Region.anonymous(size: regionSize, label: label)
        let arena = Arena(region: region)
        mp_mutex_init(&arena.header.pointee.guard, MP_MUTEX_SHARED | MP_MUTEX_PROCESS_OWNED)
        arena.header.pointee.magic = MP_ARENA_MAGIC
        arena.header.pointee.next_unused = 1
        arena.header.pointee.free_head = 0
        arena.header.pointee.slot_count = arena.capacity
        return arena
    }

    /// The memfd name of an arena's region, checked when a handle names one.
    static let label = "multiprocessing-arena"

    /// The arena in `region`, if the region is one (a spawned child sees only descriptors).
    static func existing(in region: Region) -> Arena? {
        // The label first: a SharedMemory region whose bytes a peer wrote could mimic the magic.
        guard region.size >= slotSize, region.isLabeled(label) else { return nil }
        let arena = Arena(region: region)
        return arena.header.pointee.magic == MP_ARENA_MAGIC ? arena : nil
    }

    struct Slot {
        let index: UInt32
        let generation: UInt32
    }

    /// Slot `index`, which the caller has checked is in 1..<capacity.
    private func slot(_ index: UInt32) -> UnsafeMutablePointer<mp_arena_slot_t> {
        (region.base + Int(index) * Arena.slotSize).assumingMemoryBound(to: mp_arena_slot_t.self)
    }

    func payload(_ index: UInt32) -> UnsafeMutableRawPointer {
        region.base + Int(index) * Arena.slotSize + Arena.payloadOffset
    }

    /// A zeroed slot of `kind`, or nil when the arena is full.
    func allocate(kind: SharedKind) -> Slot? {
        withGuard { () -> Slot? in
            var index = header.pointee.free_head
            // A free slot's kind is 0: a head that names a live slot (a garbled or cyclic list)
            // would hand one object's words to two.
            if index != 0, index < capacity, slot(index).pointee.kind == 0 {
                header.pointee.free_head = slot(index).pointee.next_free
            } else if header.pointee.next_unused >= 1, header.pointee.next_unused < capacity {
                // (A free-list head outside the arena, or on a live slot, was written by another
                // process: the list is dropped, its slots lost, never shared.)
                if index != 0 { header.pointee.free_head = 0 }
                index = header.pointee.next_unused
                header.pointee.next_unused += 1
            } else {
                return nil
            }
            let s = slot(index)
            s.pointee.kind = kind.rawValue
            s.pointee.creator = UInt32(bitPattern: mp_process_id())
            s.pointee.next_free = 0
            payload(index).initializeMemory(as: UInt8.self, repeating: 0, count: Arena.payloadSize)
            return Slot(index: index, generation: s.pointee.generation)
        }
    }

    /// Returns a slot to the free list, if the calling process created it.
    func free(_ freed: Slot) {
        guard freed.index > 0, freed.index < capacity else { return }
        withGuard {
            let s = slot(freed.index)
            guard s.pointee.generation == freed.generation, s.pointee.creator == UInt32(bitPattern: mp_process_id())
            else { return }
            s.pointee.kind = 0
            s.pointee.generation &+= 1
            s.pointee.next_free = header.pointee.free_head
            header.pointee.free_head = freed.index
        }
    }

    /// Checks that a handle still names a live object of `kind`.
    func validate(index: UInt32, generation: UInt32, kind: SharedKind) -> Bool {
        guard index > 0, index < capacity else { return false }
        return withGuard {
            let s = slot(index)
            return s.pointee.kind == kind.rawValue && s.pointee.generation == generation
        }
    }

    private func withGuard<R>(_ body: () -> R) -> R {
        // The guard covers a few integer stores; if its holder died, the state it left is usable.
        let guardWord = UnsafeMutableRawPointer(header).assumingMemoryBound(to: mp_mutex_t.self)
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
