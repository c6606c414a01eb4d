import CMultiprocessing
import Synchronization

/// The parent's side of a ``ProcessPool``: the table of unfinished tasks, the workers, and the
/// result thread that owns them. Not generic: it moves bytes, and hands them to each task's
/// ``TaskReceiver`` (the typed side) to decode.
///
/// Tasks go into one shared task ring (workers pull, so load balances itself); outcomes and the
/// watcher's exit notices come back on one result ring, in order, to a single result thread. That
/// thread settles tasks, runs callbacks, and on a worker's exit reads the worker's claim slot: a
/// task it claimed that has no outcome yet died with it (and only that one). It then has the
/// ``WorkerLauncher`` start the replacement (from the pool's zygote or the forkserver: this thread
/// never forks).
final class PoolCore: @unchecked Sendable {
    enum Phase { case running, closed, stopping, terminated }

    struct State {
        var phase = Phase.running
        var pending = PendingTable()
        var nextID: UInt64 = 0
        var unsettled = 0
        var workers: [Process?]
        var live = 0
        var broken: PoolError?
        var startFailure: PoolError?
    }

    let channels: PoolChannels
    let processes: Int
    let delivery = DeliveryThread()
    private let state: Locked<State>
    private let launcher: WorkerLauncher
    let watcher: WorkerWatcher
    /// Told of tasks, deaths and replacements (see ``PoolObserver``), from this process's threads.
    let observer: (any PoolObserver)?
    /// Tests: the next worker started hangs before it is ready.
    private let stallNextWorker: Atomic<Bool>
    private let stallEveryWorker = Atomic<Bool>(false)
    /// Workers in a row that died in their initializer, with no task outcome in between (result
    /// thread only): past ``initializerDeathLimit`` the pool breaks rather than fork them for ever.
    private var initializerDeaths = 0
    static let initializerDeathLimit = 3
    /// Set once the phase is stopping or terminated: the result thread then checks whether it is done
    /// (a flag read per message instead of a lock).
    private let ending = Atomic<Bool>(false)
    /// Submissions from callbacks (the result thread must not wait for room in the task ring).
    private var feeder: TaskFeeder!
    /// Set while no task is unsettled (join waits on it).
    private let idle = LocalEvent(isSet: true)
    /// Set once the initial workers are started (or failed to).
    private let started = LocalEvent()
    /// Set when the result thread has finished: every worker has exited and been reaped.
    private let finished = LocalEvent()
    /// The process that made the pool. A forked child inherits a copy of this object, not the
    /// pool: its workers, its result thread and its zygote are the parent's. In the child a task is
    /// refused (``PoolError/otherProcess(owner:)``), and closing, terminating or dropping the copy
    /// leaves the parent's pool alone (terminating it would shut its task ring down for good, kill
    /// its workers, then wait for a result thread that the child does not have).
    let owner = mp_process_id()
    var isOwnersProcess: Bool { mp_process_id() == owner }

    /// A pool of `channels.slotCount` workers, started by `launcher`. On failure the launcher is
    /// closed. `options` are for tests.
    init(channels: PoolChannels, launcher: WorkerLauncher, options: PoolOptions = PoolOptions()) throws(PoolError) {
        processes = channels.slotCount
        self.launcher = launcher
        observer = options.observer
        self.channels = channels
        stallNextWorker = Atomic(options.stallFirstWorker)
        let watcher: WorkerWatcher
        do {
            watcher = try WorkerWatcher(
                ready: channels.ready, startupLimit: options.startupLimit,
                stuck: { [observer = options.observer] pid in observer?.workerStuck(pid: pid) }
            ) {
                index, pid, code in
                channels.notify(
                    ResultHeader(
                        id: 0, kind: ResultKind.workerExited.rawValue, count: code, worker: UInt32(index), pid: pid))
            }
        } catch {
            launcher.close()
            throw error
        }
        self.watcher = watcher
        state = Locked(State(workers: Array(repeating: nil, count: processes)))
        feeder = TaskFeeder(queue: channels.tasks.queue) { [weak self] id in
            guard let self else { return }
            abandon(id, terminalError)
        }
        do {
            try watcher.start()
        } catch {
            launcher.close()
            throw error
        }
        LivePools.add(self)  // terminated at exit if still running; the result thread removes it
        do {
            try Thread(name: "pool-results") { self.resultLoop() }.start()
        } catch {
            LivePools.remove(self)
            watcher.stop()
            launcher.close()
            throw .system(error.systemErrno, function: "pthread_create")
        }
        started.wait()
        if let failure = state.withLock({ $0.startFailure }) {
            finished.wait()
            throw failure
        }
    }

