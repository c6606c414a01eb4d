import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// One ring operation: how to queue it, who awaits it, and its state on the loop's thread.
///
/// Its address is the operation's user_data. The loop retains it from submission until its one
/// completion (so the closure's buffers stay alive while the kernel may use them), and resumes the
/// continuation exactly once: at that completion, or at once if it never reached the ring.
final class LoopOperation: @unchecked Sendable {
    /// Queues the operation with the given user_data; 0, or -errno (-EBUSY: queue full).
    typealias Prepare = (OpaquePointer, UInt64) -> Int32

    /// The result of an operation refused or cut short because its loop shut down.
    static let shutDownResult = Int32.min

    /// What the operation queues: a closure, or a timer, which needs no closure context (a sleep
    /// is the commonest operation, and its context was an allocation of its own).
    enum Entry {
        case prepared(Prepare)
        case timeout(deadline: Int64)
    }

    let entry: Entry
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

    init(_ prepare: @escaping Prepare) { entry = .prepared(prepare) }
    init(timeoutAt deadline: Int64) { entry = .timeout(deadline: deadline) }

    /// Queues the operation on `ring` with `userData`: 0, or -errno (-EBUSY: queue full).
    func prepare(_ ring: OpaquePointer, _ userData: UInt64) -> Int32 {
        switch entry {
        case .prepared(let prepare): prepare(ring, userData)
        case .timeout(let deadline): mp_loop_timeout(ring, userData, deadline)
        }
    }

    var address: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
    var userData: UInt64 { UInt64(UInt(bitPattern: address)) }

    func finish(_ result: Int32) {
        precondition(!finished, "an operation completes once")
        finished = true
        let c = continuation
        continuation = nil
        Handoff.resume { c?.resume(returning: result) }
    }

    /// Queues the operation on `loop` and suspends until its completion. The continuation is the
    /// form without an `isolation` parameter: `withUnsafeContinuation(isolation:)` first hops to
    /// that isolation, a preferred-executor look-up for a loop task (280 instructions); this one
    /// only suspends, and resumes on the executor it suspended on, which is the caller's.
    @inline(__always)
    nonisolated(nonsending) func submitAndWait(on loop: EventLoop, cancellable: Bool) async -> Int32 {
        defer { Handoff.resumed() }
        if !cancellable {
            return await _unsafeInheritExecutor_withUnsafeContinuation { c in
                continuation = c
                loop.schedule(.submit(self))
            }
        }
        // Not `withTaskCancellationHandler`, whose nonisolated operation closure a loop task
        // hops to enter (see task_cancel.c). The handler runs on the thread that cancels the task,
        // and only until the record is removed: `self` and `loop` outlive it.
        cancelLoop = loop
        let handler = mp_task_add_cancel_handler(address)
        defer { mp_task_remove_cancel_handler(handler) }
        return await _unsafeInheritExecutor_withUnsafeContinuation { c in
            continuation = c
            loop.schedule(.submit(self))
        }
    }
}

extension LoopOperation {
    /// What the cancellation handler of an awaited operation runs (`mp_task_set_cancel_fn`, set
    /// when a loop starts), on the thread that cancels its task.
    static let cancelHandler: mp_cancel_fn = { raw in
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
        try await perform(LoopOperation(prepare), cancellable: cancellable)
    }

    /// Runs `op` (see the closure form). Inlined, with `submitAndWait`, into its callers: each async
    /// function is a frame of its own in the task's allocator, and a sleeping task's frames then
    /// overflowed its first slab.
    @inline(__always)
    nonisolated(nonsending) func perform(_ op: LoopOperation, cancellable: Bool = true) async throws -> Int32 {
        if cancellable { try Task.checkCancellation() }
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
enum Handoff {
    static let lock: InternalLock? = mp_built_with_tsan() != 0 ? InternalLock() : nil

    @inline(__always)
    static func resume(_ body: () -> Void) {
        if let lock { lock.withLock(body) } else { body() }
    }

    @inline(__always)
    static func resumed() { lock?.withLock {} }
}
