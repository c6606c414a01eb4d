import CMultiprocessing
import Synchronization
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A fork server for one closure: what a ``ProcessPool`` over a closure forks its workers from.
///
/// A closure cannot cross an exec, so the forkserver cannot run it: its workers must be forked from
/// a copy of this process. A worker forked from a thread of a busy process can inherit a Swift
/// runtime lock that another thread held at that instant, and wait for it forever. So the pool
/// forks once, here, on the caller's thread, before it starts any thread of its own; the zygote
/// forks every worker and replacement from its single thread, where no lock can be held.
///
/// That one fork can still inherit a lock another *user* thread held at that instant. So the
/// zygote proves itself before it serves: it takes, once, each lock of the Swift runtime that
/// every generic type shares (``Fork/proveRuntimeLocksFree()``) and runs the worker's warm-up,
/// then says hello. A zygote that has not said hello within its limit is taken for one that
/// inherited a held lock: it is killed, and the zygote is forked again (the lock's holder has
/// long let go in this process). Its workers start from a copy in which those locks are free.
///
/// What no probe can cover is a lock of one particular generic type (a user's own) or a lazy
/// global, held at the fork and needed later by a worker: the pool's watchdog replaces a worker
/// stuck before its first task. Programs with busy threads should give their pools a registered
/// ``PoolWorker`` and the forkserver start method.
final class Zygote: @unchecked Sendable {
    private let connection: ForkServerConnection

    /// How many zygotes were killed because they did not prove themselves in time.
    let restarts: Int

    /// How long the first zygote has to prove itself, in ns; each next one has twice as long, up to
    /// ``longestReadyLimit``. A healthy zygote does it in about a millisecond; a poisoned one never
    /// does, so a short first limit costs little and a slow healthy zygote (a loaded machine,
    /// sanitizers) only means another fork.
    static let firstReadyLimit: Int64 = 100_000_000
    static let longestReadyLimit: Int64 = 6_400_000_000

    /// How many zygotes are forked before the pool gives up (about 45 s of limits in all). Each
    /// fork lands on another instant: a lock that is held at all of them is held all the time.
    static let attempts = 12

    /// Whether a restart has been logged in this process: the first is, the rest are counted.
    private static let restartLogged = Atomic<Bool>(false)

    /// Forks the zygote now, on the calling thread, and waits until it has proved itself: in the
    /// zygote, `warmUp` runs after the runtime's shared locks have been taken. In each child it
    /// forks later, `child` runs with the request's tag, after ``Fork/resetChild()``, and must not
    /// return. `stalling` (tests) is how many zygotes hang before their hello, as poisoned ones do.
    /// `readyLimit` (tests) replaces the growing limits with one for every attempt. `killedAfterReply`
    /// (tests): the zygote is SIGKILLed right after it answers its first fork.
    init(
        stalling: Int = 0, readyLimit: Int64? = nil, killedAfterReply: Bool = false, warmUp: @escaping () -> Void,
        child: @escaping (_ tag: UInt64) -> Never
    ) throws(ProcessError) {
        var limit = readyLimit ?? Self.firstReadyLimit
        for attempt in 0..<Self.attempts {
            if let connection = try Self.forkOnce(
                readyWithin: limit, stall: attempt < stalling, killedAfterReply: killedAfterReply, warmUp: warmUp,
                child: child)
            {
                self.connection = connection
                restarts = attempt
                return
            }
            if !Self.restartLogged.exchange(true, ordering: .relaxed) {
                writeError(
                    "multiprocessing: a pool's zygote was not ready \(limit / 1_000_000) ms after its fork (a Swift "
                        + "runtime lock held by another thread at the fork); killed and forked again. Further "
                        + "restarts are counted in ProcessPool.zygoteRestarts\n")
            }
            if readyLimit == nil { limit = min(limit * 2, Self.longestReadyLimit) }
        }
        throw .forkServerFailed(
            "\(Self.attempts) zygotes in a row did not become ready: other threads of this program keep Swift "
                + "runtime locks held; give the pool a registered PoolWorker and the forkserver start method")
    }

    /// One zygote: its connection once it has said hello, or nil if it did not within
    /// `readyWithin` ns (it has then been killed and reaped).
    private static func forkOnce(
        readyWithin: Int64, stall: Bool, killedAfterReply: Bool, warmUp: () -> Void, child: (_ tag: UInt64) -> Never
    ) throws(ProcessError) -> ForkServerConnection? {
        var fds: [Int32] = [-1, -1]
        let rc = mp_socketpair(&fds)
        guard rc == 0 else { throw .system(Errno(rawValue: -rc), function: "socketpair") }
        let (clientEnd, serverEnd) = (fds[0], fds[1])
        let client = mp_process_id()
        Fork.prepare()
        // Until its hello the zygote dies with the thread that forked it, which waits for it here:
        // one stuck on a held lock is never left behind if this process is killed meanwhile.
        let pid = mp_fork(1)
        if pid > 0 { Children.noteFork() }  // the zygote, and the workers it forks, hold our objects
        if pid == 0 {
            // The zygote: prove the runtime's shared locks free, warm up, then C, which returns
            // only in a new child.
            closeDescriptor(clientEnd)
            Fork.resetChild()
            setThreadName("ForkPoolZygote")
            while stall { pause() }
            Fork.proveRuntimeLocksFree()
            warmUp()
            mp_outlive_parent()  // the forking thread may end: the zygote lives while its pool does
            if killedAfterReply { mp_testing_server_killed_after_reply() }
            var request = mp_server_request_t()
            if mp_server_serve(serverEnd, client, 0, &request) != 0 { mp_exit_child(0) }
            Fork.resetChild()
            child(request.tag)
        }
        closeDescriptor(serverEnd)
        guard pid > 0 else {
            closeDescriptor(clientEnd)
            throw .system(Errno(rawValue: -pid), function: "fork")
        }
        // The hello, or the zygote's end, makes the socket readable.
        if mp_poll_readable(clientEnd, Deadline.after(nanoseconds: readyWithin)) == 0 {
            _ = mp_signal(pid, SIGKILL)
            var code: Int32 = 0
            _ = mp_wait_child(pid, -1, 0, &code)
            closeDescriptor(clientEnd)
            return nil
        }
        return try ForkServerConnection(socket: clientEnd, server: pid, name: "zygote")
    }

    /// The zygote's pid.
    var pid: Int32 { connection.serverPID }

    /// Forks a daemon child that runs `child(tag)`: its pid and pidfd (it is this process's child).
    func fork(tag: UInt64) throws(ProcessError) -> (pid: Int32, pidfd: Int32) {
        try connection.fork(tag: tag, daemon: true, descriptors: [])
    }

    /// Forks a daemon child for each tag, back to back (see ``ForkServerConnection/forkMany(_:)``).
    func forkMany(tags: [UInt64]) -> [Result<(pid: Int32, pidfd: Int32), ProcessError>] {
        connection.forkMany(tags.map { ForkServerConnection.Request(tag: $0, daemon: true) })
    }

    /// Ends the zygote (its children live on) and reaps it.
    func close() { connection.close() }
}
