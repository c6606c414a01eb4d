import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// A timer awaited on its loop's own thread without a ``LoopOperation``: its awaiter's continuation
/// waits in one of the loop's `TimerWaits` slots, and the slot's address, tagged with bit 0, is the
/// timer's user_data and its cancellation handler's argument.
///
/// An operation object costs a sleep about 1 000 instructions (its allocation, the loop's retain
/// while it is in flight, the release and free after); a slot costs a list pop and push. The object
/// is what makes a late cancellation safe: the cancel request holds it, and the loop checks whether
/// it finished. A slot goes back to its list at the completion, so a cancel request carries only
/// the number: a late one finds no timer (the kernel answers ENOENT) or hits a later timer in the
/// same slot, whose awaiter sees -ECANCELED while its task is not cancelled and arms the timer
/// again. A tagged user_data is odd, so it never names an operation object (aligned) nor
/// MP_LOOP_WAKE (1: a slot's address is not 0).
///
/// Invariants:
/// - A slot is touched only on its loop's thread: the awaiter takes it and queues the timer there
///   (one job), and the loop reads the continuation and gives the slot back at the completion,
///   before it resumes the awaiter, which never touches the slot again.
/// - A cancellation handler on another thread reads only its slot's chunk header, the loop, written
///   once before any slot of the chunk was handed out; the loop lives while the handler can run
///   (the awaiter's frame holds it until the handler is removed). On the loop's thread the handler
///   may read the slot: no awaiter runs beside it. There, a slot with no continuation is one whose
///   awaiter is adding the handler to a task cancelled already (nothing else runs before it queues
///   the timer in the same job), or a free one (the flag is reset when it is taken). A foreign
///   thread's cancel request waits in the inbox until the awaiter's job is over, when the timer is
///   in the ring.
struct TimerWait {
    /// Set by the awaiter as it queues the timer; cleared when the slot is given back.
    var continuation: UnsafeContinuation<Int32, Never>?
    /// Set by a cancellation handler that ran before the timer was queued.
    var cancelledEarly = false
    fileprivate var nextFree: UnsafeMutablePointer<TimerWait>?

    /// The tag of a timer's user_data, and of its cancellation handler's argument.
    static let tag: UInt = 1

    static func slot(of tagged: UInt) -> UnsafeMutablePointer<TimerWait> {
        UnsafeMutablePointer(bitPattern: tagged & ~tag)!
    }
}

/// A loop's timer slots, in page-aligned chunks that live as long as the loop: a chunk opens with
/// the loop's address, which a slot finds by rounding its own address down. The list of free slots
/// is touched only by the loop's thread.
struct TimerWaits {
    private static let chunkBytes = 4096
    /// The header's size: the loop's address, padded to the slots' alignment.
    private static let headerBytes = 16
    private static let slotsPerChunk = (chunkBytes - headerBytes) / MemoryLayout<TimerWait>.stride

    private var chunks: [UnsafeMutableRawPointer] = []
    private var free: UnsafeMutablePointer<TimerWait>?
    /// Slots taken and not given back (tests check that none leaks).
    private(set) var inUse = 0

    /// A slot with no continuation and no early cancellation.
    mutating func take(for loop: EventLoop) -> UnsafeMutablePointer<TimerWait> {
        if free == nil { grow(loop) }
        let slot = free.unsafelyUnwrapped
        free = slot.pointee.nextFree
        slot.pointee.cancelledEarly = false
        inUse &+= 1
        return slot
    }

    mutating func giveBack(_ slot: UnsafeMutablePointer<TimerWait>) {
        slot.pointee.continuation = nil
        slot.pointee.nextFree = free
        free = slot
        inUse &-= 1
    }

    /// The loop whose chunk holds `slot`; any thread.
    static func loop(of slot: UnsafeMutablePointer<TimerWait>) -> EventLoop {
        let chunk = UnsafeRawPointer(bitPattern: UInt(bitPattern: slot) & ~UInt(chunkBytes - 1))!
        return Unmanaged<EventLoop>.fromOpaque(chunk.load(as: UnsafeRawPointer.self)).takeUnretainedValue()
    }

    private mutating func grow(_ loop: EventLoop) {
        let chunk = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkBytes, alignment: Self.chunkBytes)
        chunk.storeBytes(of: UnsafeRawPointer(Unmanaged.passUnretained(loop).toOpaque()), as: UnsafeRawPointer.self)
        let slots = (chunk + Self.headerBytes).bindMemory(to: TimerWait.self, capacity: Self.slotsPerChunk)
        for i in 0..<Self.slotsPerChunk {
            slots.advanced(by: i).initialize(to: TimerWait(nextFree: i + 1 < Self.slotsPerChunk ? slots + i + 1 : free))
        }
        free = slots
        chunks.append(chunk)
    }

    /// Frees the chunks, when the loop goes: no timer can be in flight then.
    func deallocate() {
        for chunk in chunks { chunk.deallocate() }
    }
}

extension EventLoop {
    /// Sleeps until `deadline` (absolute monotonic nanoseconds) on this loop, which runs the caller:
    /// returns at the deadline; throws `CancellationError` or ``EventLoopError/shutDown``.
    @inline(__always)
    nonisolated(nonsending) func sleepOnOwnThread(until deadline: Int64) async throws {
        while true {
            let result = await awaitTimer(at: deadline)
            if result == LoopOperation.shutDownResult {
                if Task.isCancelled { throw CancellationError() }
                throw EventLoopError.shutDown
            }
            // Not a cancellation of this task: a late cancel request that named an earlier timer in
            // the same slot. The deadline stands: armed again in a slot if the coroutine resumed on
            // this loop's thread, else as an operation. (A default actor's job resumes on whichever
            // thread drains the actor: a pool thread, when a task without a preference holds it.)
            if result == -ECANCELED {
                if Task.isCancelled { throw CancellationError() }
                guard inEventLoop else {
                    timersArmedOffLoop.add(1, ordering: .relaxed)
                    _ = try await EventLoop.forCurrentContext().perform(LoopOperation(timeoutAt: deadline))
                    return
                }
                timersArmedAgain &+= 1
                continue
            }
            return
        }
    }

    /// One timer: -ETIME at the deadline, -ECANCELED, shutDownResult, or another -errno from the
    /// ring. Inlined with its caller: an async function is a frame of its own in the task's
    /// allocator (see `perform`).
    @inline(__always)
    nonisolated(nonsending) private func awaitTimer(at deadline: Int64) async -> Int32 {
        defer { Handoff.resumed() }
        let slot = takeTimerSlot()
        // Added to a task cancelled already, the handler runs here and now, and sets the flag.
        let tagged = UnsafeMutableRawPointer(bitPattern: UInt(bitPattern: slot) | TimerWait.tag)!
        let handler = mp_task_add_cancel_handler(tagged)
        defer { mp_task_remove_cancel_handler(handler) }
        if slot.pointee.cancelledEarly {
            giveBackTimerSlot(slot)
            return -ECANCELED
        }
        return await suspendForLoop { c in
            slot.pointee.continuation = c
            submitTimer(slot, at: deadline)
        }
    }

    /// What the cancellation handler of a timer runs, on the thread that cancels its task.
    static func cancelTimer(_ tagged: UInt) {
        let slot = TimerWait.slot(of: tagged)
        let loop = TimerWaits.loop(of: slot)
        if loop.inEventLoop && slot.pointee.continuation == nil {
            slot.pointee.cancelledEarly = true
            return
        }
        loop.schedule(.cancelTimer(UInt64(tagged)))
    }
}
