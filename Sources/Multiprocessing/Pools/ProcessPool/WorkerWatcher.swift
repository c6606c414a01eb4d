import CMultiprocessing
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A thread that waits for a pool's worker processes to exit (one `poll` over their pidfds), reaps
/// each one, and reports it: `report` puts a notice into the result ring, after every result the
/// worker published (the ring is FIFO), so the result thread knows what the worker had finished.
///
/// It is also the start-up watchdog of forked workers, the last line of defence against the hazard
/// ``Zygote`` documents: a worker whose zygote inherited a held Swift runtime lock waits for ever
/// the first time it needs that lock. A worker meets those needs before its first claim
/// (``WorkerLoop/warmUp()``), then writes its pid to its ready word. One that has not within the
/// start-up limit is killed (it held no task, and the usual exit path starts a replacement), the
/// replacement is logged to stderr and counted (``ProcessPool/watchdogReplacements``). After
/// ``stuckLimit`` such kills in a row the pool gives up (``PoolError/workersCannotStart(_:)``).
final class WorkerWatcher: @unchecked Sendable {
    private struct Watched {
        let process: Process
        let fd: Int32
        let index: Int
        let pid: Int32
        /// Monotonic ns by which the worker must be ready; nil when not watched (spawned workers,
        /// which share no locks with the parent, or one already ready or killed).
        var deadline: Int64?
    }

    /// How many stuck workers in a row (none ready in between) make the pool give up.
    static let stuckLimit = 3

    /// How long a forked worker may take to start, in ns.
    private let startupLimit: Int64
    private let replaced = Atomic<Int>(0)
    private let stuckInARow = Atomic<Int>(0)

    private let watched = Locked<[Watched]>([])
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let stopping = Atomic<Bool>(false)
    private let stopped = LocalEvent()
    /// The watching thread (its observer calls run there).
    private let thread = DeliveryThread()
    private let report: @Sendable (_ index: Int, _ pid: Int32, _ exitCode: Int32) -> Void
    private let onStuck: @Sendable (_ pid: Int32) -> Void

    private let ready: UnsafeMutablePointer<UInt64>

    init(
        ready: UnsafeMutablePointer<UInt64>, startupLimit: Int64, stuck: @escaping @Sendable (_ pid: Int32) -> Void,
        report: @escaping @Sendable (_ index: Int, _ pid: Int32, _ exitCode: Int32) -> Void
    ) throws(PoolError) {
        self.ready = ready
        self.startupLimit = startupLimit
        var fds: [Int32] = [-1, -1]
        let rc = mp_pipe(&fds)
        guard rc == 0 else { throw .system(.init(rawValue: -rc), function: "pipe2") }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        for fd in fds { _ = try? systemCall { fcntl(fd, F_SETFL, O_NONBLOCK) } }  // a pipe has no other status flag
        self.report = report
        self.onStuck = stuck
    }

    deinit {
        closeDescriptor(wakeRead)
        closeDescriptor(wakeWrite)
    }

    /// Starts the watching thread (it holds this watcher until ``stop()``).
    func start() throws(PoolError) {
        do {
            try Thread(name: "pool-watcher") { self.loop() }.start()
        } catch {
            throw .system(error.systemErrno, function: "pthread_create")
        }
    }

    /// Watches `process` (started, not yet reaped by this watcher) as the worker at `index`.
    func watch(_ process: Process, index: Int) {
        // Our own descriptor: the Process object closes its pidfd when anyone reaps it.
        let fd = process.state.withLock { $0.pidfd >= 0 ? (try? duplicateDescriptor($0.pidfd)) ?? -1 : -1 }
        if fd < 0 {
            // Already reaped (or no pidfd): wait for it on a thread of its own.
            let report = self.report
            try? Thread(name: "pool-reaper") {
                _ = try? process.join()
                report(index, process.pid ?? 0, process.exitCode ?? -1)
            }.start()
            return
        }
        let pid = process.pid ?? 0
        let deadline = process.startMethod == .fork ? mp_monotonic_ns() + startupLimit : nil
        watched.withLock { $0.append(Watched(process: process, fd: fd, index: index, pid: pid, deadline: deadline)) }
        wake()
    }

