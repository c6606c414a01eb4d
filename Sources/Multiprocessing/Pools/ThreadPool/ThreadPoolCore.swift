import CMultiprocessing

/// The engine of a ``ThreadPool``: a FIFO of jobs that worker threads take, and one result thread
/// that runs the jobs' completions (settling handles, calling callbacks) in completion order.
/// The threads hold this core, not the public pool, so that dropping the pool can stop them.
final class ThreadPoolCore: @unchecked Sendable {
    /// A job: `run` does the work on a worker thread and returns what the result thread must do;
    /// `fail` makes that for a job that will never run.
    struct Job {
        let run: () -> Outcome
        let fail: (PoolError) -> (() -> Void)
        /// When it was queued (monotonic ns), for the observer; 0 when there is none.
        var queued: Int64 = 0
    }

    /// What a job's run hands the result thread: what to do there, and the job's error, if any.
    struct Outcome {
        let deliver: () -> Void
        let error: (any Error)?
    }

    enum Phase { case running, closed, terminated }

    struct State {
        var phase = Phase.running
        var jobs = FIFO<Job>()
        var unsettled = 0
        var stopping = false
        var completions = FIFO<Completion>()
        var resultThreadDone = false
    }

    /// A job's result-thread step, with what the observer is told of it.
    struct Completion {
        let deliver: () -> Void
        let queued: Int64
        /// nil: the job succeeded.
        let error: (any Error)?
    }

    let threads: Int
    let observer: (any PoolObserver)?
    let delivery = DeliveryThread()
    private let state = Locked(State())
    /// Counts jobs (and stop tokens) for the worker threads; completions for the result thread.
    private let jobsReady = LocalSemaphore()
    private let completionsReady = LocalSemaphore()
    /// Set while no job is unsettled; set once every thread has ended.
    private let idle = LocalEvent(isSet: true)
    private let stopped = LocalEvent()
    /// The process that made the pool: a forked child inherits a copy of this object but none of
    /// its threads. There a job is refused (``PoolError/otherProcess(owner:)``: it would never run),
    /// and closing, terminating or dropping the copy does nothing (terminating would wait for
    /// threads that the child does not have).
    let owner = mp_process_id()
    var isOwnersProcess: Bool { mp_process_id() == owner }
    private let workersLeft = Locked(0)
    /// The worker threads' ids: a wait for the threads to end could never end on one of them.
    private let workerThreads = Locked<[Int32]>([])

    init(threads: Int, observer: (any PoolObserver)? = nil) throws(PoolError) {
        guard threads >= 1 else { throw .invalidWorkerCount(threads) }
        self.threads = threads
        self.observer = observer
        do {
            try Thread(name: "pool-results") { self.resultLoop() }.start()
        } catch {
            throw .system(error.systemErrno, function: "pthread_create")
        }
        for i in 0..<threads {
            workersLeft.withLock { $0 += 1 }
            do {
                try Thread(name: "ThreadPool-\(i + 1)") { self.workerLoop() }.start()
            } catch {
                if workersLeft.withLock({ n in
                    n -= 1; return n
                }) == 0 {
                    post(nil)
                }
                terminate()
                throw .system(error.systemErrno, function: "pthread_create")
            }
        }
    }

    /// Queues a job; on a pool that is not running, its failure is delivered at once (on the
    /// calling thread).
    func enqueue(_ job: Job) {
        var job = job
        if let observer {
            // Told before the job is queued: once queued, a terminate may drop it and report its
            // failure at once, before a later report of its submission (a gauge of the tasks in
            // flight would go below zero). A pool that stops in between refuses it below.
            if let refused = state.withLock({ refusal($0) }) { return job.fail(refused)() }
            job.queued = mp_monotonic_ns()
            observer.taskSubmitted()
        }
        let refused = state.withLock { s -> PoolError? in
            if let refused = refusal(s) { return refused }
            s.jobs.append(job)
            s.unsettled += 1
            if s.unsettled == 1 { idle.clear() }
            return nil
        }
        if let refused {
            job.fail(refused)()
            observer?.taskFailed(after: elapsed(since: job.queued), error: refused)
            return
        }
        jobsReady.release()
    }

