import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// The forkserver start method (Python's `forkserver`, its default on Linux since 3.14).
///
/// The server is this program started again (``Spawn/executable``, by exec: a clean image that
/// inherits no lock), which runs `main` up to ``Spawn/bootstrap(_:)-(SpawnEntry...)``, starts no
/// thread, and forks a child for each request. The child runs the requested ``SpawnTarget`` or
/// ``PoolWorker`` like a spawned child would (a full Swift process: async code works, the
/// concurrency runtime starts fresh in it), but starts in about a millisecond, since the program
/// is already loaded and initialised.
///
/// Each process that uses the start method has its own server, started on first use and again if
/// it died; a forked child starts its own. Children are the client's own (see forkserver.c), so
/// they are joined, reaped and signalled like any other. The server ends when its client does;
/// it then SIGKILLs the daemon children it made. Requests travel over a socketpair that only the
/// client holds: no other program can get the server to fork.
enum ForkServer {
    private static let connection = Locked<ForkServerConnection?>(nil)

    /// Starts `launch`'s child from this process's server, starting the server first if needed (or
    /// again, once, if it died). Returns the child's pid and pidfd.
    static func start(_ launch: borrowing ChildLaunch, daemon: Bool) throws(ProcessError) -> (
        pid: Int32, pidfd: Int32
    ) {
        try startMany([ForkServerConnection.Request(daemon: daemon, descriptors: launch.descriptors)])[0].get()
    }

    /// Starts several children in one exchange with this process's server (see
    /// ``ForkServerConnection/forkMany(_:)``): each one's pid and pidfd, or its error. Those that
    /// failed because the server died are asked again, once, of a new server.
    static func startMany(_ requests: [ForkServerConnection.Request]) -> [Result<
        (pid: Int32, pidfd: Int32), ProcessError
    >] {
        var results = [Result<(pid: Int32, pidfd: Int32), ProcessError>](
            repeating: .failure(.forkServerFailed("no fork server")), count: requests.count)
        var pending = Array(requests.indices)
        for _ in 0..<2 where !pending.isEmpty {
            let server: ForkServerConnection
            do { server = try current() } catch {
                for i in pending { results[i] = .failure(error) }
                break
            }
            let answers = server.forkMany(pending.map { requests[$0] })
            var again: [Int] = []
            for (i, answer) in zip(pending, answers) {
                results[i] = answer
                if case .failure = answer, !server.isUsable { again.append(i) }  // the server failed, not the request
            }
            pending = again
        }
        return results
    }

    /// The server of this process, started if there is none that works.
    private static func current() throws(ProcessError) -> ForkServerConnection {
        try connection.withLock { (server: inout ForkServerConnection?) throws(ProcessError) in
            if let existing = server {
                if existing.isUsable { return existing }
                existing.close()
                server = nil
            }
            ProgramExit.startedHere()
            let started: ForkServerConnection
            do throws(ProcessError) {
                started = try launchServer(bindingNow: true)
            } catch {
                // A program that binds only lazily (a symbol no library defines, never called)
                // does not load with LD_BIND_NOW: the server it starts instead binds as it goes.
                started = try launchServer(bindingNow: false)
            }
            server = started
            return started
        }
    }

    /// At this process's end (``ProgramExit``), after its children are finished: its server is told
    /// goodbye and reaped, so it does not outlive this process. A start after this launches a new
    /// one, which ends when this process does.
    static func closeAtExit() {
        let server = connection.withLock { server -> ForkServerConnection? in
            defer { server = nil }
            return server
        }
        server?.close()  // only the process that started it says goodbye and reaps it
    }

    /// In a new child: the server of the process it was forked from is not its own.
    static func forgetInherited() {
        connection.withLock { server in
            guard let existing = server, !existing.isOwned else { return }
            existing.close()
            server = nil
        }
    }

