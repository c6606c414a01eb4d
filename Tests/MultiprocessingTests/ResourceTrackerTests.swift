import CMultiprocessing
import MultiprocessingTestTargets
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The tracker acts when a program's last process has ended, so most of these tests run a program of
/// their own: the helper executable in a tracker scenario (Tests/MultiprocessingTestHelper/
/// TrackerScenario.swift), started with posix_spawn in a process group of its own. Every name is
/// unique to its test (the suite runs beside others that use /dev/shm too).
@Suite("Resource tracker")
struct ResourceTrackerTests {
    /// How long the tracker may take to clean up once the program is gone.
    static let cleanupDeadline: Duration = .seconds(10)

    @Test("a SIGKILLed program and its SIGKILLed child leave nothing in /dev/shm; the tracker then exits")
    func killedProgram() throws {
        let names = Names(["parent", "child"])
        defer { names.removeAll() }
        let program = try ScenarioProgram("kill", prefix: names.prefix)
        defer { program.stop() }
        let report = try program.awaitReady()
        let tracker = try #require(report["tracker"].flatMap { Int32($0) })
        let child = try #require(report["child"].flatMap { Int32($0) })
        #expect(report["trackers-of-child"] == "0", "the forked child shares its parent's tracker")
        #expect(names.all { access("/dev/shm/\($0)", F_OK) == 0 })

        let stat = try #require(ProcStat(pid: tracker))
        #expect(stat.name == "mp-tracker")
        #expect(stat.processGroup == tracker, "the tracker leaves the program's process group")
        for signal in [SIGINT, SIGTERM, SIGHUP] { kill(tracker, signal) }
        usleep(50_000)
        #expect(!ProcStat.hasEnded(tracker), "SIGINT, SIGTERM and SIGHUP are ignored")

        kill(child, SIGKILL)
        kill(-program.pid, SIGKILL)  // the program's whole group: the tracker is not in it
        #expect(program.awaitExit() == -SIGKILL)
        #expect(eventually(timeout: Self.cleanupDeadline) { names.all { access("/dev/shm/\($0)", F_OK) != 0 } })
        #expect(eventually(timeout: Self.cleanupDeadline) { ProcStat.hasEnded(tracker) }, "no tracker is left running")
    }

    @Test("a program that kills its own process group at once does not take the new tracker with it")
    func groupKilledAtOnce() throws {
        let names = Names(["region"])
        defer { names.removeAll() }
        let program = try ScenarioProgram("group-kill", prefix: names.prefix)
        defer { program.stop() }
        #expect(program.awaitExit() == -SIGKILL)
        #expect(eventually(timeout: Self.cleanupDeadline) { names.all { access("/dev/shm/\($0)", F_OK) != 0 } })
    }

    @Test("names unlinked by their creators and re-created elsewhere are left alone; a child's leftover is removed")
    func unlinkedAndReused() throws {
        let names = Names(["normal", "by-hand", "inside", "stale"])
        defer { names.removeAll() }
        let program = try ScenarioProgram("reuse", prefix: names.prefix)
        defer { program.stop() }
        let report = try program.awaitReady()
        let tracker = try #require(report["tracker"].flatMap { Int32($0) })
        let normal = names["normal"], byHand = names["by-hand"], inside = names["inside"], stale = names["stale"]
        #expect(access("/dev/shm/\(normal)", F_OK) != 0)
        #expect(access("/dev/shm/\(byHand)", F_OK) != 0)
        #expect(access("/dev/shm/\(stale)", F_OK) != 0)
        #expect(access("/dev/shm/\(inside)", F_OK) == 0, "the forked child's copy of the name is there")

        // Another program (this one) takes the unlinked names, without a tracker of its own.
        for name in [normal, byHand, stale] {
            let fd = shm_open("/" + name, O_CREAT | O_EXCL | O_RDWR, 0o600)
            #expect(fd >= 0)
            close(fd)
        }
        program.send("exit")
        #expect(program.awaitExit() == 0, "unlinking by hand, then at deinit, raises no error")
        #expect(eventually(timeout: Self.cleanupDeadline) { ProcStat.hasEnded(tracker) })
        #expect(access("/dev/shm/\(normal)", F_OK) == 0, "unregistered at deinit: another's object is left alone")
        #expect(access("/dev/shm/\(byHand)", F_OK) == 0, "unregistered by unlink(): another's object is left alone")
        #expect(access("/dev/shm/\(stale)", F_OK) == 0, "still registered, but another file now: left alone")
        #expect(access("/dev/shm/\(inside)", F_OK) != 0, "the re-created name was registered by the child")
    }

