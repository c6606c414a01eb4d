import CMultiprocessing
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
/// runs only C code from then on (forkserver.c), and forks every worker and replacement from its
/// single thread, where no lock can be held.
///
/// The remaining hazard is that one fork: a lock held by another *user* thread at that instant is
/// held in the zygote, and in every worker, for good. Programs with busy threads should give their
/// pools a registered ``PoolWorker`` and the forkserver start method.
final class Zygote: @unchecked Sendable {
    private let connection: ForkServerConnection

    /// Forks the zygote now, on the calling thread. In each child it forks later, `child` runs with
    /// the request's tag, after ``Fork/resetChild()``, and must not return.
    init(child: @escaping (_ tag: UInt64) -> Never) throws(ProcessError) {
        var fds: [Int32] = [-1, -1]
        let rc = mp_socketpair(&fds)
        guard rc == 0 else { throw .system(Errno(rawValue: -rc), function: "socketpair") }
        let (clientEnd, serverEnd) = (fds[0], fds[1])
        let client = mp_process_id()
        Fork.prepare()
        let pid = mp_fork(0)
        if pid == 0 {
            // The zygote: straight into C, which returns only in a new child.
            Glibc.close(clientEnd)
            var request = mp_server_request_t()
            if mp_server_serve(serverEnd, client, 0, &request) != 0 { mp_exit_child(0) }
            Fork.resetChild()
            child(request.tag)
        }
        Glibc.close(serverEnd)
        guard pid > 0 else {
            Glibc.close(clientEnd)
            throw .system(Errno(rawValue: -pid), function: "fork")
        }
        connection = try ForkServerConnection(socket: clientEnd, server: pid, name: "zygote")
    }

    /// The zygote's pid.
    var pid: Int32 { connection.serverPID }

    /// Forks a daemon child that runs `child(tag)`: its pid and pidfd (it is this process's child).
    func fork(tag: UInt64) throws(ProcessError) -> (pid: Int32, pidfd: Int32) {
        try connection.fork(tag: tag, daemon: true, descriptors: [])
    }

    /// Ends the zygote (its children live on) and reaps it.
    func close() { connection.close() }
}
