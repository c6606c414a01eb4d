import CMultiprocessing
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A thread that waits for a pool's worker processes to exit (one `poll` over their pidfds), reaps
/// each one, and reports it: `report` puts a notice into the result ring, after every result the
/// worker published (the ring is FIFO), so the result thread knows what the worker had finished.
final class WorkerWatcher: @unchecked Sendable {
    private struct Watched {
        let process: Process
        let fd: Int32
        let index: Int
    }

    private let watched = Locked<[Watched]>([])
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let stopping = Atomic<Bool>(false)
    private let stopped: UnsafeMutablePointer<mp_event_t>
    private let report: @Sendable (_ index: Int, _ pid: Int32, _ exitCode: Int32) -> Void

    init(report: @escaping @Sendable (_ index: Int, _ pid: Int32, _ exitCode: Int32) -> Void) throws(PoolError) {
        var fds: [Int32] = [-1, -1]
        let rc = mp_pipe(&fds)
        guard rc == 0 else { throw .system(.init(rawValue: -rc), function: "pipe2") }
        wakeRead = fds[0]
        wakeWrite = fds[1]
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        stopped = .allocate(capacity: 1)
        mp_event_init(stopped, 0)
        self.report = report
    }

    deinit {
        close(wakeRead)
        close(wakeWrite)
        stopped.deallocate()
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
        let fd = process.state.withLock { $0.pidfd >= 0 ? dup($0.pidfd) : -1 }
        if fd < 0 {
            // Already reaped (or no pidfd): wait for it on a thread of its own.
            let report = self.report
            try? Thread(name: "pool-reaper") {
                _ = try? process.join()
                report(index, process.pid ?? 0, process.exitCode ?? -1)
            }.start()
            return
        }
        watched.withLock { $0.append(Watched(process: process, fd: fd, index: index)) }
        wake()
    }

    /// Stops the thread and waits for it (pending exits are reported first).
    func stop() {
        stopping.store(true, ordering: .releasing)
        wake()
        _ = mp_event_wait(stopped, Int64(MP_FOREVER))
    }

    private func wake() {
        var one: UInt8 = 1
        _ = write(wakeWrite, &one, 1)  // a full pipe is as good as a write: the thread is awake
    }

    private func loop() {
        defer { mp_event_set(stopped) }
        while true {
            let current = watched.withLock { $0 }
            if current.isEmpty && stopping.load(ordering: .acquiring) { return }
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            fds += current.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
            let rc = poll(&fds, nfds_t(fds.count), -1)
            if rc < 0 { continue }  // EINTR
            if fds[0].revents != 0 {
                var buffer = [UInt8](repeating: 0, count: 64)
                while read(wakeRead, &buffer, buffer.count) > 0 {}
            }
            for (i, entry) in current.enumerated() where fds[i + 1].revents != 0 {
                watched.withLock { list in list.removeAll { $0.fd == entry.fd } }
                close(entry.fd)
                entry.process.reap(blocking: true)
                report(entry.index, entry.process.pid ?? 0, entry.process.exitCode ?? -1)
            }
        }
    }
}

extension ProcessError {
    /// The system error behind a failed start (EAGAIN when the cause was not the system's).
    var systemErrno: Errno {
        if case .system(let e, _) = self { return e }
        return .resourceTemporarilyUnavailable
    }
}