    // MARK: Submitting

    /// Records a pending task and returns its id; nil (and the pending settled) if the pool is not
    /// running.
    private func register(_ pending: PendingTask) -> UInt64? {
        var pending = pending
        if let observer {
            // Told before the task is registered: once registered, a terminate may fail it and
            // report that at once, before a later report of its submission (a gauge of the tasks
            // in flight would go below zero). A pool that stops in between refuses it below.
            if let refused = state.withLock({ refusal($0) }) {
                pending.fail(refused)
                return nil
            }
            pending.submitted = mp_monotonic_ns()
            observer.taskSubmitted()
        }
        let id = state.withLock { s -> Result<UInt64, PoolError> in
            if let refused = refusal(s) { return .failure(refused) }
            s.nextID += 1
            s.pending.insert(s.nextID, pending)
            s.unsettled += 1
            if s.unsettled == 1 { idle.clear() }
            return .success(s.nextID)
        }
        switch id {
        case .success(let id):
            return id
        case .failure(let error):
            pending.fail(error)
            observer?.taskFailed(after: elapsed(since: pending.submitted), error: error)
            return nil
        }
    }

    /// Why a task is refused now; nil while the pool runs.
    private func refusal(_ s: State) -> PoolError? {
        guard isOwnersProcess else { return .otherProcess(owner: owner) }
        guard s.phase == .running else { return s.broken ?? .closed }
        return nil
    }

    /// Submits one task: `encode` calls its argument with the inputs' bytes (which go into the task
    /// ring behind a header). A task that cannot be submitted is failed at once.
    func submit(
        _ pending: PendingTask, form: TaskForm, count: Int,
        encode: ((UnsafeRawBufferPointer) -> Void) throws(PoolError) -> Void
    ) {
        guard let id = register(pending) else { return }
        var sent = false
        let header = TaskHeader(id: id, count: UInt32(count), form: form.rawValue)
        let fromCallback = delivery.isCurrent
        do {
            try encode { bytes in
                withMessage(header, size: TaskHeader.size, payload: bytes) {
                    sent = fromCallback ? feeder.put(id, $0) : putMessage(channels.tasks.queue, $0)
                }
            }
        } catch {
            return abandon(id, error)
        }
        if !sent { abandon(id, terminalError) }
    }

    private var terminalError: PoolError { state.withLock { $0.broken ?? .terminated } }

    /// Settles a task that never reached a worker (unless it was settled meanwhile).
    private func abandon(_ id: UInt64, _ error: any Error) {
        guard let pending = state.withLock({ $0.pending.remove(id) }) else { return }
        pending.fail(error)
        observer?.taskFailed(after: elapsed(since: pending.submitted), error: error)
        settled()
    }

    private func settled(_ count: Int = 1) {
        state.withLock { s in
            s.unsettled -= count
            if s.unsettled == 0 { idle.set() }
        }
    }

    // MARK: Lifecycle

    func close() {
        guard isOwnersProcess else { return }
        state.withLock { s in if s.phase == .running { s.phase = .closed } }
    }