    /// Why a job is refused now; nil while the pool runs.
    private func refusal(_ s: State) -> PoolError? {
        guard isOwnersProcess else { return .otherProcess(owner: owner) }
        guard s.phase == .running else { return s.phase == .terminated ? .terminated : .closed }
        return nil
    }

    private func workerLoop() {
        let me = mp_thread_id()
        workerThreads.withLock { $0.append(me) }
        while true {
            jobsReady.acquire()
            // No job for a permit: it was a stop token.
            guard let job = state.withLock({ $0.jobs.popFirst() }) else { break }
            let outcome = job.run()
            post(Completion(deliver: outcome.deliver, queued: job.queued, error: outcome.error))
        }
        workerThreads.withLock { $0.removeAll { $0 == me } }
        if workersLeft.withLock({ n in
            n -= 1; return n
        }) == 0 {
            post(nil)  // the last worker out stops the result thread
        }
    }

    /// Hands a completion to the result thread (nil: stop once the queue is drained).
    private func post(_ completion: Completion?) {
        state.withLock { s in
            if let completion { s.completions.append(completion) } else { s.resultThreadDone = true }
        }
        completionsReady.release()
    }

    private func resultLoop() {
        delivery.adoptCurrent()
        while true {
            completionsReady.acquire()
            let (completion, done) = state.withLock { s -> (Completion?, Bool) in
                guard let next = s.completions.popFirst() else { return (nil, s.resultThreadDone) }
                return (next, false)
            }
            if let completion {
                completion.deliver()
                if let observer {
                    let duration = elapsed(since: completion.queued)
                    if let error = completion.error {
                        observer.taskFailed(after: duration, error: error)
                    } else {
                        observer.taskSucceeded(after: duration)
                    }
                }
                state.withLock { s in
                    s.unsettled -= 1
                    if s.unsettled == 0 { idle.set() }
                }
            } else if done {
                break
            }
        }
        stopped.set()
    }

    func close() {
        guard isOwnersProcess else { return }
        state.withLock { s in if s.phase == .running { s.phase = .closed } }
    }

    /// Fails the queued jobs with ``PoolError/terminated`` (running ones finish: a thread cannot be
    /// killed) and stops the threads; waits for them if `waiting`, unless called from a callback or
    /// from a task (its own thread ends once the task returns; dropping the last reference to the
    /// pool in a task ends here too).
    func terminate(waiting: Bool = true) {
        guard isOwnersProcess else { return }
        let dropped = state.withLock { s -> Int in
            s.phase = .terminated
            // Their failures are queued under the lock that takes the jobs off: a worker woken by
            // a dropped job's permit finds no job and leaves, and the last one out stops the
            // result thread. Posted after that, they were never delivered (their handles never
            // settled, `join` waited for them till its timeout, the observer never heard of them).
            let jobs = s.jobs.removeAll()
            for job in jobs {
                s.completions.append(
                    Completion(deliver: job.fail(.terminated), queued: job.queued, error: PoolError.terminated))
            }
            return jobs.count
        }
        if dropped > 0 { completionsReady.release(dropped) }
        stopWorkers()
        if !waiting || delivery.isCurrent || isWorkerThread { return }
        stopped.wait()
    }

    private var isWorkerThread: Bool {
        let me = mp_thread_id()
        return workerThreads.withLock { $0.contains(me) }
    }

    /// Waits for every job to finish, then stops the threads. False if `timeout` passed first.
    func join(timeout: Duration?) throws(PoolError) -> Bool {
        guard isOwnersProcess else { throw .otherProcess(owner: owner) }
        if state.withLock({ $0.phase }) == .running { throw .stillRunning }
        if delivery.isCurrent { throw .calledFromCallback }
        if isWorkerThread { throw .calledFromTask }  // its own job never settles while it waits
        let deadline = try Deadline.after(timeout, PoolError.self)
        guard idle.wait(deadline: deadline) else { return false }
        stopWorkers()
        return stopped.wait(deadline: deadline)
    }

    private func stopWorkers() {
        let first = state.withLock { s -> Bool in
            defer { s.stopping = true }
            return !s.stopping
        }
        if first { jobsReady.release(threads) }  // one stop token each
    }

    /// Jobs queued or running, not yet settled.
    var unfinishedTasks: Int { state.withLock { $0.unsettled } }
}
