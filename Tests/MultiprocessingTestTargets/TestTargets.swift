// Spawn targets shared by the test suite (parent side) and its helper executable (child side).
import CMultiprocessing
import Multiprocessing
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public struct CounterJob: Codable, Sendable {
    public var lock: Lock
    public var memory: SharedMemory
    public var iterations: Int
    public init(lock: Lock, memory: SharedMemory, iterations: Int) {
        self.lock = lock
        self.memory = memory
        self.iterations = iterations
    }
}

/// A shared value and array that a child adds to `iterations` times (SharedValueTests).
public struct SharedTallyJob: Codable, Sendable {
    public var total: SharedValue<Int>
    public var cells: SharedArray<Double>
    public var iterations: Int
    public init(total: SharedValue<Int>, cells: SharedArray<Double>, iterations: Int) {
        self.total = total
        self.cells = cells
        self.iterations = iterations
    }
}

public struct EventJob: Codable, Sendable {
    public var event: Event
    public var reply: Event
    public init(event: Event, reply: Event) {
        self.event = event
        self.reply = reply
    }
}

public struct ExitJob: Codable, Sendable {
    public var code: Int32
    public init(code: Int32) { self.code = code }
}

public struct QueueJob: Codable, Sendable {
    public var input: Queue<Int>
    public var output: Queue<Int>
    public init(input: Queue<Int>, output: Queue<Int>) {
        self.input = input
        self.output = output
    }
}

public struct PoolJob: Codable, Sendable {
    public var text: String
    public var times: Int
    public var fail: Bool
    public init(text: String, times: Int, fail: Bool = false) {
        self.text = text
        self.times = times
        self.fail = fail
    }
}

public struct PoolAnswer: Codable, Sendable, Equatable {
    public var text: String
    public var pid: Int32
}

/// Codable: a process pool hands it back to the caller as itself.
public enum PoolJobError: Error, Codable, Equatable {
    case refused(String)
}

/// Integers in shared memory for a child to report through (pids, flags).
/// An environment variable to look for, and where to report (``TestTargets/environment``).
public struct EnvironmentJob: Codable, Sendable {
    public var name: String
    public var report: ReportJob
    public init(name: String, report: ReportJob) {
        self.name = name
        self.report = report
    }
}

public struct ReportJob: Codable, Sendable {
    public var memory: SharedMemory
    public var daemon: Bool
    public init(memory: SharedMemory, daemon: Bool = true) {
        self.memory = memory
        self.daemon = daemon
    }
    public subscript(i: Int) -> Int {
        get { memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self)[i] }
        nonmutating set { memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self)[i] = newValue }
    }
}

/// What a consumer of the queue fault tests' streamed messages is given. It runs as a forkserver
/// child: one forked from a thread of the busy test runner could inherit a held runtime lock.
public struct StreamConsumerJob: Codable, Sendable {
    public var queue: Queue<[UInt8]>
    /// One Int per (row, message id): how often this consumer got it; slot 0 in `single` mode.
    public var seen: SharedMemory
    public var row: Int
    public var count: Int
    /// The fault point's passes before it dies (nil: it lives).
    public var dieAfter: UInt32?
    /// Takes one message, which must be ``StreamedMessages/block``: seen[0] is 1 if it was.
    public var single: Bool
    public init(queue: Queue<[UInt8]>, seen: SharedMemory, row: Int, count: Int, dieAfter: UInt32?, single: Bool) {
        (self.queue, self.seen, self.row, self.count, self.dieAfter, self.single) =
            (queue, seen, row, count, dieAfter, single)
    }
}

/// The streamed messages of the queue fault tests, the same in the test and its consumers.
public enum StreamedMessages {
    /// Message `i`: 3 000 to 12 000 bytes (3 to 12 records of a 4 KiB ring), its id first.
    public static func message(_ i: Int) -> [UInt8] {
        let size = 3_000 + (i &* 7_919) % 9_000
        var bytes = (0..<size).map { UInt8(truncatingIfNeeded: $0 &+ i) }
        withUnsafeBytes(of: Int32(i)) { for k in 0..<4 { bytes[k] = $0[k] } }
        return bytes
    }

