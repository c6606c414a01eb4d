import CMultiprocessing
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// One io_uring driven by one thread: an executor that runs coroutines and the ring operations
/// they await (Python's asyncio event loop).
///
/// ```swift
/// try EventLoop.run {
///     print("Coroutine is running")
///     try await sleep(for: .seconds(1))
///     print("Coroutine is done")
/// }
/// ```
///
/// A loop is a `SerialExecutor` and a `TaskExecutor`: code runs on it under
/// `withTaskExecutorPreference(loop)` (child tasks inherit it), in a `Task(executorPreference:)`,
/// or in an actor whose `unownedExecutor` is the loop's. Its jobs and its completions are handled
/// in batches, one turn at a time: run the jobs, submit every operation they queued in one system
/// call, reap every completion. Another thread wakes a sleeping loop with one eventfd write; a
/// busy loop is never woken.
///
/// The async operations of this module (`sleep(for:)`, ``File``, ``TCPConnection``, the `await`
/// forms of ``Lock``, ``Event``, ``Queue``...) run on the loop of the calling thread, and on a
/// shared loop when called from anywhere else. They are `nonisolated(nonsending)`: they run on the
/// caller's executor, so one called from an actor that is not the loop's (the main actor, say) uses
/// the shared loop even inside `withTaskExecutorPreference(loop)`; call them from the loop's own
/// tasks to use its ring.
public final class EventLoop: SerialExecutor, TaskExecutor, @unchecked Sendable {
    enum Work {
        /// A task that prefers this loop (`withTaskExecutorPreference`, `Task(executorPreference:)`).
        case job(UnownedJob)
        /// A job of an actor whose executor is this loop's (``asUnownedSerialExecutor()``).
        case isolatedJob(UnownedJob)
        case submit(LoopOperation)
        case cancel(LoopOperation)
        /// Cancels the operation in a slot with this user_data if it is still in flight (see `LoopSlot`).
        case cancelSlot(UInt64)
        case stop
    }

    struct Inbox {
        var work: [Work] = []
        var closed = false
    }

    /// The loop's name, also the name of the thread it starts (`EventLoop.run`'s loop runs on the
    /// caller's thread, which keeps its own name).
    public let name: String
    let ring: OpaquePointer
    /// IORING_OP_FUTEX_WAIT works here (kernel >= 6.7); else shared primitives are awaited on helper threads.
    let supportsFutexWait: Bool
    /// How late this loop's timers wake their coroutine; precise sleeps arm that much early.
    let wakeLatency = WakeLatency()
    private let inbox = Locked(Inbox())
    private let finished = LocalEvent()
    private let thread = Locked<Thread?>(nil)

    // Touched only by the loop's thread, which never holds two accesses to one of them at once:
    // no run-time exclusivity check (two calls, 120 instructions, per job and per operation).
    @exclusivity(unchecked) private var local = LocalJobs()
    @exclusivity(unchecked) private var running = LocalJobs()
    @exclusivity(unchecked) private var incoming: [Work] = []
    /// Cancel requests made on the loop's thread, for the end of the turn's jobs (see `schedule`).
    @exclusivity(unchecked) private var cancels: [Work] = []
    @exclusivity(unchecked) private var slots = LoopSlots()
    private var inFlight = 0 {
        didSet { inFlightShown.store(inFlight, ordering: .relaxed) }
    }
    private var wakeArmed = true
    private(set) var stopping = false
    /// `stopping` for other threads: waits that do not go through the ring (the futex fallback's
    /// helper threads, see FutexWait.swift), which the loop's cancel-all cannot end, look at it.
    private let stoppingShown = Atomic<Bool>(false)
    var hasStopped: Bool { stoppingShown.load(ordering: .relaxed) }
    private var turnsSoFar = 0
    /// Receives that completed into one of the loop's ring buffers (tests check that buffers
    /// come back: without that, no more than MP_RECV_BUFFERS could).
    private(set) var receivesIntoRingBuffers = 0
    /// Sends that went through the ring: only the part of one that its socket could not take at
    /// once does (tests check both sides of that).
    private(set) var sendsThroughRing = 0
    /// Operations submitted as objects (`LoopOperation`), not in slots (tests check which went how).
    private(set) var operationObjects = 0
    // Copies for other threads (metrics). Only the loop's thread writes them, with plain relaxed
    // stores (no locked instruction on the loop's path); readers order against nothing.
    private let turnsShown = Atomic<Int>(0)
    private let inFlightShown = Atomic<Int>(0)
    private let completions = UnsafeMutablePointer<mp_completion_t>.allocate(capacity: 256)

