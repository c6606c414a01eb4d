/// How a ``Queue`` orders the messages of different producers.
///
/// Each producer's own messages always arrive in the order it put them. Between producers:
///
/// - ``causal`` (the default, as Python's queues): a put that starts after another put has
///   returned, in any thread or process, is read after it. So "join the producers, then put one
///   sentinel per consumer" works: the sentinels come last. Producers take turns under one lock.
/// - ``perProducer``: only each producer thread's own order. An unbounded queue of a fixed-size
///   `BitwiseCopyable` element of at most 512 bytes then gives each producer thread a lock-free
///   lane of its own (no lock and no locked instruction per put; see <doc:QueueInternals>), and
///   consumers take from the lanes in turns, so a message can overtake one that another producer
///   put before it. End a stream with one sentinel per producer, or count the messages. Other
///   queues (bounded, joinable, `Codable`) ignore it and stay causal. A producer is a thread: a
///   Task of Swift's global executor may change threads at each suspension point, so its puts on
///   either side of one keep no order (its coroutines on an ``EventLoop`` all run on the loop's
///   thread and keep theirs); an awaited `put(contentsOf:)` keeps its own items in order.
public enum QueueOrdering: Sendable, Hashable {
    case causal
    case perProducer
}