    @Test("malformed messages are dropped and the tracker goes on")
    func garbage() throws {
        let names = Names(["before", "raw", "after"])
        defer { names.removeAll() }
        let program = try ScenarioProgram("garbage", prefix: names.prefix)
        defer { program.stop() }
        let report = try program.awaitReady()
        let tracker = try #require(report["tracker"].flatMap { Int32($0) })
        #expect(report["tracker-alive"] == "1")
        #expect(names.all { access("/dev/shm/\($0)", F_OK) == 0 })

        kill(-program.pid, SIGKILL)
        #expect(program.awaitExit() == -SIGKILL)
        // "before": a wrong-identity unregister left it registered; "raw": registered by hand, and an
        // unregister that carried a descriptor was dropped; "after": registered after the garbage.
        #expect(
            eventually(timeout: Self.cleanupDeadline) { names.all { access("/dev/shm/\($0)", F_OK) != 0 } },
            "left: \(names.suffixes.filter { access("/dev/shm/\(names[$0])", F_OK) == 0 })")
        #expect(
            eventually(timeout: Self.cleanupDeadline) { ProcStat.hasEnded(tracker) },
            "a descriptor sent along would have kept the tracker's write end open")
    }

    @Test("a killed tracker is reaped and replaced, and the new one learns the names registered before")
    func restartedTracker() throws {
        let names = Names(["first", "second"])
        defer { names.removeAll() }
        let program = try ScenarioProgram("restart", prefix: names.prefix)
        defer { program.stop() }
        let report = try program.awaitReady()
        let tracker = try #require(report["tracker"].flatMap { Int32($0) })
        #expect(report["old-reaped"] == "1", "the dead tracker is no zombie of its parent")

        kill(-program.pid, SIGKILL)
        #expect(program.awaitExit() == -SIGKILL)
        #expect(eventually(timeout: Self.cleanupDeadline) { names.all { access("/dev/shm/\($0)", F_OK) != 0 } })
        #expect(eventually(timeout: Self.cleanupDeadline) { ProcStat.hasEnded(tracker) })
    }

    @Test("the descriptor for spawned children is the tracker's socket, close-on-exec")
    func inheritableDescriptor() throws {
        let fd = try #require(ResourceTracker.inheritableDescriptor)
        #expect(ResourceTracker.inheritableDescriptor == fd)
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        #expect(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0)
        #expect(type == Int32(SOCK_SEQPACKET.rawValue))
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
        let tracker = try #require(ResourceTracker.trackerProcessID)
        #expect(eventually(timeout: .seconds(10)) { ProcStat(pid: tracker)?.name == "mp-tracker" })
        #expect(ProcStat(pid: tracker)?.parentPID == getpid())
    }

    @Test("adopt closes a descriptor that is not a tracker socket, or one this process does not need")
    func adoptGuards() throws {
        _ = ResourceTracker.inheritableDescriptor  // the child inherits a tracker
        // In a forked child: one thread, so no other test can reuse a closed descriptor's number.
        let code = try runInChild(timeout: .seconds(60)) {
            let current = ResourceTracker.inheritableDescriptor
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { mp_exit_child(2) }
            ResourceTracker.adopt(descriptor: fds[0])
            guard fcntl(fds[0], F_GETFD) < 0 else { mp_exit_child(3) }  // a pipe: closed
            let copy = dup(current ?? -1)
            ResourceTracker.adopt(descriptor: copy)
            guard copy < 0 || fcntl(copy, F_GETFD) < 0 else { mp_exit_child(4) }  // one is there: closed
            guard ResourceTracker.inheritableDescriptor == current else { mp_exit_child(5) }
        }
        #expect(code == 0)
    }
}

/// Unique names for one test, removed at its end whatever happened.
struct Names {
    let prefix: String
    let suffixes: [String]

    init(_ suffixes: [String]) {
        prefix = "mp-tracker-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        self.suffixes = suffixes
    }

    subscript(suffix: String) -> String { "\(prefix)-\(suffix)" }

    func all(_ condition: (String) -> Bool) -> Bool { suffixes.allSatisfy { condition(self[$0]) } }

    func removeAll() {
        for suffix in suffixes { shm_unlink("/" + self[suffix]) }
    }
}

/// The helper executable playing one tracker scenario, in a process group of its own: it reports on
/// descriptor 3 and takes commands on descriptor 4.
final class ScenarioProgram {
    let pid: pid_t
    private let reports: Int32
    private let commands: Int32
    private var exitCode: Int32?

