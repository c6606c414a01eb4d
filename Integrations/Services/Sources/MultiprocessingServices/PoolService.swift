import Multiprocessing
import ServiceLifecycle

/// A ``ProcessPool`` or ``ThreadPool`` as a swift-service-lifecycle `Service`: it runs until the
/// service group shuts down. On graceful shutdown (SIGTERM, say) it stops taking tasks, lets the
/// submitted ones finish (up to `drainTimeout`), then ends with its workers; on cancellation, or
/// past the drain timeout, it terminates the pool (what had not finished fails with
/// `PoolError.terminated`; a ``ThreadPool``'s running tasks cannot be stopped: they finish on
/// their threads, and past the drain timeout the service ends without waiting for them).
///
/// ```swift
/// let pool = try ProcessPool(processes: 4, startMethod: .forkserver, worker: primes)
/// let group = ServiceGroup(
///     services: [PoolService(pool), server], gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// ```
public struct PoolService: Service {
    private let drain: @Sendable (Duration?) async throws -> Bool
    private let terminate: @Sendable () -> Void
    private let drainTimeout: Duration?

    /// Runs `pool` as a service; a graceful shutdown waits up to `drainTimeout` (forever when nil;
    /// a negative one is zero) for its tasks.
    public init<Input, Output>(_ pool: ProcessPool<Input, Output>, drainTimeout: Duration? = .seconds(30)) {
        drain = { try await pool.shutdownGracefully(timeout: $0) }
        terminate = { pool.terminate() }
        // The pool would refuse a negative timeout after closing, and nothing would end its workers.
        self.drainTimeout = drainTimeout.map { max($0, .zero) }
    }

    /// Runs `pool` as a service (see the process pool's form).
    public init(_ pool: ThreadPool, drainTimeout: Duration? = .seconds(30)) {
        drain = { try await pool.shutdownGracefully(timeout: $0) }
        terminate = { pool.terminate() }
        self.drainTimeout = drainTimeout.map { max($0, .zero) }
    }

    public func run() async throws {
        // Returns at the graceful shutdown; throws CancellationError when the group cancels us.
        do {
            try await gracefulShutdown()
        } catch {
            terminate()
            throw error
        }
        _ = try await drain(drainTimeout)  // terminates by itself past the timeout or on cancellation
    }
}

/// An ``EventLoopGroup`` as a `Service`: at the group's shutdown (graceful or cancelled) its loops
/// stop (their in-flight operations fail with `EventLoopError.shutDown`) and their threads end.
public struct EventLoopGroupService: Service {
    private let loops: EventLoopGroup

    public init(_ loops: EventLoopGroup) { self.loops = loops }

    public func run() async throws {
        let cancelled: (any Error)?
        do {
            try await gracefulShutdown()
            cancelled = nil
        } catch {
            cancelled = error
        }
        try await loops.shutdownGracefully()
        if let cancelled { throw cancelled }
    }
}