    /// Starts a server. `bindingNow`: its dynamic linker resolves every symbol at its start
    /// (`LD_BIND_NOW`), about a millisecond once, rather than each child resolving, again, every
    /// function it calls for the first time (a child's first line came 15% sooner: the `start`
    /// suite's forkserver row). A client whose environment already sets `LD_BIND_NOW` passes it on
    /// as it is; one that adds it has the server take it out again before it forks, so that
    /// children, and the programs they exec, see the client's environment.
    private static func launchServer(executable: String = Spawn.executable, bindingNow: Bool = false)
        throws(ProcessError) -> ForkServerConnection
    {
        if Spawn.bootstrapPending {
            throw .forkServerFailed(
                "this program was started as a child or forkserver and has not called Spawn.bootstrap: "
                    + "call it first thing in main")
        }
        var fds: [Int32] = [-1, -1]
        let rc = mp_socketpair(&fds)
        guard rc == 0 else { throw .system(Errno(rawValue: -rc), function: "socketpair") }
        let (clientEnd, serverEnd) = (fds[0], fds[1])
        let pid: Int32
        do throws(ProcessError) {
            let adding = bindingNow && getenv(bindNowKey) == nil
            let setup = ForkServerSetup(socket: serverEnd, client: mp_process_id(), addedBindNow: adding)
            let payload = try ChildLaunch.memfd(holding: BootstrapPayload.forkServer(setup).encoded())
            defer { closeDescriptor(payload) }
            pid = try Spawn.start(
                payload: payload, keeping: [serverEnd, payload], executable: executable,
                adding: adding ? ["\(bindNowKey)=1"] : [])
            closeDescriptor(serverEnd)  // the server has its own
        } catch {
            closeDescriptor(clientEnd)
            closeDescriptor(serverEnd)
            throw error
        }
        return try ForkServerConnection(socket: clientEnd, server: pid, name: "forkserver")
    }

    /// In the forkserver (from `Spawn.bootstrap`): serves requests until the client ends, then
    /// exits; in each child, runs its target and exits.
    static func serve(_ setup: ForkServerSetup, targets: [any SpawnEntry]) -> Never {
        if setup.addedBindNow { unsetenv(bindNowKey) }  // loading is done; single-threaded here
        // Kept across our exec only: not for our own children.
        _ = try? systemCall { fcntl(setup.socket, F_SETFD, FD_CLOEXEC) }
        var name = [CChar](repeating: 0, count: 16)
        mp_get_thread_name(&name)
        mp_set_thread_name("mp-forkserver")
        Fork.prepareServer(for: targets)
        var request = mp_server_request_t()
        let served = mp_server_serve(setup.socket, setup.client, 1, &request)
        if served != 0 {
            if served == -EBUSY {
                writeError(
                    "multiprocessing forkserver: more than one thread at Spawn.bootstrap; call it first in main\n")
            }
            mp_exit_child(0)
        }
        mp_set_thread_name(name)  // a child: named as a spawned one would be
        let fd = mp_server_request_fd(&request, request.fd_count &- 1)  // the payload comes last
        guard fd >= 0,
            let bytes = Spawn.readPayload(fd),
            case .child(let payload) = try? BootstrapPayload(decoding: bytes)
        else {
            writeError("multiprocessing forkserver: a child's request could not be read\n")
            mp_exit_child(1)
        }
        closeDescriptor(fd)
        Spawn.runChild(payload, targets: targets, forked: true)
    }
}

extension ForkServer {
    /// The pid of this process's server, if it has one (tests).
    static var serverPIDForTesting: Int32? {
        connection.withLock { $0?.isUsable == true ? $0?.serverPID : nil }
    }

    /// Starts a server from `executable` and stops it again (tests: one that never bootstraps).
    static func launchForTesting(executable: String) throws(ProcessError) {
        try launchServer(executable: executable).close()
    }

    /// Sends the current server a request of `version` that claims `claimedDescriptors` but carries
    /// none; returns the server's answer (tests: a malformed request forks nothing).
    static func sendMalformedRequestForTesting(version: UInt32, claimedDescriptors: UInt32 = 0) -> Int32 {
        guard let server = try? current() else { return 0 }
        var request = mp_server_request_t()
        mp_server_request_init(&request, 0, 0)
        request.version = version
        request.fd_count = claimedDescriptors
        return server.send(&request)
    }

    /// Sends the current server `count` fork requests and reads none of the answers (tests: the
    /// children they name must never run, and closing must leave none behind). 0 or -errno.
    static func sendUnansweredForTesting(count: Int) -> Int32 {
        guard let server = try? current() else { return -ESRCH }
        return server.sendOnlyForTesting(count: count)
    }
}

/// What the forkserver is told at bootstrap: its end of the socketpair, its client's pid, and
/// whether `LD_BIND_NOW` in its environment is the client's addition (taken out before any fork).
struct ForkServerSetup: Equatable {
    var socket: Int32
    var client: Int32
    var addedBindNow: Bool
}

