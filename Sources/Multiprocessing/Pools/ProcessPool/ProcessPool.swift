import CMultiprocessing

/// A pool of worker processes that run one work function (Python's `multiprocessing.Pool`).
///
/// The work function is fixed when the pool is made; tasks are its inputs, results its outputs,
/// both `Codable & Sendable` (fixed-size trivial values such as `Int` or `Double` are copied as they
/// are, others travel in a compact binary encoding). Tasks and results move through shared-memory
/// rings; with nobody waiting, submitting a task and getting its result make no system call.
///
/// ```swift
/// let pool = try ProcessPool(processes: 5) { (task: String) -> Double in
///     let start = ContinuousClock.now; try sleep(for: .seconds(Double.random(in: 0..<2)))
///     return (ContinuousClock.now - start).seconds
/// }
/// for t in ["听音乐", "吃饭", "洗衣服", "散步", "做饭"] {
///     pool.applyAsync(t, callback: { print("完成用时", $0) }, errorCallback: { print("failed", $0) })
/// }
/// pool.close(); try pool.join(); print("----------over----------")
/// ```
///
/// A pool never hangs on a dead worker: a worker killed by a signal, crashed, or exited in the middle
/// of a task fails that task only, with ``PoolError/workerDied(pid:reason:)`` naming its pid and
/// signal; a replacement starts and every other task completes. An error thrown by the work
/// function comes back as itself when its type is `Codable` (as Python re-raises the worker's
/// exception), otherwise as ``PoolError/taskFailed(type:message:)`` with its type and description.
///
/// Callbacks run in the parent, on the pool's one result thread, in completion order (as in
/// Python); a callback must not wait for another result of the same pool (that throws
/// ``PoolError/calledFromCallback``). Dropping the last reference to an open pool terminates it,
/// and so does the program's normal end for a pool still running then (as Python's do).
public final class ProcessPool<Input: Codable & Sendable, Output: Codable & Sendable>: @unchecked Sendable {
    let core: PoolCore
    private let inputCodec = ValueCodec<Input>()

    /// The number of worker processes.
    public var processes: Int { core.processes }

    /// The process ids of the workers running now (replacements appear as workers are replaced).
    public var workerPIDs: [Int32] { core.workerPIDs }

    /// The number of workers the start-up watchdog has killed and replaced for being stuck before
    /// their first task (see <doc:StartMethods>). Each is also logged to stderr. Always 0 for
    /// forkserver and spawned workers, which are not watched: they inherit no lock.
    public var watchdogReplacements: Int { core.watcher.replacements }

    /// How many zygotes this pool killed and forked again, when it was made, because they did not
    /// prove themselves in time (a Swift runtime lock held by another thread at the fork; see
    /// <doc:StartMethods>). Each is also logged to stderr. Always 0 for a pool over a registered
    /// ``PoolWorker`` with the forkserver or spawn start method, which has no zygote.
    public var zygoteRestarts: Int { core.zygoteRestarts }

    /// A pool of `processes` workers (``cpuCount`` when nil) running `work`, forked from the pool's
    /// own zygote.
    ///
    /// A closure cannot cross an exec, so its workers must be forked from a copy of this process:
    /// the pool forks a zygote once, here, on the calling thread, before it starts any thread of its
    /// own, and the zygote forks every worker and replacement from its single thread. The one fork
    /// on the calling thread is the remaining hazard: if another thread of this program holds a
    /// Swift runtime lock at that instant, the workers can get stuck (the watchdog then replaces
    /// them, and after three in a row the pool fails with ``PoolError/workersCannotStart(_:)``).
    /// In programs with busy threads, prefer a ``PoolWorker`` and the forkserver start method:
    /// ``init(processes:maxTasksPerChild:startMethod:observer:worker:)``.
    ///
    /// - Parameters:
    ///   - processes: how many workers: ``cpuCount`` when nil.
    ///   - initializer: runs once in each worker before its first task. If it throws (or kills
    ///     three workers in a row), the pool cannot work: every task fails with
    ///     ``PoolError/initializerFailed(type:message:)``.
    ///   - maxTasksPerChild: a worker exits after this many tasks (a chunk of `map` is one task)
    ///     and a fresh one replaces it, without losing a task. Nil: workers live as long as the pool.
    ///   - observer: told of tasks, worker deaths and replacements, for logs and metrics (see
    ///     ``PoolObserver``).
    ///   - work: runs in the worker processes, as plain blocking code (a forked child cannot use
    ///     Swift concurrency).
    /// - Throws: ``PoolError/invalidWorkerCount(_:)``, ``PoolError/invalidMaxTasksPerChild(_:)``, or
    ///   ``PoolError/system(_:function:)`` if the workers cannot start.
    public convenience init(
        processes: Int? = nil, initializer: (@Sendable () throws -> Void)? = nil, maxTasksPerChild: Int? = nil,
        observer: (any PoolObserver)? = nil, work: @escaping @Sendable (Input) throws -> Output
    ) throws(PoolError) {
        var options = PoolOptions()
        options.observer = observer
        self.init(core: try ProcessPool.forkingCore(processes, maxTasksPerChild, work, initializer, options))
    }

