import CMultiprocessing

/// A barrier for a fixed number of parties, between threads and processes (Python's `Barrier`).
///
/// Each party calls ``wait()``; all are released when the last arrives, each with a distinct
/// index in `0..<parties`. ``abort()`` breaks it, ``reset()`` returns it to the empty state
/// (current waiters get ``SyncError/brokenBarrier``), and a waiter's timeout breaks it, as in Python.
public final class Barrier: @unchecked Sendable, Codable {
    let object: SharedObject
    let barrier: UnsafeMutablePointer<mp_barrier_t>

    /// A barrier for `parties` parties; throws ``SyncError/invalidParties(_:)`` below one.
    public init(parties: Int) throws(SyncError) {
        guard parties >= 1, parties <= Int(Int32.max) else { throw .invalidParties(parties) }
        object = SharedObject(kind: .barrier)
        barrier = object.pointer(to: mp_barrier_t.self)
        mp_barrier_init(barrier, UInt32(parties), 1)
    }

    /// The number of parties needed to pass the barrier.
    public var parties: Int { Int(barrier.pointee.parties) }

    /// The number of parties waiting now.
    public var waiting: Int { Int(mp_barrier_waiting(barrier)) }

    /// Whether the barrier is broken.
    public var isBroken: Bool { mp_barrier_is_broken(barrier) != 0 }

    /// Waits for all parties; returns this caller's arrival index.
    /// Throws ``SyncError/brokenBarrier`` if the barrier is or becomes broken.
    @discardableResult
    public func wait() throws(SyncError) -> Int {
        var index: UInt32 = 0
        _ = try acquired(mp_barrier_wait(barrier, Int64(MP_FOREVER), &index))
        return Int(index)
    }

    /// Waits up to `timeout`. Returns the arrival index, or nil if the timeout passed, which
    /// breaks the barrier for everyone (as Python does).
    public func wait(timeout: Duration) throws(SyncError) -> Int? {
        var index: UInt32 = 0
        guard try acquired(mp_barrier_wait(barrier, try absoluteDeadline(timeout), &index)) else { return nil }
        return Int(index)
    }

    /// Returns the barrier to the empty state; current waiters get ``SyncError/brokenBarrier``.
    public func reset() { mp_barrier_reset(barrier) }

    /// Breaks the barrier: current and future waiters get ``SyncError/brokenBarrier`` until reset.
    public func abort() { mp_barrier_abort(barrier) }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }

    public init(from decoder: any Decoder) throws {
        object = try SharedObject.decode(.barrier, from: decoder)
        barrier = object.pointer(to: mp_barrier_t.self)
    }
}