/// The dynamic linker's variable that has it resolve every symbol when a program loads.
private let bindNowKey = "LD_BIND_NOW"

/// A fork server this process started (its forkserver, or a pool's zygote) as its client sees it:
/// the socket that requests go through, and the server process, a child of this one.
final class ForkServerConnection: @unchecked Sendable {
    let serverPID: Int32
    private let serverPidfd: Int32
    private let socket: Int32
    /// The process that started the server; a forked child inherits the connection but not the server.
    private let owner: Int32
    private let name: String
    /// Serialises requests (one answer per request on one socket) and guards `broken`.
    private let lock = InternalLock()
    private var broken = false
    private var closed = false

    /// How long a request may wait for its answer, in ns: a server answers in about a millisecond,
    /// far more only under sanitizers or a machine that is out of memory.
    static let answerLimit: Int64 = 60_000_000_000

    /// Takes over `socket` and the child `server` (`name` for messages), and waits for the server's
    /// hello. If none comes, the server is killed and reaped, and this throws.
    init(socket: Int32, server: Int32, name: String) throws(ProcessError) {
        self.socket = socket
        serverPID = server
        serverPidfd = mp_pidfd_open(server)
        owner = mp_process_id()
        self.name = name
        var pid: Int32 = 0
        let rc = mp_server_await_hello(socket, serverPidfd, mp_monotonic_ns() + Self.answerLimit, &pid)
        if rc != 0 {
            broken = true
            close()
            switch -rc {
            case EBUSY:
                throw .forkServerFailed(
                    "the \(name) had more than one thread when it started: call Spawn.bootstrap first thing in main")
            case ECONNRESET:
                throw .forkServerFailed(
                    "the \(name) exited before it was ready: does main call Spawn.bootstrap first?")
            default:
                throw .forkServerFailed("the \(name) did not start: \(Errno(rawValue: -rc))")
            }
        }
    }

    /// Whether this process started the server (in a forked child, it did not).
    var isOwned: Bool { owner == mp_process_id() }

    /// Whether requests can go through: ours, and the server has not failed.
    var isUsable: Bool { isOwned && lock.withLock { !broken && !closed } }

    /// One child to ask for: `tag` reaches the child (a zygote's worker reads its index there);
    /// `descriptors` are handed to it under the same numbers.
    struct Request {
        var tag: UInt64 = 0
        var daemon: Bool
        var descriptors: [Int32] = []
    }

    /// Asks for one child. Throws ``ProcessError/forkServerFailed(_:)`` when the server is gone or
    /// broken (it is then unusable), ``ProcessError/system(_:function:)`` when the server could not
    /// fork, ``ProcessError/argumentEncoding(_:)`` when it refused the request or the socket could
    /// not carry its descriptors (the server goes on in both cases).
    func fork(tag: UInt64, daemon: Bool, descriptors: [Int32]) throws(ProcessError) -> (pid: Int32, pidfd: Int32) {
        try forkMany([Request(tag: tag, daemon: daemon, descriptors: descriptors)])[0].get()
    }