    /// A pool whose workers run a registered ``PoolWorker``, started with `startMethod`:
    /// - ``Process/StartMethod/forkserver`` (the default): forked by this program's forkserver, a
    ///   clean copy of the program started by exec, so a worker inherits no lock from this process's
    ///   threads: safe in threaded programs (a server, async code), and quick to start;
    /// - ``Process/StartMethod/spawn``: each worker is this program started again;
    /// - ``Process/StartMethod/fork``: forked from the pool's zygote, as the closure initializer does.
    ///
    /// The program must call ``Spawn/bootstrap(_:)-(SpawnEntry...)`` with `worker` first thing in
    /// `main`, for the forkserver and spawn start methods. `observer` is told of the pool's events
    /// (see ``PoolObserver``).
    public convenience init(
        processes: Int? = nil, maxTasksPerChild: Int? = nil, startMethod: Process.StartMethod = .forkserver,
        observer: (any PoolObserver)? = nil, worker: PoolWorker<Input, Output>
    ) throws(PoolError) {
        var options = PoolOptions()
        options.observer = observer
        self.init(core: try ProcessPool.registeredCore(processes, maxTasksPerChild, startMethod, worker, options))
    }

    /// Tasks submitted and not yet finished (the pool's queue depth and in-flight tasks together).
    public var unfinishedTasks: Int { core.unfinishedTasks }

    init(core: PoolCore) { self.core = core }

    /// The core of a pool over a registered worker.
    static func registeredCore(
        _ processes: Int?, _ maxTasksPerChild: Int?, _ startMethod: Process.StartMethod,
        _ worker: PoolWorker<Input, Output>, _ options: PoolOptions
    ) throws(PoolError) -> PoolCore {
        if startMethod == .fork {
            return try forkingCore(processes, maxTasksPerChild, worker.work, worker.initializer, options)
        }
        return try PoolCore(
            channels: try channels(processes, maxTasksPerChild),
            launcher: .registered(name: worker.name, startMethod: startMethod, maxTasks: maxTasksPerChild),
            options: options)
    }

    /// The core of a pool over `work`, forked from a zygote made here, on the calling thread.
    static func forkingCore(
        _ processes: Int?, _ maxTasksPerChild: Int?, _ work: @escaping @Sendable (Input) throws -> Output,
        _ initializer: (@Sendable () throws -> Void)?, _ options: PoolOptions
    ) throws(PoolError) -> PoolCore {
        let channels = try channels(processes, maxTasksPerChild)
        // Made before the fork, and again in the zygote: its workers find the loop's generic metadata made.
        WorkerLoop<Input, Output>.warmUp()
        let parent = mp_process_id()
        let zygote: Zygote
        do {
            zygote = try Zygote(
                stalling: options.stallingZygotes, readyLimit: options.zygoteReadyLimit,
                killedAfterReply: options.zygoteKilledAfterFirstReply,
                warmUp: WorkerLoop<Input, Output>.warmUp
            ) { tag in
                let worker = ZygoteWorker(tag)
                CurrentProcess.set(Process(current: worker.name, daemon: true, pid: mp_process_id(), parentPID: parent))
                WorkerLoop(
                    channels: channels, index: worker.index, maxTasks: maxTasksPerChild, initializer: initializer,
                    work: work
                ).run(stall: worker.stall)
                // As every child this library starts ends (a registered worker's included): what the
                // work started (a pool, a child, a forkserver, a tracker) is ended and reaped here.
                Fork.exitChild(0)
            }
        } catch {
            throw PoolError(starting: error)
        }
        return try PoolCore(channels: channels, launcher: .zygote(zygote), options: options)
    }

    private static func channels(_ processes: Int?, _ maxTasksPerChild: Int?) throws(PoolError) -> PoolChannels {
        if let maxTasksPerChild, maxTasksPerChild < 1 { throw .invalidMaxTasksPerChild(maxTasksPerChild) }
        let count = processes ?? cpuCount
        guard count >= 1 else { throw .invalidWorkerCount(count) }
        return try PoolChannels(workers: count)
    }

    deinit { core.terminate() }

    // MARK: Tasks

    /// Runs `work(input)` in a worker and waits for the result (Python's `apply`). Throws the
    /// work function's own error when it is `Codable` (see <doc:Pools>), otherwise a ``PoolError``.
    public func apply(_ input: Input) throws -> Output {
        try applyAsync(input).get()
    }

