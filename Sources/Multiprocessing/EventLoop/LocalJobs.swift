/// A job the loop's own thread queued for its next turn. A trivial value, unlike `Work`: the
/// list takes no retain or release, and emptying it destroys nothing (with `Work` elements,
/// about 60 instructions per job).
struct LocalJob {
    let job: UnownedJob
    /// An actor's job (run isolated to the loop), else a job of a task that prefers the loop.
    let isolated: Bool
}

/// The jobs the loop's own thread queued, in order: a buffer of its own rather than an `Array`,
/// whose append checks uniqueness and capacity through a call (about 20 instructions per job,
/// and a sleeping task is two jobs). Only the loop's thread touches it; the loop frees it.
struct LocalJobs {
    private var base: UnsafeMutablePointer<LocalJob>
    private var capacity: Int
    private(set) var count = 0

    init() {
        capacity = 256
        base = .allocate(capacity: capacity)
    }

    var isEmpty: Bool { count == 0 }

    subscript(_ i: Int) -> LocalJob { base[i] }

    @inline(__always)
    mutating func append(_ job: LocalJob) {
        if count == capacity { grow() }
        (base + count).initialize(to: job)
        count &+= 1
    }

    /// Empties the list (its elements are trivial: nothing to destroy), keeping its buffer.
    mutating func removeAll() { count = 0 }

    private mutating func grow() {
        let larger = UnsafeMutablePointer<LocalJob>.allocate(capacity: capacity * 2)
        larger.moveInitialize(from: base, count: count)
        base.deallocate()
        base = larger
        capacity *= 2
    }

    /// Frees the buffer, when the loop goes.
    func deallocate() { base.deallocate() }
}