    struct Failed: Error, CustomStringConvertible {
        var description: String
    }

    /// The helper in the tracker scenario `mode`.
    convenience init(_ mode: String, prefix: String) throws {
        try self.init(arguments: ["tracker-scenario", mode, prefix])
    }

    /// The helper run with `arguments`.
    init(arguments helperArguments: [String]) throws {
        var reportPipe: [Int32] = [0, 0]
        var commandPipe: [Int32] = [0, 0]
        guard mp_pipe(&reportPipe) == 0, mp_pipe(&commandPipe) == 0 else { throw Failed(description: "pipe2") }
        defer {
            close(reportPipe[1])
            close(commandPipe[0])
        }
        reports = reportPipe[0]
        commands = commandPipe[1]

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // Moved above 4 first, so that neither dup2 onto 3 or 4 overwrites the other's source.
        let reportEnd = fcntl(reportPipe[1], F_DUPFD_CLOEXEC, 10)
        let commandEnd = fcntl(commandPipe[0], F_DUPFD_CLOEXEC, 10)
        defer {
            close(reportEnd)
            close(commandEnd)
        }
        posix_spawn_file_actions_adddup2(&actions, reportEnd, 3)
        posix_spawn_file_actions_adddup2(&actions, commandEnd, 4)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGCHLD, SIGINT, SIGTERM, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(
            &attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let path = Self.helperPath()
        var child: pid_t = 0
        let arguments = [path] + helperArguments
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let rc = posix_spawn(&child, path, &actions, &attributes, &argv, environ)
        guard rc == 0 else {
            close(reports)
            close(commands)
            throw Failed(description: "posix_spawn \(path): \(rc)")
        }
        pid = child
    }

    /// The helper sits next to the test bundle (see `useTestHelper()`).
    static func helperPath() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        precondition(n > 0)
        var dir = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        while let last = dir.last, last != "/" { dir.removeLast() }
        return dir + "MultiprocessingTestHelper"
    }

    /// The reports up to "ready", as key -> value. Throws on "error ...", the end of the stream, or
    /// when `timeout` passes first.
    func awaitReady(timeout: Duration = .seconds(60)) throws -> [String: String] {
        let end = ContinuousClock.now + timeout
        var text: [UInt8] = []
        var report: [String: String] = [:]
        while true {
            while let newline = text.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: text[..<newline], as: UTF8.self)
                text.removeSubrange(...newline)
                let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                if parts.first == "ready" { return report }
                if parts.first == "error" { throw Failed(description: "the scenario failed: \(line)") }
                if parts.count == 2 { report[parts[0]] = parts[1] }
            }
            let left = end - ContinuousClock.now
            guard left > .zero else { throw Failed(description: "no \"ready\" within \(timeout)") }
            var p = pollfd(fd: reports, events: Int16(POLLIN), revents: 0)
            let ms = Int32(min(left.components.seconds * 1000 + 1, 1000))
            guard poll(&p, 1, ms) >= 0 || errno == EINTR else { throw Failed(description: "poll: \(errno)") }
            if p.revents == 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 512)
            let n = chunk.withUnsafeMutableBytes { read(reports, $0.baseAddress, $0.count) }
            guard n > 0 else { throw Failed(description: "the scenario ended before \"ready\"") }
            text += chunk[0..<n]
        }
    }

    func send(_ command: String) {
        var line = command + "\n"
        line.withUTF8 { _ = write(commands, $0.baseAddress, $0.count) }
    }

    /// Reaps the program: its exit status, or -signal; nil if it still runs after `timeout`.
    func awaitExit(timeout: Duration = .seconds(30)) -> Int32? {
        let end = ContinuousClock.now + timeout
        while exitCode == nil {
            var status: Int32 = 0
            let rc = waitpid(pid, &status, WNOHANG)
            if rc == pid {
                let signal = status & 0x7f
                exitCode = signal == 0 ? (status >> 8) & 0xff : -signal
            } else if rc < 0 && errno != EINTR {
                return nil
            } else if ContinuousClock.now >= end {
                return nil
            } else {
                usleep(2000)
            }
        }
        return exitCode
    }

    /// Kills what is left of the program (a test that failed midway) and closes the pipes.
    func stop() {
        if exitCode == nil {
            kill(-pid, SIGKILL)
            _ = awaitExit()
        }
        close(reports)
        close(commands)
    }
}
