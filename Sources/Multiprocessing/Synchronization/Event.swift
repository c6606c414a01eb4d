import CMultiprocessing

/// A flag that threads and processes wait for (Python's `Event`): `set` wakes every waiter, `clear`
/// lowers the flag, `wait` returns at once while it is set.
public final class Event: @unchecked Sendable, Codable {
    let object: SharedObject
    let event: UnsafeMutablePointer<mp_event_t>

    /// A new event, not set.
    public init() {
        object = SharedObject(kind: .event)
        event = object.pointer(to: mp_event_t.self)
        mp_event_init(event, 1)
    }

    /// Sets the flag and wakes every waiter (no system call when nobody waits).
    public func set() { mp_event_set(event) }

    /// Lowers the flag.
    public func clear() { mp_event_clear(event) }

    /// Whether the flag is set.
    public var isSet: Bool { mp_event_is_set(event) != 0 }

    /// Blocks until the flag is set.
    public func wait() { _ = mp_event_wait(event, Int64(MP_FOREVER)) }

    /// Waits up to `timeout`; returns true if the event was set (even if cleared again since).
    public func wait(timeout: Duration) throws(SyncError) -> Bool {
        mp_event_wait(event, try Deadline.after(timeout, SyncError.self)) == MP_OK
    }

    public func encode(to encoder: any Encoder) throws { try object.encode(to: encoder) }

    public init(from decoder: any Decoder) throws {
        object = try SharedObject.decode(.event, from: decoder)
        event = object.pointer(to: mp_event_t.self)
    }
}
