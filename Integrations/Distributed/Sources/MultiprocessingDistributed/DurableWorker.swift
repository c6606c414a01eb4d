import Foundation
import Logging
import Multiprocessing
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// A worker host's service: claims a ``DurableQueue``'s tasks and runs them in local
/// forkserver ``Multiprocessing/ProcessPool``s (``HostedPool``), sized to the host.
///
/// ```swift
/// Spawn.bootstrap(square)                                   // first thing in main
/// let queue = DurableQueue(client: postgres, name: "default")
/// let worker = DurableWorker(queue: queue, pools: [try HostedPool(square)])
/// try await ServiceGroup(
///     services: [postgres, worker], gracefulShutdownSignals: [.sigterm], logger: logger
/// ).run()
/// ```
///
/// While running it:
/// - claims in batches (`FOR UPDATE SKIP LOCKED`), woken by `LISTEN mp_queued` and polling every
///   ``Configuration/pollInterval``, keeping each pool's processes busy plus ``Configuration/prefetch``;
/// - renews its leases every ``Configuration/heartbeat``;
/// - reaps expired leases of any host every ``Configuration/reapInterval``;
/// - stores outcomes in batches, fenced on (owner, attempt): a run whose lease was lost is refused.
///
/// A worker process that dies fails its task with a retryable error (the task runs again, after the
/// back-off). On graceful shutdown (SIGTERM in a `ServiceGroup`) the host claims no more, hands back
/// the tasks it claimed and has not started, finishes the running ones and stores their outcomes
/// (runs still going after ``Configuration/drainTimeout`` are ended and their tasks queued again).
public final class DurableWorker: Service, Sendable {
    /// How a host claims, leases and retries.
    public struct Configuration: Sendable {
        /// How long a claim holds without a heartbeat; a host silent for longer loses its tasks.
        public var lease: Duration = .seconds(10)
        /// How often leases are renewed: a third of the lease by default.
        public var heartbeat: Duration?
        /// How often the host looks for work when no notification comes.
        public var pollInterval: Duration = .seconds(1)
        /// How often the host reaps expired leases.
        public var reapInterval: Duration = .seconds(1)
        /// Tasks claimed beyond the processes, per pool, so that a process never waits for a claim
        /// (`max(16, 8 × processes)` when nil). Short tasks want many; long ones few (0: a claimed task
        /// never waits here while another host is idle).
        public var prefetch: Int?
        /// The most tasks one claim statement takes.
        public var claimBatch = 256
        /// The back-off of failed runs (and of reaped ones).
        public var retry = RetryPolicy()
        /// How long a graceful shutdown waits for running tasks (past it their pools are terminated and
        /// the tasks go back to the queue, their attempt counted), and then for storing outcomes.
        public var drainTimeout: Duration = .seconds(60)
        /// A readable prefix of the owner name (the host's name when nil).
        public var name: String?

        public init() {}

        /// The configuration a host runs with: a claim batch below 1 counts as 1, and intervals
        /// (`lease`, `heartbeat`, `pollInterval`, `reapInterval`) below 10 ms as 10 ms, since a
        /// zero or negative one would make a loop spin.
        var bounded: Configuration {
            let least = Duration.milliseconds(10)
            var bounded = self
            bounded.claimBatch = max(1, claimBatch)
            bounded.lease = max(least, lease)
            bounded.heartbeat = heartbeat.map { max(least, $0) }
            bounded.pollInterval = max(least, pollInterval)
            bounded.reapInterval = max(least, reapInterval)
            return bounded
        }
    }

    /// The name this host claims under: `name:pid:random`, unique per run.
    public let owner: String
    /// The queue it serves.
    public let queue: DurableQueue
    private let pools: [HostedPool]
    private let configuration: Configuration
    private let logger: Logger
    private let leases = LeaseBook()
    private let stats = Locked(WorkerStatistics())
    private let claimBell = Doorbell()
    private let stopping = Atomic<Bool>(false)

