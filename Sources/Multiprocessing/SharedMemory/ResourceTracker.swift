import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The process that unlinks the named shared-memory objects a program leaves behind when its
/// processes die without unlinking them (Python's `multiprocessing.resource_tracker`).
///
/// - A tracker starts on the first registration, as a child of the registering process, and runs
///   only C code (tracker.c). Every process of the program holds the write end of its socket: a
///   forked child inherits it, a spawned child is handed it (``inheritableDescriptor`` in the parent,
///   ``adopt(descriptor:)`` in the child), so one tracker serves the whole program. When no process
///   holds it any more (the program's last process has ended, however it ended) the tracker unlinks
///   every name still registered and exits.
/// - A creator registers its name right after creating it; whoever unlinks a name unregisters it
///   right after unlinking (as Python does): a death in between leaves a stale registration, never a
///   forgotten object. A registration names the file (device, inode) as well: the tracker unlinks a
///   name only if it still is that file, so a name unlinked and re-created since, in this program or
///   another, is left alone whatever order the messages arrive in.
/// - If the tracker dies early (somebody killed it), the next send of a process fails: that process
///   reaps the tracker if it is its parent, starts a new one and registers again the names it
///   created and still owns. Names other processes registered with the dead tracker come back only
///   when those processes next register or unregister something.
/// - Best effort: a tracker that cannot be started (no processes or descriptors left) leaves the
///   regions untracked; creating them still works, and their creators still unlink them.
enum ResourceTracker {
    /// What tells a named object from a later one of the same name.
    struct FileIdentity: Equatable {
        var device: UInt64
        var inode: UInt64
    }

    /// This process's side of the tracker.
    private struct Client {
        /// The process this state belongs to: another pid means a forked child inherited it.
        var owner: Int32 = 0
        /// The write end of the tracker's socket; -1 for none.
        var socket: Int32 = -1
        /// The tracker this process started, 0 if none or inherited (only its parent can reap it).
        var tracker: Int32 = 0
        var trackerPidfd: Int32 = -1
        /// Names this process registered and has not unregistered: sent again to a new tracker.
        var names: [String: FileIdentity] = [:]
    }

    private static let client = Locked(Client())

    /// Registers the object `path` (with its leading "/") that this process has just created and
    /// that `descriptor` refers to, starting the tracker if there is none.
    static func register(path: String, descriptor: Int32) {
        guard let identity = identity(of: descriptor) else { return }
        client.withLock { c in
            adoptIfForked(&c)
            c.names[path] = identity
            if c.socket < 0 && !start(&c) { return }
            send(MP_TRACKER_REGISTER, path, identity, &c)
        }
    }

    /// Unregisters the object `path` that this process has just unlinked and that `descriptor`
    /// refers to. Starts no tracker: with none, nothing was registered here.
    static func unregister(path: String, descriptor: Int32) {
        guard let identity = identity(of: descriptor) else { return }
        client.withLock { c in
            adoptIfForked(&c)
            if c.names[path] == identity { c.names[path] = nil }
            guard c.socket >= 0 else { return }
            send(MP_TRACKER_UNREGISTER, path, identity, &c)
        }
    }

    /// The write end of the tracker's socket (close-on-exec), starting the tracker if there is none,
    /// for the start of a spawned child: keep it open in the child and pass its number to the
    /// child's ``adopt(descriptor:)``. nil if no tracker could be started.
    static var inheritableDescriptor: Int32? {
        client.withLock { c in
            adoptIfForked(&c)
            if c.socket < 0 && !start(&c) { return nil }
            return c.socket
        }
    }

    /// In a spawned child, early in its bootstrap: makes `descriptor`, the tracker's write end that
    /// the parent kept open for it, this process's way to the tracker (and close-on-exec again).
    /// If this process already has a tracker, or `descriptor` is not such a socket, it is closed.
    static func adopt(descriptor: Int32) {
        guard descriptor >= 0 else { return }
        let usable = mp_tracker_adopt(descriptor) == 0
        client.withLock { c in
            adoptIfForked(&c)
            if usable && c.socket < 0 {
                c.socket = descriptor
            } else if descriptor != c.socket {
                closeDescriptor(descriptor)
            }
        }
    }

