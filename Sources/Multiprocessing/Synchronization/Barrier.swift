import CMultiprocessing

/// A barrier for a fixed number of parties, between threads and processes (Python's `Barrier`).
///
/// Each party calls ``wait()``; all are released when the last arrives, each with a distinct
/// index in `0..<parties`. ``abort()`` breaks it, ``reset()`` returns it to the empty state
/// (current waiters get ``SyncError/brokenBarrier``), and a waiter's timeout breaks it, as in Python.
/// A process killed while it holds the barrier's internal guard breaks it too (its change is
/// unknown); one killed while it waits is not detected: the others' timeouts or a ``reset()`` free
/// the barrier.
///
/// ```swift
/// let barrier = try Barrier(parties: 3, action: { print("all three arrived") }, timeout: .seconds(5))
/// ```
///
/// The `action` runs once per pass, in the last party to arrive, before any party is released (as
/// Python's). It runs in that party's process: a forked child's handle shares it, but a handle a
/// spawned child decodes has none; give it one with ``init(sharing:action:)`` when the child may be
/// the last to arrive.
public final class Barrier: @unchecked Sendable, Codable {
    let object: SharedObject
    let barrier: UnsafeMutablePointer<mp_barrier_t>
    /// This process's action (not shared: a closure cannot be).
    let action: (@Sendable () throws -> Void)?

    /// A barrier for `parties` parties; throws ``SyncError/invalidParties(_:)`` below one and
    /// ``SyncError/negativeTimeout(_:)`` for a negative `timeout`.
    ///
    /// - Parameters:
    ///   - parties: How many must call ``wait()`` before any of them passes.
    ///   - action: Run by the last party to arrive, before the others are released. If it throws,
    ///     the barrier breaks: that party's wait throws ``SyncError/barrierActionFailed(_:)``, the
    ///     others' ``SyncError/brokenBarrier``.
    ///   - timeout: The default for ``wait()``: a wait that lasts longer breaks the barrier and
    ///     throws ``SyncError/brokenBarrier``, as Python's `Barrier(timeout=)`. nil: none.
    public init(parties: Int, action: (@Sendable () throws -> Void)? = nil, timeout: Duration? = nil)
        throws(SyncError)
    {
        guard parties >= 1, parties <= Int(Int32.max) else { throw .invalidParties(parties) }
        let defaultTimeout = try timeout.map { (t) throws(SyncError) -> UInt64 in
            UInt64(max(1, try Deadline.nanoseconds(t, SyncError.self)))
        }
        object = SharedObject(kind: .barrier)
        barrier = object.pointer(to: mp_barrier_t.self)
        self.action = action
        mp_barrier_init(barrier, UInt32(parties), 1, defaultTimeout ?? 0)
    }

    /// Another handle of `other`'s barrier in this process, whose waits run `action` when they
    /// release a pass (for a handle a spawned child decoded, which carries no action).
    public init(sharing other: Barrier, action: @escaping @Sendable () throws -> Void) {
        object = other.object
        barrier = other.barrier
        self.action = action
    }

    /// The number of parties needed to pass the barrier.
    public var parties: Int { Int(barrier.pointee.parties) }

    /// The default timeout of ``wait()``; nil when it has none.
    public var timeout: Duration? {
        // Shared memory: any value another process wrote is read as some duration, never trusted more.
        let ns = barrier.pointee.default_timeout_ns
        return ns == 0 ? nil : .nanoseconds(Int64(clamping: ns))
    }

    /// The number of parties waiting now (a snapshot, read without the barrier's internal guard:
    /// it never waits, even while a stopped process holds that guard).
    public var waiting: Int { Int(mp_barrier_waiting(barrier)) }

    /// Whether the barrier is broken (a snapshot; it never waits, as ``waiting``).
    public var isBroken: Bool { mp_barrier_is_broken(barrier) != 0 }

    /// Waits for all parties; returns this caller's arrival index.
    /// Throws ``SyncError/brokenBarrier`` if the barrier is or becomes broken, or if the barrier's
    /// default ``timeout`` passes (which breaks it); ``SyncError/barrierActionFailed(_:)`` if this
    /// caller ran the action and it threw.
    @discardableResult
    public func wait() throws(SyncError) -> Int {
        let ns = barrier.pointee.default_timeout_ns
        let deadline = ns == 0 ? Int64(MP_FOREVER) : Deadline.after(nanoseconds: Int64(clamping: ns))
        guard let index = try pass(deadline) else { throw .brokenBarrier }  // timed out: broken
        return index
    }

    /// Waits up to `timeout` (instead of the default). Returns the arrival index, or nil if the
    /// timeout passed, which breaks the barrier for everyone (as Python does). A wait whose timeout
    /// passes before it could join (the previous cycle still leaving, or another process holding
    /// the barrier's internal guard) returns nil and leaves the barrier as it was. Once joined, a
    /// wait returns by its timeout (give or take an owner check, 20 ms) even while a stopped
    /// process holds that guard; it then breaks the barrier as any timeout does.
    public func wait(timeout: Duration) throws(SyncError) -> Int? {
        try pass(try Deadline.after(timeout, SyncError.self))
    }

    /// One wait, by `deadline`: the index, nil on a timeout, or the error.
    private func pass(_ deadline: Int64) throws(SyncError) -> Int? {
        var index: UInt32 = 0
        guard let action else {
            guard try acquired(mp_barrier_wait(barrier, deadline, &index, nil, nil)) else { return nil }
            return Int(index)
        }
        let run = ActionRun(action)
        let status = withExtendedLifetime(run) {
            mp_barrier_wait(barrier, deadline, &index, runAction, Unmanaged.passUnretained(run).toOpaque())
        }
        if let failure = run.failure { throw .barrierActionFailed(String(describing: failure)) }
        guard try acquired(status) else { return nil }
        return Int(index)
    }

    /// Returns the barrier to the empty state; current waiters get ``SyncError/brokenBarrier``.
    /// Parties the barrier has already released still pass, as in Python. It takes the barrier's
    /// internal guard without a timeout, as Python's takes its lock: a process that died holding
    /// the guard is detected and the guard taken over, but one stopped (SIGSTOP, a debugger)
    /// while holding it delays the reset until it runs again.
    public func reset() { mp_barrier_reset(barrier) }

    /// Breaks the barrier: current and future waiters get ``SyncError/brokenBarrier`` until reset.
    /// It never waits (no internal guard is taken).
    public func abort() { mp_barrier_abort(barrier) }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }

    /// Resolves a barrier handed over by another process; its default timeout comes along, its
    /// action does not (see ``init(sharing:action:)``).
    public init(from decoder: any Decoder) throws {
        object = try SharedObject.decode(.barrier, from: decoder)
        barrier = object.pointer(to: mp_barrier_t.self)
        action = nil
    }
}

/// One wait's action and what it threw, for the C barrier's callback.
private final class ActionRun {
    let action: @Sendable () throws -> Void
    var failure: (any Error)?
    init(_ action: @escaping @Sendable () throws -> Void) { self.action = action }
}

/// The C barrier's action callback: runs the wait's action; nonzero (breaking the barrier) if it threw.
private func runAction(_ context: UnsafeMutableRawPointer?) -> Int32 {
    guard let context else { return 1 }
    let run = Unmanaged<ActionRun>.fromOpaque(context).takeUnretainedValue()
    do {
        try run.action()
        return 0
    } catch {
        run.failure = error
        return 1
    }
}