    /// 20 000 bytes: a FIRST and about 20 fragments through a 4 KiB ring.
    public static let block = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
}

public enum TestTargets {
    /// Consumes streamed messages (see ``StreamConsumerJob``), armed to die at a fault point of the
    /// stream; exits 3 on a torn or foreign message.
    public static let streamConsumer = SpawnTarget<StreamConsumerJob>("streamConsumer") { job in
        if let passes = job.dieAfter { _ = mp_fault_arm_after(MP_FAULT_QUEUE_STREAM, passes) }
        let seen = job.seen.buffer.baseAddress!.assumingMemoryBound(to: Int.self)
        if job.single {
            seen[0] = try job.queue.get(timeout: .seconds(20)) == StreamedMessages.block ? 1 : 3
            return
        }
        while let m = try? job.queue.get(timeout: .seconds(2)) {
            let id = m.withUnsafeBytes { Int($0.loadUnaligned(as: Int32.self)) }
            guard id >= 0 && id < job.count && m == StreamedMessages.message(id) else { exit(3) }
            seen[job.row * job.count + id] += 1
        }
    }

    /// Reports its pid, its parent's pid, its name's length, whether async code runs (slot 3) and
    /// whether it is a daemon (slot 6: 1 if so, 2 if not), then exits.
    public static let report = SpawnTarget<ReportJob>("report") { job in
        job[0] = Int(getpid())
        job[1] = Int(getppid())
        job[2] = Process.current.name.utf8.count
        job[6] = Process.current.daemon ? 1 : 2
        try await Task.sleep(for: .milliseconds(1))
        job[3] = 1
    }

    /// Reports whether its environment sets `name` (slot 0: 1 if so, 2 if not) and its pid (slot 1).
    public static let environment = SpawnTarget<EnvironmentJob>("environment") { job in
        job.report[0] = getenv(job.name) == nil ? 2 : 1
        job.report[1] = Int(getpid())
    }

    /// Sleeps until killed, after reporting its pid in slot 4.
    public static let sleeper = SpawnTarget<ReportJob>("sleeper") { job in
        job[4] = Int(getpid())
        while true { try sleep(for: .seconds(1)) }
    }

    /// Starts a `sleeper` from its own forkserver (a daemon or not, as the job says), reports both
    /// pids (slots 5 and 4), then sleeps until killed.
    public static let sleeperParent = SpawnTarget<ReportJob>("sleeperParent") { job in
        let child = Process(name: "sleeper", daemon: job.daemon, target: sleeper, argument: job)
        try child.start()
        job[5] = Int(getpid())
        while true { try sleep(for: .seconds(1)) }
    }

    /// Answers each string with itself twice, until an empty one.
    public static let pipeEcho = SpawnTarget<Connection>("pipeEcho") { connection in
        while true {
            let s: String = try connection.receive()
            if s.isEmpty { return }
            try connection.send(s + s)
        }
    }

    /// Reads ints until -1, putting each one doubled.
    public static let doubler = SpawnTarget<QueueJob>("doubler") { job in
        while true {
            let x = try job.input.get()
            if x < 0 { return }
            try job.output.put(2 * x)
        }
    }

