import Builtin
import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// One ring operation: how to queue it, who awaits it, and its state on the loop's thread. For an
/// awaiter off the loop's thread (the shared loop's callers) and for files; an awaiter on the loop's
/// own thread waits in one of its slots instead (`LoopSlot`), with no object to allocate.
///
/// Its address is the operation's user_data. The loop retains it from submission until its one
/// completion (so the buffers it keeps, or its closure captured, stay alive while the kernel may
/// use them), and resumes the continuation exactly once: at that completion, or at once if it
/// never reached the ring.
final class LoopOperation: @unchecked Sendable {
    /// Queues the operation with the given user_data; 0, or -errno (-EBUSY: queue full).
    typealias Prepare = (OpaquePointer, UInt64) -> Int32

    /// The result of an operation refused or cut short because its loop shut down.
    static let shutDownResult = Int32.min

    /// What the operation queues. The common operations (timers, socket and futex operations) are
    /// cases with their arguments: a closure that captures them is an allocation of its own per
    /// operation, and a release of each object it captured. The rarer ones (files) are closures.
    enum Entry {
        case prepared(Prepare)
        case timeout(deadline: Int64)
        case send(fd: Int32, bytes: UnsafeRawPointer, length: UInt32)
        case receive(fd: Int32, into: UnsafeMutableRawPointer, length: UInt32)
        /// A receive into a buffer the kernel picks from the loop's ring (see `received`).
        case receiveSelected(fd: Int32, length: UInt32)
        /// The address is a value: the ring copies it when the entry is queued (no buffer to hold).
        case connect(fd: Int32, address: mp_socket_address_t)
        case accept(fd: Int32)
        case close(fd: Int32)
        case futexWait(word: UnsafeMutablePointer<UInt32>, expected: UInt32, shared: Int32, deadline: Int64)
    }

    let entry: Entry
    /// What the entry's pointers point into (a send's bytes, a connect's address), held as long as
    /// the operation is: the kernel may read them until the completion.
    private let keepAlive: AnyObject?
    private var continuation: UnsafeContinuation<Int32, Never>?
    // Touched only by the loop's thread (and read by the awaiter after it resumed).
    var submitted = false
    var cancelRequested = false
    private(set) var finished = false
    /// The bytes of a receive that took one of the loop's buffers, copied out at its completion
    /// (set on the loop's thread before `finish`; read by the awaiter after it resumed).
    var received: [UInt8] = []
    /// The loop a cancellable awaiter submitted it to, for its cancellation handler; the awaiter's
    /// frame holds the loop while the handler can run.
    fileprivate unowned(unsafe) var cancelLoop: EventLoop?

    init(timeoutAt deadline: Int64) { (entry, keepAlive) = (.timeout(deadline: deadline), nil) }
    /// An operation whose pointers point into `owner` (nil: into nothing the loop must hold).
    init(_ entry: Entry, keeping owner: AnyObject? = nil) { (self.entry, keepAlive) = (entry, owner) }

    /// Queues the operation on `ring` with `userData`: 0, or -errno (-EBUSY: queue full).
    func prepare(_ ring: OpaquePointer, _ userData: UInt64) -> Int32 { entry.prepare(ring, userData) }

    var address: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
    var userData: UInt64 { UInt64(UInt(bitPattern: address)) }

    func finish(_ result: Int32) {
        precondition(!finished, "an operation completes once")
        finished = true
        let c = continuation
        continuation = nil
        Handoff.resume { c?.resume(returning: result) }
    }

    /// Queues the operation on `loop` and suspends until its completion, resuming on the executor
    /// it suspended on, which is the caller's (`suspendForLoop`).
    @inline(__always)
    nonisolated(nonsending) func submitAndWait(on loop: EventLoop, cancellable: Bool) async -> Int32 {
        defer { Handoff.resumed() }
        if !cancellable {
            return await suspendForLoop { c in
                continuation = c
                loop.submit(self)
            }
        }
        // Not `withTaskCancellationHandler`, whose nonisolated operation closure a loop task
        // hops to enter (see task_cancel.c). The handler runs on the thread that cancels the task,
        // and only until the record is removed: `self` and `loop` outlive it.
        cancelLoop = loop
        let handler = mp_task_add_cancel_handler(address)
        defer { mp_task_remove_cancel_handler(handler) }
        return await suspendForLoop { c in
            continuation = c
            loop.submit(self)
        }
    }
}