    /// The serial executor that actors on this loop are isolated to. It is a separate object from
    /// the loop (the task executor) because both protocols enqueue through one `enqueue(_:)`: with
    /// one object, a task that only prefers the loop would run isolated to it, and the runtime
    /// then hops (one loop turn) at every call into and out of nonisolated async code, several
    /// times per `sleep`. Its own object tells the two kinds of job apart.
    final class Isolation: SerialExecutor, @unchecked Sendable {
        unowned(unsafe) let loop: EventLoop
        init(_ loop: EventLoop) { self.loop = loop }

        func enqueue(_ job: consuming ExecutorJob) {
            loop.schedule(.isolatedJob(UnownedJob(job)))
        }

        func asUnownedSerialExecutor() -> UnownedSerialExecutor {
            UnownedSerialExecutor(ordinary: self)
        }

        func checkIsolated() {
            precondition(loop.inEventLoop, "not on the thread of \(loop.name)")
        }
    }

    // Set once in init, before the loop's thread starts; it lives as long as the loop.
    private var isolation: Isolation!

    /// The loop as a plain serial executor (not `asUnownedSerialExecutor()`'s, the actors'), as
    /// two words: the executor that the loop resumes the continuations of its slots through (see
    /// `resumeThroughLoop`). Its `enqueue` is the task executor's: the task goes on on the loop,
    /// isolated to nothing, as it would through the generic executor. Set once in init.
    private var resumptionWords: (UInt, UInt) = (0, 0)

    /// Starts a loop on a new thread, which runs until ``shutdown()`` (`EventLoop.run(_:)`
    /// does that itself). Throws ``EventLoopError/unavailable(_:)`` where the kernel offers no
    /// io_uring (or forbids it, `kernel.io_uring_disabled`).
    public convenience init(name: String? = nil) throws(EventLoopError) {
        try self.init(name: name, ownThread: true)
    }

    /// A loop with a thread of its own, or (`ownThread` false) one that the caller's thread runs in
    /// `runOnCallerThread(_:)`.
    private init(name: String?, ownThread: Bool) throws(EventLoopError) {
        var error: Int32 = 0
        guard let ring = mp_loop_create(1024, &error) else { throw .unavailable(Errno(rawValue: error)) }
        self.ring = ring
        self.name = name ?? "EventLoop-\(EventLoop.counter.withLock { n -> Int in n += 1; return n })"
        supportsFutexWait = (mp_loop_features(ring) & UInt32(MP_LOOP_FUTEX)) != 0
        // Connects submitted together are spread over io-wq's workers (see mp_loop_connect) only
        // where there is another CPU for them to run on: the workers take this thread's affinity.
        // (Not `cpuCount`: its first read, the cgroup files parsed, costs about 300 µs, which
        // would double the first `EventLoop.run` of a process.)
        mp_loop_offload_connects(ring, mp_cpu_affinity_count() > 1 ? 1 : 0)
        mp_task_set_cancel_fn(LoopOperation.cancelHandler)
        isolation = Isolation(self)
        resumptionWords = unsafeBitCast(UnownedSerialExecutor(ordinary: self), to: (UInt, UInt).self)
        if !ownThread { return }
        let thread = Thread(name: self.name) { [self] in self.main() }
        do {
            try thread.start()
        } catch {
            throw .unavailable(.resourceTemporarilyUnavailable)
        }
        self.thread.withLock { $0 = thread }
    }

    deinit {
        mp_loop_destroy(ring)
        completions.deallocate()
        slots.deallocate()
        local.deallocate()
        running.deallocate()
    }

    private static let counter = Locked(0)

