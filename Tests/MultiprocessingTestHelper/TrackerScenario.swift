// `MultiprocessingTestHelper tracker-scenario <mode> <prefix>`: a program whose named regions the
// resource tracker must clean up (ResourceTrackerTests). The test cannot play it itself: the tracker
// acts when the program's last process has ended, and the test runner lives on.
//
// Descriptor 3 carries reports to the test, one "key value" line each, "ready" last; descriptor 4
// carries the test's commands. Every name this program creates starts with <prefix>.
import Multiprocessing
import MultiprocessingTestTargets

#if canImport(Glibc)
    import Glibc
#endif

enum TrackerScenario {
    static let reports: Int32 = 3
    static let commands: Int32 = 4

    /// Runs the scenario and exits if the arguments ask for one; returns otherwise.
    static func runIfRequested() {
        let arguments = CommandLine.arguments
        guard arguments.count == 4, arguments[1] == "tracker-scenario" else { return }
        let prefix = arguments[3]
        do {
            switch arguments[2] {
            case "kill": try killed(prefix)
            case "reuse": try reuse(prefix)
            case "garbage": try garbage(prefix)
            case "restart": try restart(prefix)
            case "group-kill": try groupKill(prefix)
            default: fail("unknown scenario \(arguments[2])")
            }
        } catch {
            fail("\(error)")
        }
        exit(0)
    }

    /// The parent and a forked child create a region each, then wait to be SIGKILLed.
    static func killed(_ prefix: String) throws {
        let parent = try SharedMemory(create: "\(prefix)-parent", size: 64)
        let tracker = try awaitTracker()
        let child = Process {
            let mine = try SharedMemory(create: "\(prefix)-child", size: 64)
            withExtendedLifetime(mine) { waitForever() }
        }
        try child.start()
        guard poll({ access("/dev/shm/\(prefix)-child", F_OK) == 0 }) else { fail("the child's region never came") }
        let childPID = child.pid ?? 0
        report("tracker \(tracker)")
        report("child \(childPID)")
        // The child registered with the tracker it inherited; it started none of its own.
        report("trackers-of-child \(ProcStat.children(of: childPID, named: "mp-tracker").count)")
        report("ready")
        withExtendedLifetime(parent) { waitForever() }
    }

    /// Names unlinked by their creator (at deinit, by hand), one unlinked and re-created by a forked
    /// child that leaves it, and one that a forked child unlinks behind the library's back (its
    /// registration goes stale); the program exits normally when told to.
    static func reuse(_ prefix: String) throws {
        _ = try SharedMemory(create: "\(prefix)-normal", size: 64)  // released at once: unlinked
        var byHand: SharedMemory? = try SharedMemory(create: "\(prefix)-by-hand", size: 64)
        try byHand?.unlink()
        let inside = try SharedMemory(create: "\(prefix)-inside", size: 64)
        try inside.unlink()
        let child = Process {
            let again = try SharedMemory(create: "\(prefix)-inside", size: 64)
            withExtendedLifetime(again) { _exit(0) }  // as a forked child ends: no deinitializers
        }
        let stale = Process {
            let doomed = try SharedMemory(create: "\(prefix)-stale", size: 64)
            shm_unlink("/\(prefix)-stale")
            withExtendedLifetime(doomed) { _exit(0) }
        }
        for process in [child, stale] {
            try process.start()
            try process.join()
            guard process.exitCode == 0 else { fail("a child exited \(process.exitCode ?? -1)") }
        }
        report("tracker \(try awaitTracker())")
        report("ready")
        guard readCommand() == "exit" else { fail("no exit command") }
        byHand = nil  // its deinit does not unlink twice
        withExtendedLifetime(inside) {}
    }

    /// Malformed messages between two good registrations; then waits to be SIGKILLed.
    static func garbage(_ prefix: String) throws {
        let before = try SharedMemory(create: "\(prefix)-before", size: 64)
        let tracker = try awaitTracker()
        guard let socket = trackerSocket() else { fail("no tracker socket") }
        guard let beforeFile = identity(of: "/\(prefix)-before") else { fail("no identity") }

        // An object registered by hand in the wire format: the near misses below really are near.
        let rawName = "/\(prefix)-raw"
        let raw = shm_open(rawName, O_CREAT | O_EXCL | O_RDWR, 0o600)
        guard raw >= 0, let rawFile = identity(of: rawName) else { fail("shm_open \(errno)") }
        close(raw)
        let good = message(kind: 1, name: rawName, rawFile)
        guard sendBytes(socket, good) else { fail("send \(errno)") }

        var bad: [[UInt8]] = [[], [0x4d], [UInt8](repeating: 0, count: 23)]
        bad.append([0, 0, 0, 0] + good.dropFirst(4))  // wrong magic
        bad.append(message(kind: 3, name: rawName, rawFile))  // unknown kind
        bad.append(good + [0x41])  // longer than its length field says
        bad.append(Array(good.dropLast()))  // shorter
        for name in ["\(prefix)-x", "/", "/.", "/..", "/a/b", "/a\u{0}b", "/" + String(repeating: "y", count: 251)] {
            bad.append(message(kind: 1, name: name, rawFile))
        }
        bad.append(good + [UInt8](repeating: 0x41, count: 4096))  // past the receive buffer
        // Well-formed, but about another file of that name: must not unregister `before`.
        bad.append(message(kind: 2, name: "/\(prefix)-before", (beforeFile.0, beforeFile.1 &+ 1)))
        for bytes in bad { guard sendBytes(socket, bytes) else { fail("send \(errno)") } }
        // A good unregister of the raw object that carries a descriptor (the tracker's own write end,
        // which would keep it from ever seeing the end): dropped whole.
        guard sendWithDescriptor(socket, message(kind: 2, name: rawName, rawFile), descriptor: socket) else {
            fail("sendmsg \(errno)")
        }

        let after = try SharedMemory(create: "\(prefix)-after", size: 64)
        report("tracker-alive \(ProcStat.hasEnded(tracker) ? 0 : 1)")
        report("tracker \(tracker)")
        report("ready")
        withExtendedLifetime((before, after)) { waitForever() }
    }