    /// Asks for several children in one exchange (a pool's workers): the requests of a window are
    /// all sent before the first answer is awaited, so the server forks them back to back instead
    /// of waiting for this process between two. Each request gets its own answer, in order, and its
    /// own result, as ``fork(tag:daemon:descriptors:)`` would give it. Windows of 32 keep both
    /// queues of the socket short: a client that sent more than the server's queue holds while the
    /// server waits to queue an answer the client has not read would wait forever.
    func forkMany(_ requests: [Request]) -> [Result<(pid: Int32, pidfd: Int32), ProcessError>] {
        var results = [Result<(pid: Int32, pidfd: Int32), ProcessError>](
            repeating: .failure(.forkServerFailed("the \(name) is not running")), count: requests.count)
        var messages = [mp_server_request_t](repeating: mp_server_request_t(), count: requests.count)
        var valid = [Bool](repeating: true, count: requests.count)
        for (i, request) in requests.enumerated() {
            mp_server_request_init(&messages[i], request.tag, request.daemon ? 1 : 0)
            for fd in request.descriptors where mp_server_request_add_fd(&messages[i], fd) != 0 {
                let limit = MP_SERVER_MAX_FDS
                results[i] = .failure(.argumentEncoding("a child can be given at most \(limit) descriptors"))
                valid[i] = false
                break
            }
        }
        lock.withLock {
            var window = 0
            while window < requests.count && isOwned && !broken && !closed {
                let end = min(window + 32, requests.count)
                let deadline = mp_monotonic_ns() + Self.answerLimit
                var sent: [Int] = []
                for i in window..<end where valid[i] {
                    let rc = requests[i].descriptors.withUnsafeBufferPointer { fds in
                        mp_server_send_fork(socket, &messages[i], fds.baseAddress, UInt32(fds.count))
                    }
                    if rc == -EBADF {  // a descriptor of this request is not open: nothing was sent
                        results[i] = .failure(.argumentEncoding("a descriptor given to the child is not open"))
                        continue
                    }
                    if rc != 0 {
                        results[i] = .failure(failure(rc))
                        break  // the socket refused: what was sent is still answered below
                    }
                    sent.append(i)
                }
                for i in sent {
                    // Once one answer failed, the next one read could be a late answer to another
                    // request: what is left is read by close(), which reaps the children it names.
                    if broken { break }
                    var pidfd: Int32 = -1
                    let pid = mp_server_await_fork(socket, serverPidfd, deadline, &pidfd)
                    results[i] = pid > 0 ? .success((pid, pidfd)) : .failure(failure(pid))
                }
                window = end
            }
        }
        return results
    }

    /// The error for a failed request's -errno; marks the connection broken unless only that fork
    /// failed (the server goes on). Called under `lock`.
    private func failure(_ rc: Int32) -> ProcessError {
        switch -rc {
        case EAGAIN, ENOMEM, EMFILE, ENFILE:
            return .system(Errno(rawValue: -rc), function: "clone")
        case EINVAL:  // the server checked this request and refused it (forkserver.c's valid_request)
            return .argumentEncoding(
                "the \(name) refused the request: a descriptor given twice, or above the highest it allows")
        default:  // gone (ECONNRESET, EPIPE), mute (ETIMEDOUT) or confused (EPROTO)
            broken = true
            return .forkServerFailed("the \(name) (pid \(serverPID)) failed: \(Errno(rawValue: -rc))")
        }
    }

    /// Sends `request` as it is, with no descriptors, and returns the answer: a pid or -errno (tests).
    func send(_ request: inout mp_server_request_t) -> Int32 {
        lock.withLock {
            var pidfd: Int32 = -1
            let pid = mp_server_fork(
                socket, serverPidfd, &request, nil, 0, mp_monotonic_ns() + Self.answerLimit, &pidfd)
            if pidfd >= 0 { closeDescriptor(pidfd) }
            return pid
        }
    }

    /// Sends `count` fork requests without descriptors and awaits no answer (tests). 0 or -errno.
    func sendOnlyForTesting(count: Int) -> Int32 {
        lock.withLock {
            var request = mp_server_request_t()
            mp_server_request_init(&request, 0, 0)
            for _ in 0..<count {
                let rc = mp_server_send_fork(socket, &request, nil, 0)
                if rc != 0 { return rc }
            }
            return 0
        }
    }

    /// Ends the connection. In the process that started the server, the server is told goodbye and
    /// exits, leaving its children alone, and is reaped here (killed if it has not exited within a
    /// second).
    func close() {
        let first = lock.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        guard isOwned else {
            closeDescriptor(socket)
            if serverPidfd >= 0 { closeDescriptor(serverPidfd) }
            return
        }
        _ = mp_server_goodbye(socket)  // leave our children alone
        // Answers still due (requests abandoned by a forkMany that failed) name children of ours
        // that nobody knows of: they are read until the server, done with what came before the
        // goodbye, ends its stream, and their children killed and reaped (else they would stay
        // zombies of this process). A server that does not exit within a second is killed.
        let deadline = Deadline.after(nanoseconds: 1_000_000_000)
        _ = mp_server_drain(socket, serverPidfd, deadline)
        if serverPidfd >= 0 && mp_poll_readable(serverPidfd, deadline) == 0 {
            _ = mp_pidfd_signal(serverPidfd, SIGKILL)
        }
        var code: Int32 = 0
        _ = mp_wait_child(serverPID, serverPidfd, 0, &code)
        _ = mp_server_drain(socket, -1, mp_monotonic_ns())  // what it sent before it was killed
        closeDescriptor(socket)
        if serverPidfd >= 0 { closeDescriptor(serverPidfd) }
    }
}
