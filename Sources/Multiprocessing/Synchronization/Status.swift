import CMultiprocessing

/// Maps the C outcome of an acquire of `mutex` to Python's answer: true, false (timed out or
/// busy), or an error (`ownerDied` with the lock held).
@inline(__always)
func acquired(_ status: mp_status_t, _ mutex: UnsafeMutablePointer<mp_mutex_t>? = nil) throws(SyncError) -> Bool {
    switch status {
    case MP_OK: return true
    case MP_TIMED_OUT, MP_BUSY: return false
    case MP_OVERFLOW: throw .overflow
    case MP_NOT_HELD: throw .notHeld
    case MP_BROKEN: throw .brokenBarrier
    case MP_OWNER_DIED: throw .ownerDied(owner: mutex.map { Int32(bitPattern: $0.pointee.dead_owner) } ?? 0)
    default: unexpected(status)
    }
}

/// A status the lock family's C calls never return (a shutdown, an abort, corruption belong to
/// queues): a bug in this library, not an outcome to report as something else.
func unexpected(_ status: mp_status_t, function: StaticString = #function) -> Never {
    preconditionFailure("\(function): unexpected status \(status) from the C layer")
}

@inline(__always)
func released(_ status: mp_status_t) throws(SyncError) {
    switch status {
    case MP_OK: return
    case MP_OVERFLOW: throw .overflow
    case MP_NOT_HELD: throw .notHeld
    default: unexpected(status)
    }
}