    /// Stops the thread and waits for it (pending exits are reported first).
    func stop() {
        stopping.store(true, ordering: .releasing)
        wake()
        stopped.wait()
    }

    private func wake() {
        var one: UInt8 = 1
        _ = try? systemCall { write(wakeWrite, &one, 1) }  // a full pipe is as good as a write: the thread is awake
    }

    /// Whether this is the watching thread: a wait for the pool to finish could never end there,
    /// since the pool finishes once this thread has reported its workers' exits.
    var isCurrent: Bool { thread.isCurrent }

    private func loop() {
        thread.adoptCurrent()
        defer { stopped.set() }
        while true {
            let current = watched.withLock { $0 }
            if current.isEmpty && stopping.load(ordering: .acquiring) { return }
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            fds += current.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            // A signal ends the poll early: the loop looks again with a recomputed timeout.
            guard
                (try? systemCall(retryingInterrupts: false) { poll(&fds, nfds_t(fds.count), pollTimeout(current)) })
                    != nil
            else { continue }
            if fds[0].revents != 0 {
                var buffer = [UInt8](repeating: 0, count: 64)
                while ((try? systemCall { read(wakeRead, &buffer, buffer.count) }) ?? 0) > 0 {}
            }
            for (i, entry) in current.enumerated() where fds[i + 1].revents != 0 {
                watched.withLock { list in list.removeAll { $0.fd == entry.fd } }
                closeDescriptor(entry.fd)
                entry.process.reapIfExited()
                if entry.process.exitCode == nil { _ = try? entry.process.join() }  // exited: this returns at once
                report(entry.index, entry.process.pid ?? 0, entry.process.exitCode ?? -1)
            }
            checkStartups()
        }
    }

    /// Milliseconds until the next start-up deadline; -1 (forever) when none is pending.
    private func pollTimeout(_ current: [Watched]) -> Int32 {
        guard let next = current.compactMap(\.deadline).min() else { return -1 }
        let left = (next - mp_monotonic_ns()) / 1_000_000
        return Int32(clamping: max(0, left + 1))
    }

    /// How many workers the watchdog has killed for being stuck before their first task.
    var replacements: Int { replaced.load(ordering: .relaxed) }

    /// Stuck workers killed since the last worker that became ready.
    var consecutiveStuck: Int { stuckInARow.load(ordering: .acquiring) }

    /// Stops watching the start-up of ready workers; kills the ones past their deadline.
    private func checkStartups() {
        let now = mp_monotonic_ns()
        let (stuck, readyNow) = watched.withLock { list -> ([Watched], Bool) in
            var stuck: [Watched] = []
            var readyNow = false
            for i in list.indices {
                guard let deadline = list[i].deadline else { continue }
                if mp_pool_slot(ready + list[i].index) & ~PoolChannels.initialized == UInt64(list[i].pid) {
                    list[i].deadline = nil
                    readyNow = true
                } else if now >= deadline {
                    list[i].deadline = nil
                    stuck.append(list[i])
                }
            }
            return (stuck, readyNow)
        }
        if readyNow { stuckInARow.store(0, ordering: .releasing) }
        for entry in stuck {
            writeError(
                "multiprocessing: pool worker \(entry.pid) (\(entry.process.name)) was not ready "
                    + "\(startupLimit / 1_000_000) ms after it started; killed and replaced\n")
            replaced.add(1, ordering: .relaxed)
            // Counted before the kill: the pool reads it when the exit comes back through the pidfd.
            stuckInARow.add(1, ordering: .releasing)
            try? entry.process.kill()
            onStuck(entry.pid)
        }
    }
}
