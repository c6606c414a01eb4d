import CMultiprocessing

/// A counting semaphore between threads and processes (Python's `Semaphore`).
///
/// `acquire` takes a permit, waiting while there is none; `release` gives permits back. With no
/// thread asleep, neither makes a system call.
public class Semaphore: @unchecked Sendable, Codable {
    /// The largest value a semaphore can hold.
    public static let maximumValue = Int(MP_SEMAPHORE_MAX)

    let object: SharedObject
    let semaphore: UnsafeMutablePointer<mp_semaphore_t>

    /// A semaphore with `value` permits. Throws ``SyncError/invalidValue(_:)`` below zero.
    public convenience init(value: Int = 1) throws(SyncError) {
        try self.init(value: value, limit: Semaphore.maximumValue)
    }

    init(value: Int, limit: Int) throws(SyncError) {
        guard value >= 0, value <= Semaphore.maximumValue else { throw .invalidValue(value) }
        object = SharedObject(kind: .semaphore)
        semaphore = object.pointer(to: mp_semaphore_t.self)
        mp_semaphore_init(semaphore, UInt32(value), UInt32(limit), 1)
    }

    /// Blocks until a permit is taken. It does not throw because it cannot fail: a semaphore has
    /// no owner whose death it could report, unlike ``Lock/acquire()-1vtaf`` (in this library a call
    /// throws exactly when it can fail; ``acquire(timeout:)-3zkx1`` can, with a negative timeout).
    public func acquire() {
        _ = mp_semaphore_acquire(semaphore, Int64(MP_FOREVER))
    }

    /// Waits up to `timeout` for a permit; returns whether one was taken.
    public func acquire(timeout: Duration) throws(SyncError) -> Bool {
        try acquired(mp_semaphore_acquire(semaphore, Deadline.after(timeout, SyncError.self)))
    }

    /// Takes a permit if one is free; never blocks.
    public func tryAcquire() -> Bool { mp_semaphore_acquire(semaphore, Int64(MP_NOW)) == MP_OK }

    /// Gives back `n` permits, waking up to `n` waiters. Throws ``SyncError/overflow`` (changing
    /// nothing) past ``maximumValue`` or a ``BoundedSemaphore``'s initial value, and
    /// ``SyncError/invalidValue(_:)`` for n < 1.
    public func release(_ n: Int = 1) throws(SyncError) {
        guard n >= 1 else { throw .invalidValue(n) }
        guard n <= Semaphore.maximumValue else { throw .overflow }
        try released(mp_semaphore_release(semaphore, UInt32(n)))
    }

    /// The number of free permits (a snapshot; Python's `get_value()`).
    public var value: Int { Int(mp_semaphore_value(semaphore)) }

    /// Runs `body` holding a permit, and gives it back however `body` ends. Throws only what `body`
    /// throws: taking a permit cannot fail (a semaphore has no owner that could die).
    public func withPermit<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        acquire()
        defer { _ = mp_semaphore_release(semaphore, 1) }
        return try body()
    }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }

    /// Resolves a semaphore handed over by another process.
    public required init(from decoder: any Decoder) throws {
        object = try SharedObject.decode(.semaphore, from: decoder)
        semaphore = object.pointer(to: mp_semaphore_t.self)
    }
}

/// A semaphore that refuses to be released past its initial value (Python's `BoundedSemaphore`,
/// a subclass of `Semaphore` there too): such a release throws ``SyncError/overflow`` and changes
/// nothing.
public final class BoundedSemaphore: Semaphore, @unchecked Sendable {
    /// A bounded semaphore with `value` permits, which is also its limit.
    public init(value: Int = 1) throws(SyncError) {
        try super.init(value: value, limit: value)
    }

    public required init(from decoder: any Decoder) throws { try super.init(from: decoder) }
}
