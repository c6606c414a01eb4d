import CMultiprocessing

/// How a ``ProcessPool`` starts its workers and their replacements, chosen when the pool is made.
///
/// - A closure, or a ``PoolWorker`` with ``Process/StartMethod/fork``: forked by the pool's
///   ``Zygote``, which the pool forks on the caller's thread before it starts any thread of its own.
///   A library thread never forks (see ``Fork``).
/// - A ``PoolWorker`` with ``Process/StartMethod/forkserver`` (the default) or
///   ``Process/StartMethod/spawn``: started like any registered target; only the worker's name and
///   the pool's channels travel.
enum WorkerLauncher: Sendable {
    case zygote(Zygote)
    case registered(name: String, startMethod: Process.StartMethod, maxTasks: Int?)

    /// Starts the worker at `index` (a daemon: it dies with the pool's process). `stall` (tests)
    /// makes a forked worker hang before it is ready, as one that inherited a held lock would.
    func start(index: Int, channels: PoolChannels, stall: Bool) throws(ProcessError) -> Process {
        switch self {
        case .zygote(let zygote):
            let tag = ZygoteWorker(index: index, serial: nextWorkerSerial(), stall: stall)
            let (pid, pidfd) = try zygote.fork(tag: tag.rawValue)
            return Process(child: pid, pidfd: pidfd, name: tag.name, daemon: true)
        case .registered:
            let worker = registeredWorker(index: index, channels: channels)
            try worker.start()
            return worker
        }
    }

    /// Starts the workers at `indices` together (a pool's first ones), each as ``start(index:channels:stall:)``
    /// would, except that the zygote or the forkserver forks them back to back, without waiting
    /// for this process between two. Each one's process or error, in order.
    func startAll(_ indices: [(index: Int, stall: Bool)], channels: PoolChannels) -> [Result<Process, ProcessError>] {
        switch self {
        case .zygote(let zygote):
            let tags = indices.map { ZygoteWorker(index: $0.index, serial: nextWorkerSerial(), stall: $0.stall) }
            return zip(tags, zygote.forkMany(tags: tags.map(\.rawValue))).map { tag, answer in
                answer.map { Process(child: $0.pid, pidfd: $0.pidfd, name: tag.name, daemon: true) }
            }
        case .registered:
            let workers = indices.map { registeredWorker(index: $0.index, channels: channels) }
            return zip(workers, Process.startAll(workers)).map { worker, error in
                error.map { .failure($0) } ?? .success(worker)
            }
        }
    }

    /// A worker over a registered ``PoolWorker``, not started. The body is never run here: the child
    /// finds the registered worker by its name.
    private func registeredWorker(index: Int, channels: PoolChannels) -> Process {
        guard case .registered(let name, let startMethod, let maxTasks) = self else { preconditionFailure() }
        let prefix = startMethod == .spawn ? "SpawnPoolWorker" : "ForkServerPoolWorker"
        let target = SpawnTarget<PoolWorkerArgument>(name) { _ in }
        let argument = PoolWorkerArgument(channels: channels.handle, index: index, maxTasks: maxTasks)
        return Process(
            name: "\(prefix)-\(nextWorkerSerial())", daemon: true, target: target, argument: argument,
            startMethod: startMethod)
    }

    /// The zygote's pid, when the workers come from one.
    var zygotePID: Int32? {
        if case .zygote(let zygote) = self { return zygote.pid }
        return nil
    }

    /// How many zygotes were killed and forked again before one proved itself.
    var zygoteRestarts: Int {
        if case .zygote(let zygote) = self { return zygote.restarts }
        return 0
    }

    /// Called once the pool's last worker has gone: ends the zygote.
    func close() {
        if case .zygote(let zygote) = self { zygote.close() }
    }
}

/// What a zygote's worker is told through the request's tag: its index in the pool, the number in
/// its name (as Python's "ForkPoolWorker-3"), and, in tests, to hang before it is ready.
struct ZygoteWorker {
    var index: Int
    var serial: Int
    var stall: Bool

    init(index: Int, serial: Int, stall: Bool) {
        (self.index, self.serial, self.stall) = (index, serial, stall)
    }

    init(_ rawValue: UInt64) {
        index = Int(truncatingIfNeeded: rawValue & 0xffff_ffff)
        serial = Int(truncatingIfNeeded: (rawValue >> 32) & 0x7fff_ffff)
        stall = rawValue >> 63 != 0
    }

    var rawValue: UInt64 {
        UInt64(truncatingIfNeeded: index) & 0xffff_ffff | (UInt64(truncatingIfNeeded: serial) & 0x7fff_ffff) << 32
            | (stall ? 1 << 63 : 0)
    }

    var name: String { "ForkPoolWorker-\(serial)" }
}

private let workerCounter = Locked(0)

/// The number in the next worker's name: "ForkPoolWorker-1", ...
func nextWorkerSerial() -> Int {
    workerCounter.withLock { n in
        n += 1
        return n
    }
}