/// Suspends the calling task, hands `body` its continuation, and returns what it is resumed with,
/// on the caller's executor.
///
/// The builtin's continuation resumes the task on the generic executor (for a task that prefers a
/// loop, that loop), and the compiler adds no hop back to the caller's isolation: a caller isolated
/// to an actor would go on off its actor, beside another task that holds it. So a caller with an
/// actor hops back to it (one `swift_task_switch`, a no-op if the task is there already); a
/// nonisolated caller, every loop task's case, needs no hop and pays none. Both library forms cost
/// every caller one: `withUnsafeContinuation(isolation:)` hops to its isolation on entry, and a
/// `nonisolated(nonsending)` caller of `_unsafeInheritExecutor_withUnsafeContinuation` hops back to
/// its own isolation after it returns. For a loop task a hop is a `swift_task_switch` that looks
/// its executor preference up under the task's status lock: about 400 instructions.
@inline(__always)
nonisolated(nonsending) func suspendForLoop<Value>(_ body: (UnsafeContinuation<Value, Never>) -> Void) async -> Value {
    let result: Value = await Builtin.withUnsafeContinuation { (raw: Builtin.RawUnsafeContinuation) in
        // UnsafeContinuation is a frozen struct of this one pointer (its initializer is internal).
        body(unsafeBitCast(raw, to: UnsafeContinuation<Value, Never>.self))
    }
    let isolation = #isolation
    if let isolation { await returnTo(isolation) }
    return result
}

/// Does nothing, on `actor`: calling it hops there (see `suspendForLoop`).
@inline(never)
private func returnTo(_ isolation: isolated any Actor) async {}

extension LoopOperation.Entry {
    /// Queues the entry on `ring` with `userData`: 0, or -errno (-EBUSY: queue full).
    func prepare(_ ring: OpaquePointer, _ userData: UInt64) -> Int32 {
        switch self {
        case .prepared(let prepare): prepare(ring, userData)
        case .timeout(let deadline): mp_loop_timeout(ring, userData, deadline)
        case .send(let fd, let bytes, let length): mp_loop_send(ring, userData, fd, bytes, length)
        case .receive(let fd, let buffer, let length): mp_loop_recv(ring, userData, fd, buffer, length)
        case .receiveSelected(let fd, let length): mp_loop_recv_selected(ring, userData, fd, length)
        case .connect(let fd, let address):
            withUnsafePointer(to: address) { mp_loop_connect(ring, userData, fd, $0) }
        case .accept(let fd): mp_loop_accept(ring, userData, fd)
        case .close(let fd): mp_loop_close(ring, userData, fd)
        case .futexWait(let word, let expected, let shared, let deadline):
            mp_loop_futex_wait(ring, userData, word, expected, shared, deadline)
        }
    }
}

extension LoopOperation {
    /// What the cancellation handler of an awaited operation runs (`mp_task_set_cancel_fn`, set
    /// when a loop starts), on the thread that cancels its task.
    /// An operation awaited without an operation object has a tagged argument (see `LoopSlot`).
    static let cancelHandler: mp_cancel_fn = { raw in
        let tagged = UInt64(UInt(bitPattern: raw))
        if tagged & LoopSlot.tag != 0 { return EventLoop.cancelSlot(tagged) }
        let op = Unmanaged<LoopOperation>.fromOpaque(raw).takeUnretainedValue()
        op.cancelLoop?.schedule(.cancel(op))
    }
}

