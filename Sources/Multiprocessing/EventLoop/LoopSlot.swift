import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// A ring operation awaited on its loop's own thread without a ``LoopOperation``: its awaiter's
/// continuation waits in one of the loop's `LoopSlots`, and the slot's address, tagged with bit 0,
/// its kind in bit 1 (`receivesBytes`) and the slot's generation in the top 16 bits, is the
/// operation's user_data and its cancellation handler's argument.
///
/// An operation object costs an operation about 1 000 instructions (its allocation, the loop's
/// retain while it is in flight, the release and free after); a slot costs a list pop and push.
/// The object is what made a late cancellation safe: the cancel request held it, and the loop
/// checked whether it had finished. A slot goes back to its list at the completion, so a cancel
/// request carries only the user_data: the generation, bumped each time the slot is taken, makes
/// a late request name no later operation of the same slot (the kernel finds nothing to cancel,
/// and answers ENOENT). 16 bits: a request is handled within a turn or two of the loop, and a slot
/// is taken once per operation, not 65 536 times in that span (a take that queues nothing, whose
/// task was cancelled already, gives its generation back). A tagged user_data is odd, so it
/// never names an operation object (aligned) nor MP_LOOP_WAKE (1: a slot's address is not 0) nor
/// MP_LOOP_IGNORED (0).
///
/// Invariants:
/// - A slot is touched only on its loop's thread: the awaiter takes it and queues the operation
///   there (one job), and the loop reads the continuation and gives the slot back at the
///   completion, before it resumes the awaiter, which never touches the slot again (it may resume
///   on another thread: a default actor's job runs wherever the actor is drained).
/// - What the operation's pointers point into (a send's bytes, a connect's address) is held by the
///   awaiter's frame, which lives until the completion: the kernel is done with them then.
/// - A cancellation handler on another thread reads only its slot's chunk header, the loop, written
///   once before any slot of the chunk was handed out; the loop lives while the handler can run
///   (the awaiter's frame holds it until the handler is removed). On the loop's thread the handler
///   may read the slot: no awaiter runs beside it. There, a slot of the handler's generation with
///   no continuation is one whose awaiter is adding the handler to a task cancelled already
///   (nothing else runs before it queues the operation in the same job). A foreign thread's cancel
///   request waits in the inbox until the awaiter's job is over, when the operation is in the ring.
struct LoopSlot {
    /// Set by the awaiter as it queues the operation; cleared when the slot is given back. An
    /// `UnsafeContinuation<ReceivedBytes, Never>` when the user_data says `receivesBytes` (the
    /// same one pointer).
    var continuation: UnsafeContinuation<Int32, Never>?
    /// Set by a cancellation handler that ran before the operation was queued.
    var cancelledEarly = false
    /// Bumped each time the slot is taken (see the type's comment).
    var generation: UInt16 = 0
    fileprivate var nextFree: UnsafeMutablePointer<LoopSlot>?

    /// The tag of a slot's user_data, and of its cancellation handler's argument.
    static let tag: UInt64 = 1
    /// The kind bit: the awaiter takes the bytes of a receive into one of the loop's buffers.
    static let receivesBytes: UInt64 = 2
    private static let generationShift: UInt64 = 48
    /// Slot addresses lie below this (checked when a chunk is made): the generation has the rest.
    static let addressLimit: UInt = 1 << generationShift

    /// The user_data of the slot's current operation, of the given kind (0 or `receivesBytes`).
    static func userData(_ slot: UnsafeMutablePointer<LoopSlot>, kind: UInt64 = 0) -> UInt64 {
        UInt64(UInt(bitPattern: slot)) | tag | kind | UInt64(slot.pointee.generation) << generationShift
    }

    static func slot(of userData: UInt64) -> UnsafeMutablePointer<LoopSlot> {
        UnsafeMutablePointer(bitPattern: UInt(userData & ((1 << generationShift) - 1) & ~(tag | receivesBytes)))!
    }