    /// Kills the workers; every unfinished task fails with ``PoolError/terminated``. Waits for the
    /// workers to be reaped, except on the result thread (from a callback) or the watchdog's (from
    /// an observer), where the pool finishes by itself once the call returns.
    func terminate() {
        guard isOwnersProcess else { return }
        let workers = state.withLock { s -> [Process]? in
            guard s.phase != .terminated else { return nil }
            s.phase = .terminated
            return s.workers.compactMap { $0 }
        }
        ending.store(true, ordering: .releasing)
        if let workers {
            mp_queue_shutdown(channels.tasks.queue, 1)
            for worker in workers { try? worker.kill() }
        }
        // From a callback, the result thread sees the new phase once the callback returns (and must
        // not put into its own ring, which only it drains); elsewhere a notice wakes it.
        if delivery.isCurrent { return }
        if workers != nil {
            channels.notify(ResultHeader(id: 0, kind: ResultKind.stop.rawValue, count: 0, worker: 0, pid: 0))
        }
        // From the watchdog (an observer's workerStuck): the result thread finishes once that thread
        // has reported the killed workers, which it does once this returns.
        if watcher.isCurrent { return }
        finished.wait()
    }

    /// At this process's end (``ProgramExit``): ``terminate()``. Called from a callback (`exit` called
    /// there), the result thread is this one and will not finish, so the zygote it would end is
    /// ended here (its workers, killed, are reaped with the other children).
    func terminateAtExit() {
        terminate()
        if delivery.isCurrent { launcher.close() }
    }

    /// Waits for every task to finish, then for the workers to exit. Returns false if `timeout`
    /// passed first (the pool goes on; join again).
    func join(timeout: Duration?) throws(PoolError) -> Bool {
        guard isOwnersProcess else { throw .otherProcess(owner: owner) }
        let phase = state.withLock { $0.phase }
        if phase == .running { throw .stillRunning }
        if delivery.isCurrent { throw .calledFromCallback }
        let deadline = try Deadline.after(timeout, PoolError.self)
        guard idle.wait(deadline: deadline) else { return false }
        let stop = state.withLock { s -> Bool in
            guard s.phase == .closed else { return false }
            s.phase = .stopping
            return true
        }
        ending.store(true, ordering: .releasing)
        if stop {
            mp_queue_shutdown(channels.tasks.queue, 0)  // workers exit once the ring is empty
            channels.notify(ResultHeader(id: 0, kind: ResultKind.stop.rawValue, count: 0, worker: 0, pid: 0))
        }
        return finished.wait(deadline: deadline)
    }

    var isFinished: Bool { finished.isSet }

    /// Tasks submitted and not yet settled.
    var unfinishedTasks: Int { state.withLock { $0.unsettled } }

    /// How many zygotes were forked again before one proved itself (see ``Zygote``).
    var zygoteRestarts: Int { launcher.zygoteRestarts }

    /// The pid of the zygote the workers are forked from (nil: they are not).
    var zygotePID: Int32? { launcher.zygotePID }

    /// The worker processes now running.
    var workerPIDs: [Int32] { state.withLock { $0.workers.compactMap { $0?.pid } } }

    /// The worker processes now running, as objects (their signals go through pidfds: a test that
    /// kills by pid could hit a process that took over the pid of a worker reaped meanwhile).
    var workerProcesses: [Process] { state.withLock { $0.workers.compactMap { $0 } } }

    // MARK: The result thread

    private func resultLoop() {
        delivery.adoptCurrent()
        if let error = startFirstWorkers() {
            state.withLock { $0.startFailure = error }
            breakPool(error)
        }
        started.set()
        while !finishIfDone() {
            guard let message = TakenMessage.take(channels.results.queue) else { break }
            // Workers run the user's code and share the ring: a message too short for a header
            // was never sent by this library, and reading one would run past its bytes.
            guard message.bytes.count >= ResultHeader.size else {
                message.finish()
                continue
            }
            let header = message.header(ResultHeader.self)
            let payload = message.payload(after: ResultHeader.size)
            guard let kind = ResultKind(rawValue: header.kind) else {
                message.finish()
                continue
            }
            if kind == .value || kind == .values || kind == .failure { initializerDeaths = 0 }  // workers get that far
            switch kind {
            case .value, .values:
                if let pending = state.withLock({ $0.pending.remove(header.id) }) {
                    // Callbacks run here, the message still in the ring.
                    pending.receive(kind: kind, count: Int(header.count), payload: payload)
                    message.finish()
                    observer?.taskSucceeded(after: elapsed(since: pending.submitted))
                    settled()
                } else {
                    message.finish()
                }
            case .failure:
                let error = Self.failure(payload).error
                message.finish()
                failTask(header.id, error)
            case .initializerFailed:
                let failure = Self.failure(payload)
                message.finish()
                breakPool(.initializerFailed(type: failure.type, message: failure.message))
            case .workerExited:
                message.finish()
                workerExited(index: Int(header.worker), pid: header.pid)
            case .stop:
                message.finish()
            }
        }
        watcher.stop()
        feeder.stop()
        launcher.close()  // every worker has been reaped: the zygote has nothing left to do
        LivePools.remove(self)
        finished.set()
    }