    /// At this process's end (``ProgramExit``), after its children and forkserver are gone: lets go
    /// of the tracker and, if this process started it, waits up to a second for it to exit (it
    /// does once no process of the program holds it) and reaps it, so it is nobody's zombie.
    static func finishAtExit() {
        client.withLock { c in
            guard c.owner == mp_process_id(), c.socket >= 0 else { return }
            forgetTracker(&c, closing: true)
        }
    }

    /// Touches the state in the parent before a fork: a forked child that registers first must not
    /// run its lazy initializer (another thread of the parent may have been inside it at the fork).
    static func prepareForFork() {
        client.withLock { _ in }
    }

    /// The pid of the tracker this process started, if it has started one (tests).
    static var trackerProcessID: Int32? {
        client.withLock { c in c.owner == mp_process_id() && c.tracker > 0 ? c.tracker : nil }
    }

    private static func identity(of descriptor: Int32) -> FileIdentity? {
        var identity = FileIdentity(device: 0, inode: 0)
        return mp_fd_identity(descriptor, &identity.device, &identity.inode) == 0 ? identity : nil
    }

    /// In a forked child, on first use: the inherited socket reaches the parent's tracker (SEQPACKET
    /// sends are atomic, so sharing it is safe); the parent's names and tracker child are its own.
    private static func adoptIfForked(_ c: inout Client) {
        let pid = mp_process_id()
        guard c.owner != pid else { return }
        if c.trackerPidfd >= 0 { closeDescriptor(c.trackerPidfd) }
        c = Client(owner: pid, socket: c.socket)
    }

    /// Called under the state lock, which the fork copies held: harmless, as the tracker child never
    /// runs Swift (and a forked Swift child re-initialises such a lock; see ``InternalLock``).
    private static func start(_ c: inout Client) -> Bool {
        ProgramExit.startedHere()
        var fd: Int32 = -1
        let pid = mp_tracker_start(&fd)
        guard pid > 0 else { return false }
        c.socket = fd
        c.tracker = pid
        c.trackerPidfd = mp_pidfd_open(pid)  // race-free: it cannot be reaped before we wait for it
        return true
    }

    /// Sends one message. If the tracker has gone, replaces it and registers this process's names
    /// again (a name being registered is among them); a second failure gives up.
    private static func send(_ kind: UInt32, _ path: String, _ identity: FileIdentity, _ c: inout Client) {
        let rc = mp_tracker_send(c.socket, kind, path, identity.device, identity.inode)
        switch -rc {
        case EPIPE, ECONNRESET, ECONNREFUSED, ENOTCONN:
            forgetTracker(&c, closing: true)
        case EBADF, ENOTSOCK:  // closed behind our back: the number is not ours to close any more
            forgetTracker(&c, closing: false)
        default:
            return
        }
        if c.names.isEmpty || !start(&c) { return }  // nothing to protect: the next register starts one
        for (name, known) in c.names {
            _ = mp_tracker_send(c.socket, MP_TRACKER_REGISTER, name, known.device, known.inode)
        }
    }

    /// Drops the socket of a tracker that has gone, and reaps the tracker if this process started it.
    private static func forgetTracker(_ c: inout Client, closing: Bool) {
        if closing { closeDescriptor(c.socket) }
        c.socket = -1
        if c.tracker > 0 {
            // Its end of the socket is closed, so it is exiting: give it a moment to finish.
            if c.trackerPidfd >= 0 {
                _ = mp_poll_readable(c.trackerPidfd, Deadline.after(nanoseconds: 1_000_000_000))
            }
            var code: Int32 = 0
            _ = mp_wait_child(c.tracker, c.trackerPidfd, 1, &code)
        }
        if c.trackerPidfd >= 0 { closeDescriptor(c.trackerPidfd) }
        c.tracker = 0
        c.trackerPidfd = -1
    }
}
