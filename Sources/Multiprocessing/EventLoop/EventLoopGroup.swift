/// Several event loops, one thread each (one per core by default), for services that spread
/// connections over them: ``next()`` hands them out in turn.
public final class EventLoopGroup: Sendable {
    /// The loops, in the order ``next()`` hands them out.
    public let loops: [EventLoop]
    private let turn = Locked(0)

    /// Starts `loopCount` loops. Throws ``EventLoopError/unavailable(_:)`` without io_uring, and
    /// for fewer than one loop.
    public init(loopCount: Int = cpuCount) throws(EventLoopError) {
        guard loopCount >= 1 else { throw .unavailable(.invalidArgument) }
        var loops: [EventLoop] = []
        do {
            for i in 0..<loopCount { loops.append(try EventLoop(name: "EventLoop-\(i)")) }
        } catch {
            for loop in loops { loop.shutdown() }
            throw error
        }
        self.loops = loops
    }

    /// The next loop, round robin.
    public func next() -> EventLoop {
        loops[
            turn.withLock { i -> Int in
                defer { i = (i + 1) % loops.count }
                return i
            }]
    }

    /// Shuts every loop down (see ``EventLoop/shutdown()``).
    public func shutdown() {
        for loop in loops { loop.shutdown() }
    }

    /// ``shutdown()`` from async code: suspends until every loop's thread has ended, rather than
    /// holding a thread of Swift's cooperative pool (call it from a task that is not on one of
    /// these loops). A cancelled task still shuts the loops down and waits for them: a shutdown
    /// skipped by a cancellation (a service group's) would leave their threads running.
    public func shutdownGracefully() async throws {
        try await BlockingPool.shared.run { self.shutdown() }
    }
}