    private static func failure(_ payload: UnsafeRawBufferPointer) -> RemoteFailure {
        (try? BinaryCoding.decode(RemoteFailure.self, from: payload))
            ?? RemoteFailure(type: "unknown", message: "the worker's error could not be decoded")
    }

    private func failTask(_ id: UInt64, _ error: any Error) {
        guard let pending = state.withLock({ $0.pending.remove(id) }) else { return }
        pending.fail(error)
        observer?.taskFailed(after: elapsed(since: pending.submitted), error: error)
        settled()
    }

    /// After a terminate: fails what is left. Then, once no worker is left, ends the loop.
    private func finishIfDone() -> Bool {
        guard ending.load(ordering: .acquiring) else { return false }
        let (failed, done) = state.withLock { s -> ([PendingTask], Bool) in
            guard s.phase == .terminated || s.phase == .stopping else { return ([], false) }
            var failed: [PendingTask] = []
            // A broken pool first delivers what its killed workers finished (their results are in
            // the ring ahead of their exit notices), as a terminate would not: it fails the rest once
            // they are all reaped.
            if s.phase == .terminated && (s.broken == nil || s.live == 0) {
                failed = s.pending.removeAll()
            }
            return (failed, s.live == 0)
        }
        let error = terminalError
        for pending in failed {
            pending.fail(error)
            observer?.taskFailed(after: elapsed(since: pending.submitted), error: error)
        }
        if !failed.isEmpty { settled(failed.count) }
        return done
    }

    /// Tests: every worker started from now on hangs before it is ready.
    func stallEveryWorkerForTesting() { stallEveryWorker.store(true, ordering: .relaxed) }

    /// Starts the pool's workers together (the launcher forks them back to back); the first error.
    private func startFirstWorkers() -> PoolError? {
        let indices = (0..<processes).map { index in
            (index, stallNextWorker.exchange(false, ordering: .relaxed) || stallEveryWorker.load(ordering: .relaxed))
        }
        var firstError: PoolError?
        for ((index, _), result) in zip(indices, launcher.startAll(indices, channels: channels)) {
            switch result {
            case .success(let process): adopt(process, index: index)
            case .failure(let error): firstError = firstError ?? PoolError(starting: error)
            }
        }
        return firstError
    }

    private func adopt(_ process: Process, index: Int) {
        state.withLock { s in
            s.workers[index] = process
            s.live += 1
        }
        watcher.watch(process, index: index)  // its exit notice comes after this, on this thread
    }

    private func startWorker(_ index: Int) -> PoolError? {
        let stall = stallNextWorker.exchange(false, ordering: .relaxed) || stallEveryWorker.load(ordering: .relaxed)
        let process: Process
        do { process = try launcher.start(index: index, channels: channels, stall: stall) } catch {
            return PoolError(starting: error)
        }
        adopt(process, index: index)
        return nil
    }

