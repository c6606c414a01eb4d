import SystemPackage

/// Errors of ``Queue``, ``JoinableQueue`` and ``SimpleQueue``.
public enum QueueError: Error, Equatable, Sendable {
    /// A put found the queue full (for `putNowait`, or after its timeout): Python's `queue.Full`.
    case full
    /// A get found the queue empty (for `getNowait`, or after its timeout): Python's `queue.Empty`.
    case empty
    /// The queue was closed in this process.
    case closed
    /// The queue was shut down (Python 3.13's `queue.ShutDown`).
    case shutDown
    /// The queue's shared memory holds what no put of this library writes: another process wrote
    /// into it out of turn. The operation did nothing; this process refuses every later one on the
    /// queue (see <doc:TrustBoundaries>).
    case corrupted
    /// A message larger than the queue's `maxMessageSize`; nothing was put.
    case messageTooLarge(size: Int, limit: Int)
    /// A `maxSize` above `Int32.max` (nil, zero or less make an unbounded queue, as in Python).
    case invalidMaxSize(Int)
    /// A ring capacity below 4096 bytes, or above 4 GiB or the machine's memory; or a message
    /// limit below 1.
    case invalidCapacity(Int)
    /// A message could not be decoded as the queue's element type: a message of another type, or
    /// bytes that are no value of it (a `Bool` byte other than 0 or 1, an enum's unknown case),
    /// written by another process. It was consumed (in a ``JoinableQueue``, its task marked done);
    /// the messages after it are intact (see <doc:TrustBoundaries>).
    case decodingFailed(String)
    /// A message could not be encoded.
    case encodingFailed(String)
    /// A timeout below zero.
    case negativeTimeout(Duration)
    /// `taskDone()` called more times than items were put (Python's `ValueError`).
    case taskDoneTooManyTimes
    /// The operating system refused; `function` names the call.
    case system(Errno, function: String)
}
