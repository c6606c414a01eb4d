import CMultiprocessing
import Synchronization

/// The `Codable` form of a primitive in shared memory: enough for a spawned child to find the very
/// same bytes (the region is mapped there under the same id at bootstrap).
public struct SharedHandle: Codable, Hashable, Sendable {
    var region: UInt64
    var slot: UInt32
    var generation: UInt32
    var kind: UInt32
}

/// A slot of an arena owned by one Swift object: the payload pointer, the handle, and whether this
/// object frees the slot when it goes away (only the creating object in the creating process does).
///
/// A freed slot is handed to the next primitive made here, so it is freed only while no other
/// process can hold it: not after its handle was encoded (for a spawned child, a queue, a pipe),
/// nor after this process forked while it lived (a forked child holds a copy of the object). Such
/// a slot stays allocated for the life of the arena: a lock a child still holds must never become
/// another primitive's word. (Python's `SemLock`s are counted by the kernel; here the cost is the
/// slot, 64 bytes.)
final class SharedObject: @unchecked Sendable {
    let arena: Arena
    let slot: Arena.Slot
    let kind: SharedKind
    let payload: UnsafeMutableRawPointer
    private let owns: Bool
    /// `Children.forked` when the slot was allocated.
    private let forksBefore: Int
    /// Whether the handle has been encoded (it may live in another process now).
    private let escaped = Atomic<Bool>(false)

    /// Allocates a zeroed slot in this process's arena.
    init(kind: SharedKind) {
        forksBefore = Children.forked
        (arena, slot) = Arenas.allocate(kind: kind)
        self.kind = kind
        payload = arena.payload(slot.index)
        owns = true
    }

    /// Resolves a handle made in another process (or this one).
    init(handle: SharedHandle, expecting kind: SharedKind) throws(SharedMemoryError) {
        guard let arena = Arenas.arena(for: handle.region) else { throw .unknownRegion(handle.region) }
        guard handle.kind == kind.rawValue,
            arena.validate(index: handle.slot, generation: handle.generation, kind: kind)
        else { throw .staleHandle }
        self.arena = arena
        self.slot = Arena.Slot(index: handle.slot, generation: handle.generation)
        self.kind = kind
        payload = arena.payload(handle.slot)
        owns = false
        forksBefore = 0
    }

    var handle: SharedHandle {
        SharedHandle(region: arena.region.id, slot: slot.index, generation: slot.generation, kind: kind.rawValue)
    }

    /// The handle, for an encoding: a spawned child given it must be given the arena's region too.
    var encodedHandle: SharedHandle {
        SpawnReferences.note(arena.region)
        escaped.store(true, ordering: .relaxed)
        return handle
    }

    func pointer<T>(to type: T.Type) -> UnsafeMutablePointer<T> {
        precondition(MemoryLayout<T>.size <= Arena.payloadSize)
        return payload.assumingMemoryBound(to: T.self)
    }

    deinit {
        // Read here, as the object goes: a fork after the allocation means a child may hold it.
        if owns && !escaped.load(ordering: .relaxed) && Children.forked == forksBefore { arena.free(slot) }
    }
}

extension SharedObject {
    /// Encodes this object's handle as a single value.
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(encodedHandle)
    }

    /// Decodes a handle and resolves it to the object it names.
    static func decode(_ kind: SharedKind, from decoder: any Decoder) throws -> SharedObject {
        let handle = try decoder.singleValueContainer().decode(SharedHandle.self)
        return try SharedObject(handle: handle, expecting: kind)
    }
}