    private func workerExited(index: Int, pid: Int32) {
        guard index >= 0 && index < processes else { return }
        // The notice comes through the result ring, which workers share: believed only for a worker
        // this process has reaped (the watcher reaps before it reports), with the code it reaped.
        guard let worker = state.withLock({ $0.workers[index] }), worker.pid == pid, let exitCode = worker.exitCode
        else { return }
        // The dead worker's claim: a task it took. If that task has no outcome, it died with it.
        let claimed = mp_pool_slot(channels.slots + index)
        // Its ready word: its pid alone if it died in its initializer (read before a replacement writes it).
        let readyWord = mp_pool_slot(channels.ready + index)
        let (lost, replace, ending) = state.withLock { s -> (PendingTask?, Bool, PoolError?) in
            guard s.workers[index] === worker else { return (nil, false, nil) }
            s.workers[index] = nil
            s.live -= 1
            let lost = claimed != 0 ? s.pending.remove(claimed) : nil
            // Killed by terminate() (or a broken pool): its task fails as every other one does.
            let ending = s.phase == .terminated ? (s.broken ?? .terminated) : nil
            return (lost, (s.phase == .running || s.phase == .closed) && s.broken == nil, ending)
        }
        if replace { observer?.workerDied(pid: pid, exit: WorkerExit(exitCode: exitCode)) }
        if let lost {
            let error = ending ?? PoolError.workerDied(pid: pid, reason: WorkerExit(exitCode: exitCode))
            lost.fail(error)
            observer?.taskFailed(after: elapsed(since: lost.submitted), error: error)
            settled()
        }
        guard replace else { return }
        if readyWord == UInt64(UInt32(bitPattern: pid)) {
            initializerDeaths += 1
        } else if readyWord == UInt64(UInt32(bitPattern: pid)) | PoolChannels.initialized {
            initializerDeaths = 0
        }
        if initializerDeaths >= Self.initializerDeathLimit {
            // Its initializer crashed or exited the worker, and every replacement's did too: as one
            // that throws, it would do so for ever (Python's pool respawns them without end).
            return breakPool(
                .initializerFailed(
                    type: String(reflecting: WorkerExit.self),
                    message: "\(Self.initializerDeathLimit) workers in a row died in their initializer; the last, "
                        + "\(pid), \(WorkerExit(exitCode: exitCode))"))
        }
        if watcher.consecutiveStuck >= WorkerWatcher.stuckLimit {
            // Workers keep getting stuck before their first task: the zygote itself inherited a held
            // lock at its fork. Replacing them again would only repeat that: fail instead.
            return breakPool(
                .workersCannotStart(
                    "\(WorkerWatcher.stuckLimit) workers in a row were stuck before their first task; a pool over a "
                        + "closure forks its zygote on the caller's thread, which another busy thread can make unsafe: "
                        + "use a PoolWorker with the forkserver start method in threaded programs"))
        }
        if let error = startWorker(index) {
            writeError("multiprocessing: pool worker \(index) could not be replaced: \(error)\n")
            // No worker left and none can start: fail rather than wait forever.
            if state.withLock({ $0.live == 0 }) { breakPool(error) }
        } else if let observer, let pid = state.withLock({ $0.workers[index]?.pid }) {
            observer.workerReplaced(pid: pid)
        }
    }

    /// The pool cannot go on: every unfinished task and every later submission fails with `error`.
    private func breakPool(_ error: PoolError) {
        let (workers, first) = state.withLock { s -> ([Process], Bool) in
            let first = s.broken == nil
            if first { s.broken = error }
            s.phase = .terminated
            return (s.workers.compactMap { $0 }, first)
        }
        if first { observer?.poolBroken(error) }
        ending.store(true, ordering: .releasing)
        mp_queue_shutdown(channels.tasks.queue, 1)
        for worker in workers { try? worker.kill() }
    }
}

/// How a pool is made, beyond its API: for tests.
struct PoolOptions: Sendable {
    /// How long a forked worker may take to become ready before the watchdog replaces it, in ns
    /// (generous: sanitizers slow start-up a lot).
    var startupLimit: Int64 = 10_000_000_000
    /// The first worker hangs before it is ready (as one that inherited a held lock would).
    var stallFirstWorker = false
    /// Told of the pool's events (the public initializers' `observer`).
    var observer: (any PoolObserver)? = nil
    /// How many zygotes hang before they prove themselves (as ones that inherited a held lock do).
    var stallingZygotes = 0
    /// How long each zygote has to prove itself, in ns (nil: the growing limits of ``Zygote``).
    var zygoteReadyLimit: Int64? = nil
    /// The zygote is SIGKILLed right after it answers its first fork request.
    var zygoteKilledAfterFirstReply = false
}
