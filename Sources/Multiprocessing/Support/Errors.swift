import SystemPackage

/// Errors of the lock family: bad arguments and the outcomes Python reports as exceptions.
public enum SyncError: Error, Equatable, Sendable {
    /// A timeout below zero (Python raises `ValueError`).
    case negativeTimeout(Duration)
    /// Release of a lock that is not held, or of an `RLock` the caller does not own (Python's
    /// `RuntimeError`/`ValueError`), or `Condition.wait`/`notify` without holding its lock.
    case notHeld
    /// The lock was acquired, but its holder died without releasing it (like a robust mutex's
    /// `EOWNERDEAD`): `owner` is the dead process's id for a ``Lock``, the dead thread's for an
    /// ``RLock``. The caller holds the lock and should repair what it protects.
    case ownerDied(owner: Int32)
    /// A semaphore's initial value below zero or above ``Semaphore/maximumValue``.
    case invalidValue(Int)
    /// A `BoundedSemaphore` released past its initial value, or a counter past its limit.
    case overflow
    /// `Barrier(parties:)` with fewer than one party.
    case invalidParties(Int)
    /// The barrier was aborted, reset while the caller waited, a waiter timed out, the
    /// barrier's action threw in another party, or a process died holding the barrier's
    /// internal guard.
    case brokenBarrier
    /// The barrier's action, run by this caller as the last to arrive, threw (described here);
    /// the barrier is broken.
    case barrierActionFailed(String)
}

/// Errors of shared-memory regions and of the handles that name objects in them.
public enum SharedMemoryError: Error, Equatable, Sendable {
    /// A name that POSIX shared memory cannot hold (empty, over 250 bytes, or containing `/`).
    case invalidName(String)
    /// A size of zero, or too large to map.
    case invalidSize(Int)
    /// No region of that name exists.
    case notFound(String)
    /// `create` found a region of that name already there.
    case alreadyExists(String)
    /// The region is too small to carry this library's header, or smaller than its header says.
    case tooSmall(name: String, size: Int)
    /// The region does not start with this library's header: it is somebody else's.
    case notOurs(String)
    /// The region was made by an incompatible version of this library.
    case versionMismatch(name: String, found: UInt32, expected: UInt32)
    /// A handle names a region that is not mapped in this process (pass primitives to a spawned
    /// child through its arguments, or inherit them by fork).
    case unknownRegion(UInt64)
    /// A handle names a freed or different object.
    case staleHandle
    /// A descriptor handed to a child as a region is not one: not a memfd of this library (sealed
    /// against shrinking and growing) of at least its stated size.
    case invalidDescriptor(Int32)
    /// A named region that another user owns, or that others than its owner may open: attaching it
    /// is refused unless asked for (``SharedMemory/init(attach:allowingOtherOwners:)``).
    case untrusted(String)
    /// The operating system refused; `function` names the call.
    case system(Errno, function: String)
}

/// Errors of ``Process`` and ``Thread``.
public enum ProcessError: Error, Equatable, Sendable {
    /// `start()` on a process or thread that has already been started (Python's `RuntimeError`).
    case alreadyStarted
    /// `join`, `terminate` or `kill` before `start()`.
    case notStarted
    /// A timeout below zero.
    case negativeTimeout(Duration)
    /// A process cannot join itself.
    case joinSelf
    /// The operating system refused; `function` names the call.
    case system(Errno, function: String)
    /// The spawn or forkserver start method could not pass its arguments to the child.
    case argumentEncoding(String)
    /// The forkserver (or a pool's zygote) could not start, or stopped answering; the reason says
    /// which. A program whose `main` does not call ``Spawn/bootstrap(_:)-(SpawnEntry...)`` first
    /// cannot have a forkserver.
    case forkServerFailed(String)
    /// The start method cannot run this target: a registered target's body is `async`, and a forked
    /// child cannot use Swift concurrency (use ``Process/StartMethod/forkserver``).
    case unsupportedStartMethod(Process.StartMethod, target: String)
    /// `start()` on a ``Process`` that another process created, a copy a forked child inherited
    /// say: only the process that created it can start it (Python's "can only start a process
    /// object created by current process").
    case createdElsewhere
}