    static func generation(of userData: UInt64) -> UInt16 { UInt16(truncatingIfNeeded: userData >> generationShift) }
}

/// What a receive into one of the loop's buffers resumes its awaiter with: the result, and the
/// bytes copied out of the buffer at the completion (the buffer goes back to the ring then).
struct ReceivedBytes {
    var result: Int32
    var bytes: [UInt8]
}

/// A loop's slots, in page-aligned chunks that live as long as the loop: a chunk opens with the
/// loop's address, which a slot finds by rounding its own address down. The list of free slots
/// is touched only by the loop's thread.
struct LoopSlots {
    private static let chunkBytes = 4096
    /// The header's size: the loop's address, padded to the slots' alignment.
    private static let headerBytes = 16
    private static let slotsPerChunk = (chunkBytes - headerBytes) / MemoryLayout<LoopSlot>.stride

    private var chunks: [UnsafeMutableRawPointer] = []
    private var free: UnsafeMutablePointer<LoopSlot>?
    /// Slots taken and not given back (tests check that none leaks).
    private(set) var inUse = 0

    /// A slot with no continuation and no early cancellation, of a new generation.
    mutating func take(for loop: EventLoop) -> UnsafeMutablePointer<LoopSlot> {
        if free == nil { grow(loop) }
        let slot = free.unsafelyUnwrapped
        free = slot.pointee.nextFree
        slot.pointee.cancelledEarly = false
        slot.pointee.generation &+= 1
        inUse &+= 1
        return slot
    }

    mutating func giveBack(_ slot: UnsafeMutablePointer<LoopSlot>) {
        slot.pointee.continuation = nil
        slot.pointee.nextFree = free
        free = slot
        inUse &-= 1
    }

    /// The loop whose chunk holds `slot`; any thread.
    static func loop(of slot: UnsafeMutablePointer<LoopSlot>) -> EventLoop {
        let chunk = UnsafeRawPointer(bitPattern: UInt(bitPattern: slot) & ~UInt(chunkBytes - 1))!
        return Unmanaged<EventLoop>.fromOpaque(chunk.load(as: UnsafeRawPointer.self)).takeUnretainedValue()
    }

    private mutating func grow(_ loop: EventLoop) {
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkBytes, alignment: Self.chunkBytes)
        // The generation takes the top 16 bits of a user_data: user addresses stay below 2^48 on
        // x86-64 (2^47) and arm64 (48-bit address spaces, where the heap lies above 2^47) unless a
        // mapping asks for more.
        precondition(UInt(bitPattern: chunk) < LoopSlot.addressLimit, "a slot's address needs more than 47 bits")
        chunk.storeBytes(of: UnsafeRawPointer(Unmanaged.passUnretained(loop).toOpaque()), as: UnsafeRawPointer.self)
        let slots = (chunk + Self.headerBytes).bindMemory(to: LoopSlot.self, capacity: Self.slotsPerChunk)
        for i in 0..<Self.slotsPerChunk {
            slots.advanced(by: i).initialize(to: LoopSlot(nextFree: i + 1 < Self.slotsPerChunk ? slots + i + 1 : free))
        }
        free = slots
        chunks.append(chunk)
    }

    /// Frees the chunks, when the loop goes: no operation can be in flight then.
    func deallocate() {
        for chunk in chunks { chunk.deallocate() }
    }
}

extension EventLoop {
    /// Runs one ring operation on this loop, which runs the caller, in a slot: its result (>= 0,
    /// or -errno), -ECANCELED when `cancellable` and the task is cancelled, or
    /// `LoopOperation.shutDownResult`. What the entry's pointers point into must outlive the call.
    /// Inlined with its caller: an async function is a frame of its own in the task's allocator
    /// (see `perform`).
    @inline(__always)
    nonisolated(nonsending) func awaitInSlot(_ entry: LoopOperation.Entry, cancellable: Bool = true) async -> Int32 {
        await awaitInSlot(
            entry, cancellable: cancellable, kind: 0, cancelled: -ECANCELED, refused: LoopOperation.shutDownResult)
    }