extension EventLoop {
    /// Runs one ring operation: its result (>= 0, or -errno for the caller to map), or a throw
    /// for cancellation (`CancellationError`) and shutdown (``EventLoopError/shutDown``). An
    /// operation that must finish (a close) is not `cancellable`.
    ///
    /// `nonisolated(nonsending)`, like the library's other async operations: it runs on the
    /// caller's executor instead of hopping to the generic one, which for a loop task is a
    /// preferred-executor look-up under the task's status lock (about 300 instructions a hop).
    nonisolated(nonsending) func perform(
        cancellable: Bool = true, _ prepare: @escaping LoopOperation.Prepare
    ) async throws -> Int32 {
        // What the closure captured (the buffers the kernel uses) lives until the completion.
        defer { extendLifetime(prepare) }
        return try await perform(.prepared(prepare), cancellable: cancellable)
    }

    /// Runs one operation of the typed kinds (see the closure form), its pointers into `owner`: in
    /// one of the loop's slots on its own thread (`LoopSlot`), else as an operation object.
    @inline(__always)
    nonisolated(nonsending) func perform(
        _ entry: LoopOperation.Entry, keeping owner: AnyObject? = nil, cancellable: Bool = true
    ) async throws -> Int32 {
        guard inEventLoop else {
            return try await perform(LoopOperation(entry, keeping: owner), cancellable: cancellable)
        }
        // The kernel may use what `owner` holds until the completion, which comes before this.
        defer { extendLifetime(owner) }
        let result = await awaitInSlot(entry, cancellable: cancellable)
        if result == LoopOperation.shutDownResult {
            // The loop's cancel-all may have ended it before this task's own cancel request did.
            if cancellable && Task.isCancelled { throw CancellationError() }
            throw EventLoopError.shutDown
        }
        // Only this task's cancellation handler names the operation (see `LoopSlot`).
        if result == -ECANCELED && cancellable && Task.isCancelled { throw CancellationError() }
        return result
    }

    /// A receive of up to `length` bytes into a buffer the kernel picks from the loop's ring: the
    /// result, and the bytes (copied out at the completion). In a slot on the loop's own thread.
    @inline(__always)
    nonisolated(nonsending) func receiveSelected(fd: Int32, length: UInt32) async throws -> (Int32, [UInt8]) {
        guard inEventLoop else {
            let op = LoopOperation(.receiveSelected(fd: fd, length: length))
            return (try await perform(op), op.received)
        }
        let received = await receiveInSlot(fd: fd, length: length)
        if received.result == LoopOperation.shutDownResult {
            if Task.isCancelled { throw CancellationError() }  // as `perform`
            throw EventLoopError.shutDown
        }
        if received.result == -ECANCELED && Task.isCancelled { throw CancellationError() }
        return (received.result, received.bytes)
    }

    /// Runs `op` (see the closure form). Inlined, with `submitAndWait`, into its callers: each async
    /// function is a frame of its own in the task's allocator, and a sleeping task's frames then
    /// overflowed its first slab.
    ///
    /// A task cancelled already gets its `CancellationError` without a look of its own: adding the
    /// cancellation handler runs it at once, which cancels the operation before it is submitted.
    @inline(__always)
    nonisolated(nonsending) func perform(_ op: LoopOperation, cancellable: Bool = true) async throws -> Int32 {
        let result = await op.submitAndWait(on: self, cancellable: cancellable)
        if result == LoopOperation.shutDownResult { throw EventLoopError.shutDown }
        if result == -ECANCELED && op.cancelRequested { throw CancellationError() }
        return result
    }
}

/// ThreadSanitizer does not see that a continuation's resume happens before the task goes on when
/// the resume comes first (the runtime's fast path, whose atomics it does not observe), and then
/// reports the task's next use of its frame as a race with the resume. Under TSan only, both sides
/// pass through one lock, which it does observe; other builds skip it.
/// (A flag and a lock in C rather than a lazily made Swift lock: a Swift global's first-use check
/// is a call on every resume.)
enum Handoff {
    @inline(__always)
    static func resume(_ body: () -> Void) {
        if mp_handoff_locks == 0 { return body() }
        mp_handoff_lock()
        body()
        mp_handoff_unlock()
    }

    @inline(__always)
    static func resumed() {
        if mp_handoff_locks == 0 { return }
        mp_handoff_lock()
        mp_handoff_unlock()
    }
}