    /// Submits `work(input)` and returns at once (Python's `apply_async`). `callback` gets the
    /// result, or `errorCallback` the error, on the pool's result thread. On a closed pool the
    /// handle fails with ``PoolError/closed`` (and `errorCallback` runs on the calling thread).
    @discardableResult
    public func applyAsync(
        _ input: Input, callback: (@Sendable (Output) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) -> AsyncResult<Output> {
        let handle = AsyncResult<Output>(delivery: core.delivery, callback: callback, errorCallback: errorCallback)
        let codec = inputCodec
        core.submit(PendingTask(handle), form: .single, count: 1) { emit throws(PoolError) in
            try codec.withBytes(of: input, emit)
        }
        return handle
    }

    /// Runs `work` on every input, `chunkSize` inputs per task (about four tasks per worker when
    /// nil), and returns the outputs in input order (Python's `map`). Throws the first task error to
    /// arrive (not necessarily that of the earliest input), as Python's does.
    public func map<S: Sequence>(_ items: S, chunkSize: Int? = nil) throws -> [Output]
    where S.Element == Input {
        try mapAsync(items, chunkSize: chunkSize).get()
    }

    /// ``map(_:chunkSize:)`` without waiting (Python's `map_async`): the handle's value is every
    /// output in order; `callback` gets them all, `errorCallback` the first error.
    @discardableResult
    public func mapAsync<S: Sequence>(
        _ items: S, chunkSize: Int? = nil, callback: (@Sendable ([Output]) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) -> AsyncResult<[Output]> where S.Element == Input {
        submitMap(
            Array(items), chunkSize: chunkSize, through: submitter, callback: callback, errorCallback: errorCallback)
    }

    /// The outputs in input order, as they become available (Python's `imap`); tasks are submitted
    /// lazily, a few per worker ahead of the reader. Iterate with `for outcome in` (each element is
    /// a `Result`) or, in async code, `for try await output in`.
    public func imap<S: Sequence>(_ items: S, chunkSize: Int = 1) -> PoolResults<Output> where S.Element == Input {
        PoolResults(stream: submitter.stream(items, chunkSize: chunkSize, ordered: true))
    }

    /// `imap(_:chunkSize:)` for `for try await` (chosen where an `AsyncSequence` is expected).
    @_disfavoredOverload
    public func imap<S: Sequence>(_ items: S, chunkSize: Int = 1) -> AsyncPoolResults<Output>
    where S.Element == Input {
        AsyncPoolResults(stream: submitter.stream(items, chunkSize: chunkSize, ordered: true))
    }

    /// The outputs as the tasks finish, in any order (Python's `imap_unordered`).
    public func imapUnordered<S: Sequence>(_ items: S, chunkSize: Int = 1) -> PoolResults<Output>
    where S.Element == Input {
        PoolResults(stream: submitter.stream(items, chunkSize: chunkSize, ordered: false))
    }

    /// `imapUnordered(_:chunkSize:)` for `for try await` (chosen where an `AsyncSequence` is expected).
    @_disfavoredOverload
    public func imapUnordered<S: Sequence>(_ items: S, chunkSize: Int = 1) -> AsyncPoolResults<Output>
    where S.Element == Input {
        AsyncPoolResults(stream: submitter.stream(items, chunkSize: chunkSize, ordered: false))
    }

    /// Runs `work(input)` in a worker, from async code: suspends until the result is there, never
    /// blocking a thread (the result thread resumes it).
    public func run(_ input: Input) async throws -> Output {
        try await applyAsync(input).value
    }

    private var submitter: ChunkSubmitter<Input, Output> {
        ChunkSubmitter(workers: processes, delivery: core.delivery) { items, sink, chunk in
            // Holds the pool (not only its core) while the results are read.
            let codec = self.inputCodec
            self.core.submit(PendingTask(sink, chunk: chunk), form: .chunk, count: items.count) {
                emit throws(PoolError) in try codec.withBytes(of: items, emit)
            }
        }
    }

    // MARK: Lifecycle

    /// No more tasks (Python's `close`); the submitted ones run to the end. Then call ``join(timeout:)``.
    public func close() { core.close() }

    /// Waits for every submitted task to finish and for the workers to exit (up to `timeout`;
    /// forever when nil). Returns false if the timeout passed first. Throws
    /// ``PoolError/stillRunning`` unless ``close()`` or ``terminate()`` came first.
    @discardableResult
    public func join(timeout: Duration? = nil) throws(PoolError) -> Bool { try core.join(timeout: timeout) }

    /// Kills the workers at once; every unfinished task fails with ``PoolError/terminated``
    /// (Python's `terminate`). Returns once the workers are reaped.
    public func terminate() { core.terminate() }

    /// Stops taking tasks and waits for the submitted ones to finish and the workers to end (as
    /// ``close()`` then ``join(timeout:)``), suspending rather than holding a thread of Swift's
    /// cooperative pool. If `timeout` passes first, or the calling task is cancelled, the pool is
    /// terminated (see ``terminate()``): what had not finished fails with ``PoolError/terminated``.
    /// - Returns: Whether every task finished before the timeout.
    @discardableResult
    public func shutdownGracefully(timeout: Duration? = nil) async throws -> Bool {
        close()
        let finished = try await withTaskCancellationHandler {
            try await toThread { try self.join(timeout: timeout) }
        } onCancel: {
            self.terminate()
        }
        if !finished { terminate() }
        return finished
    }
}