    /// The tracker is killed: the next registration reaps it and starts another, which learns the
    /// names registered before.
    static func restart(_ prefix: String) throws {
        let first = try SharedMemory(create: "\(prefix)-first", size: 64)
        let old = try awaitTracker()
        kill(old, SIGKILL)
        // Ended means every thread (a sanitizer adds one): until then its end of the socket is open.
        guard poll({ ProcStat.hasEnded(old) }) else { fail("the tracker survived SIGKILL") }
        let second = try SharedMemory(create: "\(prefix)-second", size: 64)
        let new = try awaitTracker()
        report("old-reaped \(ProcStat(pid: old) == nil ? 1 : 0)")
        report("tracker \(new)")
        report("ready")
        withExtendedLifetime((first, second)) { waitForever() }
    }

    /// SIGKILLs its own process group right after starting the tracker: the tracker must already
    /// be out of it.
    static func groupKill(_ prefix: String) throws {
        let region = try SharedMemory(create: "\(prefix)-region", size: 64)
        withExtendedLifetime(region) { _ = kill(0, SIGKILL) }
    }

    // MARK: - Support

    struct NoTracker: Error {}

    /// This process's running tracker child (it names itself right after the fork).
    static func awaitTracker() throws -> Int32 {
        var found: [Int32] = []
        _ = poll {
            found = ProcStat.children(of: getpid(), named: "mp-tracker")
            return found.count == 1
        }
        guard found.count == 1 else { throw NoTracker() }
        return found[0]
    }

    /// The write end of the tracker's socket: this program's only SOCK_SEQPACKET socket.
    static func trackerSocket() -> Int32? {
        for fd in Int32(0)..<1024 {
            var type: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0 && type == Int32(SOCK_SEQPACKET.rawValue) {
                return fd
            }
        }
        return nil
    }

    static func identity(of name: String) -> (UInt64, UInt64)? {
        let fd = shm_open(name, O_RDONLY, 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// A message in the tracker's wire format (tracker.c): magic "MPT1", kind, name length, device,
    /// inode, then the name without its NUL.
    static func message(kind: UInt16, name: String, _ file: (UInt64, UInt64)) -> [UInt8] {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt32(0x3154_504d).littleEndian) { bytes += $0 }
        withUnsafeBytes(of: kind.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt16(name.utf8.count).littleEndian) { bytes += $0 }
        withUnsafeBytes(of: file.0.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: file.1.littleEndian) { bytes += $0 }
        return bytes + Array(name.utf8)
    }

    static func sendBytes(_ socket: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// sendmsg with one SCM_RIGHTS descriptor.
    static func sendWithDescriptor(_ socket: Int32, _ bytes: [UInt8], descriptor: Int32) -> Bool {
        // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; } then the int, padded.
        var control = [UInt8](repeating: 0, count: 24)
        control.withUnsafeMutableBytes { c in
            c.storeBytes(of: 20, toByteOffset: 0, as: Int.self)  // CMSG_LEN(sizeof(int))
            c.storeBytes(of: SOL_SOCKET, toByteOffset: 8, as: Int32.self)
            c.storeBytes(of: Int32(SCM_RIGHTS), toByteOffset: 12, as: Int32.self)
            c.storeBytes(of: descriptor, toByteOffset: 16, as: Int32.self)
        }
        var payload = bytes
        return payload.withUnsafeMutableBytes { data in
            control.withUnsafeMutableBytes { c in
                var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
                return withUnsafeMutablePointer(to: &vector) { v in
                    var header = msghdr()
                    header.msg_iov = v
                    header.msg_iovlen = 1
                    header.msg_control = c.baseAddress
                    header.msg_controllen = c.count
                    return sendmsg(socket, &header, Int32(MSG_NOSIGNAL)) == data.count
                }
            }
        }
    }

    static func report(_ line: String) {
        var text = line + "\n"
        text.withUTF8 { _ = write(reports, $0.baseAddress, $0.count) }
    }

    static func fail(_ why: String) -> Never {
        report("error \(why)")
        exit(2)
    }

    /// One line from the test, nil at the end of the stream.
    static func readCommand() -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(commands, &byte, 1) == 1 {
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        return nil
    }

    /// Polls every 2 ms for up to 10 s.
    static func poll(_ condition: () -> Bool) -> Bool {
        let end = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < end {
            if condition() { return true }
            usleep(2000)
        }
        return condition()
    }

    static func waitForever() -> Never {
        while true { pause() }
    }
}