    /// Adds 1 to the Int at the start of `memory`, `iterations` times, under `lock`.
    public static let increment = SpawnTarget<CounterJob>("increment") { job in
        let counter = job.memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self)
        for _ in 0..<job.iterations {
            try job.lock.withLock { counter.pointee += 1 }
        }
    }

    /// Adds 1 to a SharedValue and to each cell of a SharedArray, `iterations` times, under their locks.
    public static let sharedTally = SpawnTarget<SharedTallyJob>("sharedTally") { job in
        for _ in 0..<job.iterations {
            job.total.withLock { $0 += 1 }
            job.cells.withLock { cells in
                for i in cells.indices { cells[i] += 1 }
            }
        }
    }

    /// Proves the child is a full Swift process: awaits, then answers through a shared Event.
    public static let asyncEcho = SpawnTarget<EventJob>("asyncEcho") { job in
        try await Task.sleep(for: .milliseconds(10))
        try await job.event.wait()  // the async wait (an io_uring futex wait on the shared loop)
        job.reply.set()
    }

    /// Makes the shared loop (by an async sleep outside any loop) while every descriptor is taken,
    /// then again once they are free: exits 0 if the second works, 2 if the first did not fail
    /// with EMFILE, 3 if the failure was kept (CloseAndGarbageTests). A spawned child: it makes
    /// threads, which a child forked from the busy test process may not (see Fork.swift).
    public static let sharedLoopAfterEMFILE = SpawnTarget<ExitJob>("sharedLoopAfterEMFILE") { _ in
        var fds: [Int32] = []
        while true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if fd < 0 { break }
            fds.append(fd)
        }
        var first: (any Error)? = nil
        do { try await Multiprocessing.sleep(for: .milliseconds(1)) } catch { first = error }
        for fd in fds { close(fd) }
        guard let first = first as? EventLoopError, case .unavailable(.tooManyOpenFiles) = first else { exit(2) }
        do { try await Multiprocessing.sleep(for: .milliseconds(1)) } catch { exit(3) }
    }

    /// Throws, so the child must exit with status 1.
    public static let fail = SpawnTarget<ExitJob>("fail") { job in
        struct Failure: Error {}
        if job.code != 0 { throw Failure() }
    }

    /// Takes the lock and never lets go (the test kills it).
    public static let holdLock = SpawnTarget<CounterJob>("holdLock") { job in
        try job.lock.acquire()
        job.memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self).pointee = 1
        while true { try sleep(for: .seconds(1)) }
    }

    /// A process pool's work function for spawned workers: a String, repeated, with the worker's pid.
    public static let poolRepeat = PoolWorker<PoolJob, PoolAnswer>("poolRepeat") { job in
        if job.fail { throw PoolJobError.refused(job.text) }
        if job.text == "hang" { try sleep(for: .seconds(60)) }  // until the test kills this worker
        return PoolAnswer(text: String(repeating: job.text, count: job.times), pid: Process.current.pid ?? 0)
    }

    /// Creates the named region `/<text>`, reports its pid in slot 4, then sleeps until killed.
    public static let createRegion = SpawnTarget<PoolJob>("createRegion") { job in
        let memory = try SharedMemory(create: job.text, size: 64)
        let report = try SharedMemory(attach: job.text + "-report")
        report.buffer.baseAddress!.assumingMemoryBound(to: Int.self)[4] = Int(getpid())
        withExtendedLifetime(memory) {
            while true { try? sleep(for: .seconds(1)) }
        }
    }

    /// For each descriptor number in slots 0..<3: whether it is open here on the file whose inode is
    /// in slots 3..<6 (1 in slots 6..<9: a descriptor the parent did not hand over reached it); 1 in
    /// slot 9 once done.
    public static let inheritedDescriptors = SpawnTarget<ReportJob>("inheritedDescriptors") { job in
        for i in 0..<3 {
            var info = stat()
            job[6 + i] = fstat(Int32(job[i]), &info) == 0 && Int(info.st_ino) == job[3 + i] ? 1 : 0
        }
        job[9] = 1
    }

    /// Starts a pool of `processes` forkserver workers (and so a forkserver of its own), runs
    /// one task on it, and returns with the pool running: the child's end must reap them all.
    public static let poolThenExit = SpawnTarget<Int>("poolThenExit") { processes in
        let pool = try ProcessPool(processes: processes, worker: twice)
        guard try pool.apply(21) == 42 else { throw PoolJobError.refused("twice(21)") }
        keptPools.withLock { $0.append(pool) }  // never deinitialized: terminated at the child's end
    }
    private static let keptPools = Mutex<[ProcessPool<Int, Int>]>([])

    /// A process pool's work function for the stress tests: twice the input.
    public static let twice = PoolWorker<Int, Int>("twice") { $0 &* 2 }

    public static let all: [any SpawnEntry] = [
        twice, PoolHazard.target, createRegion, inheritedDescriptors, streamConsumer,
        increment, asyncEcho, fail, holdLock, doubler, pipeEcho, poolRepeat, report, sleeper, sleeperParent,
        sharedTally, poolThenExit, sharedLoopAfterEMFILE, environment,
    ]
}