    /// The loop whose thread is running the caller, if any.
    public static var current: EventLoop? {
        mp_loop_current().map { Unmanaged<EventLoop>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Whether the caller runs on this loop's thread.
    public var inEventLoop: Bool { mp_loop_current() == Unmanaged.passUnretained(self).toOpaque() }

    /// Turns the loop has made so far: each runs the jobs that are ready, submits the operations
    /// they queued in one system call and takes the completions. Readable from any thread (for
    /// metrics: turns per second show how busy the loop is).
    public var turns: Int { turnsShown.load(ordering: .relaxed) }

    /// Operations (timers, reads and writes, futex waits) handed to the kernel and not completed
    /// yet. Readable from any thread.
    public var operationsInFlight: Int { inFlightShown.load(ordering: .relaxed) }

    /// Made at its first use. A failure is not kept: one that ran out of descriptors for a moment
    /// (EMFILE) must not leave every later operation off a loop failing for the life of the process.
    static let sharedLoop = Locked<EventLoop?>(nil)

    /// The loop that async operations called here use: the caller's, or the shared one.
    static func forCurrentContext() throws(EventLoopError) -> EventLoop {
        if let loop = current { return loop }
        return try sharedLoop.withLock { (shared: inout EventLoop?) throws(EventLoopError) -> EventLoop in
            if let loop = shared { return loop }
            let loop = try EventLoop(name: "EventLoop-shared")
            shared = loop
            return loop
        }
    }

    // MARK: Executor

    /// Runs a job of a task that prefers this loop (as a `TaskExecutor`); actors' jobs arrive
    /// through ``asUnownedSerialExecutor()``'s executor.
    public func enqueue(_ job: consuming ExecutorJob) {
        // The common case first, without building a `Work` to switch on (every resumption of a
        // loop task arrives here on the loop's thread).
        if inEventLoop { return local.append(LocalJob(job: UnownedJob(job), isolated: false)) }
        schedule(.job(UnownedJob(job)))
    }

    /// The executor of actors that run on this loop's thread (`nonisolated var unownedExecutor`).
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        isolation.asUnownedSerialExecutor()
    }

    /// Traps unless called on this loop's thread: what `assumeIsolated` and `preconditionIsolated`
    /// check for an actor that runs on this loop.
    public func checkIsolated() {
        precondition(inEventLoop, "not on the thread of \(name)")
    }

    /// Queues work: on the loop's own thread at once (no lock), else through the inbox.
    func schedule(_ work: Work) {
        if inEventLoop {
            switch work {
            case .job(let job): local.append(LocalJob(job: job, isolated: false))
            case .isolatedJob(let job): local.append(LocalJob(job: job, isolated: true))
            // From a cancellation handler, which runs under its task's status lock: a cancel that
            // finds the submission queue full reaps completions, resuming tasks (this one's too,
            // whose enqueue takes that lock). The request goes to the kernel once this turn's
            // jobs are done, still in this turn's batch; an operation not submitted yet is marked
            // now, and never submitted.
            case .cancel(let op):
                if op.finished || op.cancelRequested { return }
                op.cancelRequested = true
                if op.submitted { cancels.append(work) }
            case .cancelSlot: cancels.append(work)
            default: handle(work)  // submit now: it leaves with this turn's batch
            }
            return
        }
        // The wake-up happens under the inbox lock, so the loop cannot finish in between.
        let accepted = inbox.withLock { box -> Bool in
            if box.closed { return false }
            box.work.append(work)
            mp_loop_wake(ring)
            return true
        }
        if !accepted { orphan(work) }
    }

    /// Queues `op` for the ring: at once on the loop's own thread (it leaves with this turn's
    /// batch), else through the inbox.
    func submit(_ op: LoopOperation) {
        if inEventLoop { submitNow(op) } else { schedule(.submit(op)) }
    }

    /// Work that arrives after the loop stopped: jobs run on the global executor (an actor's one
    /// at a time, see `runOrphaned`), operations fail.
    private func orphan(_ work: Work) {
        switch work {
        case .job(let job): globalConcurrentExecutor.enqueue(job)
        case .isolatedJob(let job): runOrphaned(job)
        case .submit(let op): op.finish(LoopOperation.shutDownResult)
        case .cancel, .cancelSlot, .stop: break
        }
    }

    /// Jobs of the loop's actors that arrived after it stopped, and whether a thread runs them.
    private let orphanedActorJobs = Locked<(jobs: FIFO<UnownedJob>, draining: Bool)>((FIFO(), false))

    /// Runs an actor's job after the loop stopped: in order, one at a time, on a thread that runs
    /// them until none is left. The global executor is concurrent: handed there one by one, two
    /// jobs of one actor ran at once, each isolated to it (its state torn between them).
    private func runOrphaned(_ job: UnownedJob) {
        let start = orphanedActorJobs.withLock { o -> Bool in
            o.jobs.append(job)
            defer { o.draining = true }
            return !o.draining
        }
        if !start { return }
        let serialExecutor = asUnownedSerialExecutor()
        let thread = Thread(name: "\(name)-actors") { [self] in
            while let job = orphanedActorJobs.withLock({ o -> UnownedJob? in
                let job = o.jobs.popFirst()
                if job == nil { o.draining = false }
                return job
            }) {
                job.runSynchronously(on: serialExecutor)
            }
        }
        if (try? thread.start()) != nil { return }
        // No thread to be had: the jobs go to the global executor after all, rather than never run.
        let jobs = orphanedActorJobs.withLock { o -> [UnownedJob] in
            var all: [UnownedJob] = []
            while let job = o.jobs.popFirst() { all.append(job) }
            o.draining = false
            return all
        }
        for job in jobs { globalConcurrentExecutor.enqueue(job) }
    }

    // MARK: Lifecycle

    /// Runs `body` on a new loop until it returns (Python's `asyncio.run`); rethrows its error. The
    /// calling thread is the loop's thread meanwhile: it runs the body, its child tasks and the
    /// ring. The loop is shut down afterwards: operations still in flight in tasks the body left
    /// behind are cancelled, and the jobs queued by then run before `run` returns.
    ///
    /// Call it from synchronous code (`main`, a thread): the caller's thread is busy until it returns.
    public static func run<T: Sendable>(_ body: sending @escaping () async throws -> T) throws -> T {
        try EventLoop(name: "EventLoop.run", ownThread: false).runOnCallerThread(body)
    }

    /// `EventLoop.run`'s loop runs on the caller's thread, which would only wait otherwise: no
    /// thread to start and join, no wake-up of the caller at the end (together about 150 µs of the
    /// 400 µs that a run of an empty body cost). The body's task starts the shutdown when it ends,
    /// from the loop's own thread, and `main` returns once the loop has wound down.
    private func runOnCallerThread<T: Sendable>(_ body: sending @escaping () async throws -> T) throws -> T {
        let outcome = Locked<Result<T, any Error>?>(nil)
        let done = LocalEvent()
        Task(executorPreference: self) { [self] in
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.set()
            shutdown()
        }
        main()
        // Set already, unless the loop was shut down by someone else while the body awaited no
        // ring operation (a `toThread`, a child task): the loop then ran out of work first, and
        // the rest of the body runs on the global executor.
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// Runs `body` on this loop and blocks the calling thread until it returns; rethrows its error.
    /// Throws ``EventLoopError/wouldDeadlock`` on the loop's own thread.
    public func run<T: Sendable>(_ body: sending @escaping () async throws -> T) throws -> T {
        if inEventLoop { throw EventLoopError.wouldDeadlock }
        let outcome = Locked<Result<T, any Error>?>(nil)
        let done = LocalEvent()
        Task(executorPreference: self) {
            let result: Result<T, any Error>
            do { result = .success(try await body()) } catch { result = .failure(error) }
            outcome.withLock { $0 = result }
            done.set()
        }
        done.wait()
        return try outcome.withLock { $0! }.get()
    }

    /// Stops the loop: operations in flight are cancelled (their awaiters get
    /// ``EventLoopError/shutDown``), queued jobs still run, then the thread exits. Waits for that,
    /// except on the loop's own thread, where it only starts it. Later jobs run on the global
    /// executor (those of actors on the loop in order, one at a time, on a thread of their own);
    /// later operations fail with ``EventLoopError/shutDown``, as do awaited waits on shared
    /// primitives that run on helper threads (kernels without futex waits in io_uring).
    public func shutdown() {
        schedule(.stop)
        if inEventLoop { return }
        finished.wait()
        let thread = self.thread.withLock { t -> Thread? in
            defer { t = nil }
            return t
        }
        _ = try? thread?.join()
    }

    // MARK: The loop's thread

    private func main() {
        // The caller's thread may run another loop's job (a nested `EventLoop.run`): it is that
        // loop's thread again afterwards.
        let outer = mp_loop_current()
        mp_loop_set_current(Unmanaged.passUnretained(self).toOpaque())
        _ = mp_loop_start(ring)
        // Looked up once: per job, each is a call through a witness table.
        let taskExecutor = asUnownedTaskExecutor()
        let serialExecutor = asUnownedSerialExecutor()
        while true {
            turnsSoFar &+= 1
            turnsShown.store(turnsSoFar, ordering: .relaxed)
            swap(&local, &running)
            for i in 0..<running.count {
                let local = running[i]
                if local.isolated {
                    local.job.runSynchronously(isolatedTo: serialExecutor, taskExecutor: taskExecutor)
                } else {
                    local.job.runSynchronously(on: taskExecutor)
                }
            }
            running.removeAll()
            inbox.withLock { swap(&$0.work, &incoming) }
            for work in incoming { handle(work) }
            incoming.removeAll(keepingCapacity: true)
            if !cancels.isEmpty { sendCancels() }

            if stopping && inFlight == 0 && !wakeArmed {
                // The ring has wound down and the jobs its last completions resumed have run.
                // Jobs queued since are later jobs (see `shutdown`): run here, a coroutine left
                // behind that goes on after its `shutDown` (`try? await sleep(...)` in a loop) was
                // never cancelled, failed at once at each step, and kept the loop turning for ever.
                let late = inbox.withLock { box -> [Work] in
                    box.closed = true
                    defer { box.work = [] }
                    return box.work
                }
                for i in 0..<local.count {
                    let job = local[i]
                    orphan(job.isolated ? .isolatedJob(job.job) : .job(job.job))
                }
                local.removeAll()
                for work in late { orphan(work) }
                break
            }
            if !local.isEmpty { _ = mp_loop_enter(ring, 0) } else { park() }
            reapAll()
        }
        mp_loop_set_current(outer)
        finished.set()
    }

    /// Sleeps in the kernel unless work arrived; see uring.c for the handshake with mp_loop_wake.
    private func park() {
        mp_loop_set_parked(ring, 1)
        let pending = inbox.withLock { !$0.work.isEmpty }
        _ = mp_loop_enter(ring, pending ? 0 : 1)
        mp_loop_set_parked(ring, 0)
    }

    private func handle(_ work: Work) {
        switch work {
        case .job(let job):
            job.runSynchronously(on: asUnownedTaskExecutor())
        case .isolatedJob(let job):
            job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
        case .submit(let op): submitNow(op)
        case .cancel(let op): cancelNow(op)
        case .cancelSlot(let userData): _ = retryingWhileFull { mp_loop_cancel(ring, userData) }
        case .stop: stopNow()
        }
    }

    // MARK: Operations awaited in slots (LoopSlot.swift), on the loop's own thread

    /// Slots taken and not given back.
    var slotsInUse: Int { slots.inUse }

    func takeSlot() -> UnsafeMutablePointer<LoopSlot> { slots.take(for: self) }

    func giveBackSlot(_ slot: UnsafeMutablePointer<LoopSlot>) { slots.giveBack(slot) }

    /// Queues `entry` as the operation of `slot`, with its `userData`; resumes its awaiter at once
    /// if it cannot be queued.
    func submit(_ entry: LoopOperation.Entry, in slot: UnsafeMutablePointer<LoopSlot>, _ userData: UInt64) {
        let rc = stopping ? LoopOperation.shutDownResult : retryingWhileFull { entry.prepare(ring, userData) }
        if rc < 0 { return finishSlot(slot, userData, rc, []) }
        inFlight += 1
        if case .send = entry { sendsThroughRing &+= 1 }
    }

    /// Gives the slot back and resumes its awaiter, which does not touch the slot again. Not
    /// inlined: it is the rare path (a receive's bytes, a refusal), and inlined it made `submit`
    /// too large to be inlined into each awaiter.
    @inline(never)
    private func finishSlot(
        _ slot: UnsafeMutablePointer<LoopSlot>, _ userData: UInt64, _ result: Int32, _ bytes: [UInt8]
    ) {
        if userData & LoopSlot.receivesBytes == 0 { return finishSlot(slot, result) }
        let c = slot.pointee.continuation.unsafelyUnwrapped
        slots.giveBack(slot)
        resumeThroughLoop(c)
        let received = unsafeBitCast(c, to: UnsafeContinuation<ReceivedBytes, Never>.self)
        Handoff.resume { received.resume(returning: ReceivedBytes(result: result, bytes: bytes)) }
    }

    /// `finishSlot` for an operation that receives no bytes: no array to pass and release.
    @inline(__always)
    private func finishSlot(_ slot: UnsafeMutablePointer<LoopSlot>, _ result: Int32) {
        let c = slot.pointee.continuation.unsafelyUnwrapped
        slots.giveBack(slot)
        resumeThroughLoop(c)
        Handoff.resume { c.resume(returning: result) }
    }

    /// Has the task of `c` go on on this loop through the loop's own `enqueue` as a serial executor
    /// (`resumptionWords`) rather than through the generic executor, whose enqueue looks the
    /// task's executor preference up under its status lock (about 200 instructions a resume). If
    /// its continuation is not laid out as expected, nothing changes: the generic executor's
    /// enqueue finds the same loop.
    @inline(__always)
    private func resumeThroughLoop(_ c: UnsafeContinuation<Int32, Never>) {
        if Self.resumesThroughLoop {
            _ = mp_continuation_resume_through(
                unsafeBitCast(c, to: UnsafeMutableRawPointer.self), resumptionWords.0, resumptionWords.1)
        }
    }

    /// Whether `resumeThroughLoop` writes continuations at all: only with the runtime whose layout
    /// was checked (task_cancel.c), Swift 6.3 on 64-bit targets. On Linux a program runs with the
    /// runtime of the toolchain that built it, so the compiler's version is the runtime's; another
    /// one takes the generic path (correct, about 200 instructions more per resume) until its
    /// layout is checked and this line says so (LoopSlotTests.continuationLayout is the check).
    static var resumesThroughLoop: Bool {
        #if compiler(>=6.3) && compiler(<6.4) && (arch(x86_64) || arch(arm64))
            true
        #else
            false
        #endif
    }

    /// `resumptionWords`, for the layout check of the tests.
    var resumptionWordsForTesting: (UInt, UInt) { resumptionWords }

    private func submitNow(_ op: LoopOperation) {
        if op.cancelRequested || stopping {
            op.finish(stopping ? LoopOperation.shutDownResult : -ECANCELED)
            return
        }
        let userData = UInt64(UInt(bitPattern: Unmanaged.passRetained(op).toOpaque()))
        let rc = retryingWhileFull { op.prepare(ring, userData) }
        if rc < 0 {
            Unmanaged<LoopOperation>.fromOpaque(op.address).release()
            op.finish(rc)
            return
        }
        op.submitted = true
        inFlight += 1
        operationObjects &+= 1
        if case .send = op.entry { sendsThroughRing &+= 1 }
    }

    private func cancelNow(_ op: LoopOperation) {
        if op.finished || op.cancelRequested { return }
        op.cancelRequested = true
        if op.submitted { _ = retryingWhileFull { mp_loop_cancel(ring, op.userData) } }
    }

    /// The cancel requests of this turn's handlers on the loop's thread (see `schedule`). An
    /// operation is held by its request, so its address names no other until then.
    private func sendCancels() {
        for work in cancels {
            switch work {
            case .cancel(let op): if !op.finished { _ = retryingWhileFull { mp_loop_cancel(ring, op.userData) } }
            case .cancelSlot(let userData): _ = retryingWhileFull { mp_loop_cancel(ring, userData) }
            default: break
            }
        }
        cancels.removeAll(keepingCapacity: true)
    }

    private func stopNow() {
        if stopping { return }
        stopping = true
        stoppingShown.store(true, ordering: .relaxed)
        _ = retryingWhileFull { mp_loop_cancel_all(ring) }
    }

    /// Queues an entry; a full submission queue means the completion queue is backed up, so reap
    /// (which only resumes continuations: no user code runs here) and try again.
    private func retryingWhileFull(_ prepare: () -> Int32) -> Int32 {
        var rc = prepare()
        while rc == -EBUSY {
            _ = mp_loop_enter(ring, 0)
            reapAll()
            rc = prepare()
        }
        return rc
    }

    private func reapAll() {
        while true {
            let n = Int(mp_loop_reap(ring, completions, 256))
            var wakeRead = false
            for i in 0..<n {
                if completions[i].user_data == UInt64(MP_LOOP_WAKE) {
                    wakeRead = true
                } else {
                    complete(completions[i])
                }
            }
            // Re-armed after the batch: a full submission queue makes the re-arm reap, which
            // refills `completions` under a loop still walking it (completions lost, others
            // completed twice).
            if wakeRead {
                wakeArmed = false
                if !stopping { wakeArmed = retryingWhileFull { mp_loop_arm_wake(ring) } == 0 }
            }
            if n < 256 { return }
        }
    }

    @inline(__always)  // once per completion, in reapAll's loop: a call of its own costs about 20 instructions
    private func complete(_ c: mp_completion_t) {
        switch c.user_data {
        case UInt64(MP_LOOP_IGNORED): return
        case let userData where userData & LoopSlot.tag != 0:
            inFlight -= 1
            let slot = LoopSlot.slot(of: userData)
            assert(slot.pointee.generation == LoopSlot.generation(of: userData), "a completion of an earlier operation")
            // Only a cancellation of the awaiter's task names the operation: at a shutdown, the
            // cancel-all did (the awaiter looks at its task to tell them apart).
            let result = c.result == -ECANCELED && stopping ? LoopOperation.shutDownResult : c.result
            if c.flags & MP_LOOP_CQE_BUFFER != 0 {
                finishSlot(slot, userData, result, takeBuffer(c))
            } else if userData & LoopSlot.receivesBytes == 0 {
                finishSlot(slot, result)  // no array to make and release
            } else {
                finishSlot(slot, userData, result, [])
            }
        default:
            let raw = UnsafeMutableRawPointer(bitPattern: UInt(c.user_data))!
            let op = Unmanaged<LoopOperation>.fromOpaque(raw).takeRetainedValue()
            inFlight -= 1
            var result = c.result
            if c.flags & MP_LOOP_CQE_BUFFER != 0 { op.received = takeBuffer(c) }
            if result == -ECANCELED && stopping && !op.cancelRequested { result = LoopOperation.shutDownResult }
            op.finish(result)
        }
    }
}

extension EventLoop {
    /// The bytes of a receive that completed into one of the loop's buffers, copied out; the
    /// buffer goes back to the ring now, before any other job runs (the awaiter may be on another
    /// thread).
    fileprivate func takeBuffer(_ c: mp_completion_t) -> [UInt8] {
        var bytes: [UInt8] = []
        if c.result > 0, let start = mp_loop_recv_buffer(ring, c.flags) {
            bytes = Array(UnsafeBufferPointer(start: start, count: Int(c.result)))
        }
        receivesIntoRingBuffers &+= 1
        mp_loop_recv_release(ring, c.flags)
        return bytes
    }
}

/// Errors of the event loop itself.
public enum EventLoopError: Error, Equatable, Sendable {
    /// The kernel offers no io_uring here (too old, or `kernel.io_uring_disabled`).
    case unavailable(Errno)
    /// The loop was shut down before or while the operation waited.
    case shutDown
    /// Blocking a loop's own thread until that loop runs something would never return.
    case wouldDeadlock
    /// This object cannot be awaited: an `RLock` (and a `Condition` over one) is owned by a thread,
    /// and a coroutine may resume on another thread (or share its thread with other coroutines).
    case notAwaitable(String)
}

/// A value handed to another thread whose safety the code around it guarantees.
struct UnsafeSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