    /// A host serving `queue` with `pools`, one per worker name.
    public init(
        queue: DurableQueue, pools: [HostedPool], configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "mp.distributed.worker")
    ) {
        self.queue = queue
        self.pools = pools
        self.configuration = configuration.bounded
        let prefix = configuration.name ?? ProcessInfo.processInfo.hostName
        self.owner = "\(prefix):\(getpid()):\(String(UInt32.random(in: 0...UInt32.max), radix: 16))"
        var logger = logger
        logger[metadataKey: "owner"] = "\(owner)"
        self.logger = logger
    }

    /// A host serving `queue` with one pool: `pool`, which runs `worker` (a pool does not say which
    /// worker it runs, so both are named).
    public convenience init<Input, Output>(
        queue: DurableQueue, worker: PoolWorker<Input, Output>, pool: ProcessPool<Input, Output>,
        configuration: Configuration = Configuration(), logger: Logger = Logger(label: "mp.distributed.worker")
    ) {
        self.init(
            queue: queue, pools: [HostedPool(worker, pool: pool)], configuration: configuration, logger: logger)
    }

    /// What the host did so far.
    public var statistics: WorkerStatistics { stats.withLock { $0 } }

    /// Starts draining, as a graceful shutdown does.
    public func drain() {
        stopping.store(true, ordering: .relaxed)
        claimBell.ring()
    }

    public func run() async throws {
        let store = TaskStore(client: queue.client, logger: logger)
        let completer = Completer(
            store: store, owner: owner, retry: configuration.retry, leases: leases, statistics: stats, logger: logger)
        let buffers = pools.map { _ in LocalBuffer() }
        logger.info("worker host started", metadata: ["pools": "\(pools.map { "\($0.workerName)×\($0.processes)" })"])
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { background in
                background.addTask { await self.listenForWork() }
                background.addTask { await self.heartbeat(store) }
                background.addTask { await self.reap(store) }
                background.addTask { await completer.run() }
                let watchdog = Locked<Task<Void, Never>?>(nil)
                await withDiscardingTaskGroup { work in
                    for (pool, buffer) in zip(pools, buffers) {
                        // Two runners a process: the next task is in the pool's ring while one runs.
                        for _ in 0..<(2 * pool.processes) {
                            work.addTask { await self.runTasks(from: buffer, on: pool, completer: completer) }
                        }
                    }
                    await self.claimLoop(store, buffers)
                    await self.release(buffers.flatMap { $0.close() }, store)
                    // Runs still going at the drain deadline are ended: their pools are terminated, so
                    // each fails with a retryable error, stored below (the task is queued again).
                    let deadline = ContinuousClock.now + configuration.drainTimeout
                    watchdog.withLock {
                        $0 = Task { [pools, logger] in
                            try? await Task.sleep(until: deadline, clock: .continuous)
                            if Task.isCancelled { return }
                            logger.warning("drain deadline passed with tasks running: terminating their pools")
                            for pool in pools { pool.stop() }
                        }
                    }
                }
                watchdog.withLock { $0 }?.cancel()
                await completer.drain(until: .now + configuration.drainTimeout)
                background.cancelAll()
            }
        } onGracefulShutdown: {
            self.drain()
        }
        for pool in pools { pool.stop() }
        logger.info("worker host stopped", metadata: ["statistics": "\(statistics)"])
    }

    // MARK: Claiming and running

    private func claimLoop(_ store: TaskStore, _ buffers: [LocalBuffer]) async {
        // A claim abandoned at its deadline may still commit: its tasks would be running here unknown,
        // never renewed, an attempt spent on each when reaped. After a failed claim, hand such orphans
        // back every heartbeat: no claim of this loop is in flight then, so what the book lacks is one.
        let sweepInterval = configuration.heartbeat ?? configuration.lease / 3
        var nextSweep: ContinuousClock.Instant?
        while !stopping.load(ordering: .relaxed) && !Task.isCancelled {
            if let due = nextSweep, ContinuousClock.now >= due {
                nextSweep = .now + sweepInterval
                do {
                    let released = try await store.releaseOrphans(owner: owner, held: leases.all)
                    if !released.isEmpty {
                        logger.info("released tasks of an abandoned claim", metadata: ["count": "\(released.count)"])
                    }
                } catch {
                    logger.warning("releasing orphans failed", metadata: ["error": "\(error)"])
                }
            }
            var more = false
            for (pool, buffer) in zip(pools, buffers) {
                let prefetch = configuration.prefetch ?? max(16, 8 * pool.processes)
                let want = 2 * pool.processes + prefetch - buffer.load
                // Tops up by batches (half the prefetch at least) unless idle: fewer, larger claims.
                guard want > 0, want >= max(1, prefetch / 2) || buffer.load == 0 else { continue }
                let limit = min(want, configuration.claimBatch)
                do {
                    let claimed = try await store.claim(
                        queue: queue.name, workers: [pool.workerName], owner: owner, limit: limit,
                        lease: configuration.lease)
                    if !claimed.isEmpty {
                        leases.add(claimed)
                        stats.withLock { $0.claimed += claimed.count }
                        buffer.put(claimed)
                    }
                    if claimed.count == limit && limit < want { more = true }
                } catch {
                    logger.warning("claiming failed", metadata: ["error": "\(error)"])
                    if nextSweep == nil { nextSweep = .now }
                }
            }
            // Woken by a queued task, a freed slot, shutdown, or the poll.
            if !more { await claimBell.wait(upTo: configuration.pollInterval) }
        }
    }

    private func runTasks(from buffer: LocalBuffer, on pool: HostedPool, completer: Completer) async {
        while let task = await buffer.take() {
            let outcome = await pool.run(task)
            stats.withLock { $0.executed += 1 }
            completer.add(task, outcome)
            buffer.finished()
            claimBell.ring()
        }
    }

    /// Hands back claimed, unstarted tasks (draining): as if never claimed.
    private func release(_ tasks: [ClaimedTask], _ store: TaskStore) async {
        guard !tasks.isEmpty else { return }
        let deadline = ContinuousClock.now + configuration.drainTimeout
        while ContinuousClock.now < deadline {
            do {
                let released = try await store.release(owner: owner, tasks: tasks.map { ($0.id, $0.attempt) })
                leases.remove(tasks.map { ($0.id, $0.attempt) })
                stats.withLock { $0.released += released.count }
                logger.info("released unstarted tasks", metadata: ["count": "\(released.count)"])
                return
            } catch {
                logger.warning("releasing failed, retrying", metadata: ["error": "\(error)"])
                await pauseIgnoringCancellation(for: .milliseconds(250))
            }
        }
    }

    // MARK: Background loops

    private func listenForWork() async {
        let name = queue.name
        await listenForever(client: queue.client, channel: "mp_queued", logger: logger) { [claimBell] payload in
            if payload.isEmpty || payload == name { claimBell.ring() }
        }
    }

    private func heartbeat(_ store: TaskStore) async {
        let interval = configuration.heartbeat ?? configuration.lease / 3
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            let held = leases.all
            guard !held.isEmpty else { continue }
            do {
                // Bounded by the interval (half a second at least), not the store's 10 s: a renewal
                // stuck on a dead connection must give up while the next one can still save the leases.
                var renewing = store
                renewing.deadline = min(store.deadline, max(interval, .milliseconds(500)))
                let renewed = try await renewing.renew(owner: owner, tasks: held, lease: configuration.lease)
                for (id, attempt) in held where !renewed.contains(id) {
                    logger.debug("lease lost", metadata: ["task": "\(id)", "attempt": "\(attempt)"])
                }
            } catch {
                logger.warning("renewing leases failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func reap(_ store: TaskStore) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.reapInterval)
            do {
                let (requeued, failed) = try await store.reap(limit: 1000, retry: configuration.retry)
                if requeued + failed > 0 {
                    stats.withLock { $0.reaped += requeued + failed }
                    logger.info(
                        "reaped expired leases", metadata: ["requeued": "\(requeued)", "failed": "\(failed)"])
                }
            } catch {
                logger.debug("reaping failed", metadata: ["error": "\(error)"])
            }
        }
    }
}