    /// A receive into one of the loop's buffers (`receiveSelected`), in a slot: its result, and the
    /// bytes it received.
    @inline(__always)
    nonisolated(nonsending) func receiveInSlot(fd: Int32, length: UInt32) async -> ReceivedBytes {
        await awaitInSlot(
            .receiveSelected(fd: fd, length: length), cancellable: true, kind: LoopSlot.receivesBytes,
            cancelled: ReceivedBytes(result: -ECANCELED, bytes: []),
            refused: ReceivedBytes(result: LoopOperation.shutDownResult, bytes: []))
    }

    @inline(__always)
    nonisolated(nonsending) private func awaitInSlot<Value>(
        _ entry: LoopOperation.Entry, cancellable: Bool, kind: UInt64, cancelled: Value, refused: Value
    ) async -> Value {
        if stopping {
            // Refused. Not at once: a coroutine left behind that goes on after its `shutDown`
            // (`try? await sleep(...)` in a loop) would then never suspend, and hold the loop's
            // thread in one job for ever. After the yield, its job may run on the global executor
            // (the loop has finished): it touches no slot.
            await Task.yield()
            return refused
        }
        defer { Handoff.resumed() }
        let slot = takeSlot()
        let userData = LoopSlot.userData(slot, kind: kind)
        if !cancellable {
            return await suspendForLoop { (c: UnsafeContinuation<Value, Never>) in
                slot.pointee.continuation = unsafeBitCast(c, to: UnsafeContinuation<Int32, Never>.self)
                submit(entry, in: slot, userData)
            }
        }
        // Added to a task cancelled already, the handler runs here and now, and sets the flag.
        let handler = mp_task_add_cancel_handler(UnsafeMutableRawPointer(bitPattern: UInt(userData))!)
        defer { mp_task_remove_cancel_handler(handler) }
        if slot.pointee.cancelledEarly {
            // Its handler has run, and nothing else saw this generation: the slot keeps the one it
            // had, so that a run of such operations in one turn (a cancelled task's sleeps that
            // do not suspend) cannot bring a late request's generation round again.
            slot.pointee.generation &-= 1
            giveBackSlot(slot)
            return cancelled
        }
        return await suspendForLoop { (c: UnsafeContinuation<Value, Never>) in
            slot.pointee.continuation = unsafeBitCast(c, to: UnsafeContinuation<Int32, Never>.self)
            submit(entry, in: slot, userData)
        }
    }

    /// Sleeps until `deadline` (absolute monotonic nanoseconds) on this loop, which runs the caller:
    /// returns at the deadline; throws `CancellationError` or ``EventLoopError/shutDown``.
    @inline(__always)
    nonisolated(nonsending) func sleepOnOwnThread(until deadline: Int64) async throws {
        let result = await awaitInSlot(.timeout(deadline: deadline))
        if result == LoopOperation.shutDownResult {
            if Task.isCancelled { throw CancellationError() }
            throw EventLoopError.shutDown
        }
        // Only this task's cancellation handler names this timer (see `LoopSlot`).
        if result == -ECANCELED { throw CancellationError() }
    }

    /// What the cancellation handler of an operation in a slot runs, on the thread that cancels its
    /// task.
    static func cancelSlot(_ userData: UInt64) {
        let slot = LoopSlot.slot(of: userData)
        let loop = LoopSlots.loop(of: slot)
        if loop.inEventLoop && slot.pointee.continuation == nil {
            // Its awaiter is adding the handler to a task cancelled already. Or the operation
            // completed and its awaiter has yet to remove the handler: the slot is free (a free
            // slot's flag is reset when it is taken), or another operation's (another generation).
            if slot.pointee.generation == LoopSlot.generation(of: userData) { slot.pointee.cancelledEarly = true }
            return
        }
        loop.schedule(.cancelSlot(userData))
    }
}
