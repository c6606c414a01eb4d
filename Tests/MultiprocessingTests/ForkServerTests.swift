import CMultiprocessing
import MultiprocessingTestTargets
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// The pids of the processes whose parent is `pid` (from /proc/<n>/stat).
func childPIDs(of pid: Int32) -> [Int32] {
    guard let dir = opendir("/proc") else { return [] }
    defer { closedir(dir) }
    var found: [Int32] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard let candidate = Int32(name), let stat = procStat(candidate) else { continue }
        if stat.parent == pid { found.append(candidate) }
    }
    return found
}

/// The command name, state and parent pid of `pid`, from /proc/<pid>/stat.
func procStat(_ pid: Int32) -> (name: String, state: Character, parent: Int32)? {
    guard let f = fopen("/proc/\(pid)/stat", "r") else { return nil }
    defer { fclose(f) }
    var buffer = [CChar](repeating: 0, count: 1024)
    guard fgets(&buffer, 1024, f) != nil else { return nil }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")") else { return nil }
    let fields = line[line.index(close, offsetBy: 2)...].split(separator: " ")
    guard fields.count > 2, let state = fields[0].first, let parent = Int32(fields[1]) else { return nil }
    return (String(line[line.index(after: open)..<close]), state, parent)
}

/// Whether `pid` is gone or a zombie.
func processGone(_ pid: Int32) -> Bool {
    guard let stat = procStat(pid) else { return true }
    return stat.state == "Z" || stat.state == "X"
}

// One test at a time: `restart` kills this process's forkserver, and others check that theirs
// was not restarted.
@Suite("Forkserver start method", .serialized)
struct ForkServerTests {
    init() { useTestHelper() }

    @Test("a forkserver child is this process's own child: parent pid, name, async code, exit 0, reaped")
    func ownChild() throws {
        let job = ReportJob(memory: try SharedMemory(size: 64))
        let child = Process(name: "报告", target: TestTargets.report, argument: job)
        #expect(child.startMethod == .forkserver)
        try child.start()
        let pid = try #require(child.pid)
        #expect(try child.join(timeout: .seconds(60)))
        #expect(child.exitCode == 0)
        #expect(job[0] == Int(pid))
        #expect(job[1] == Int(getpid()))  // forked by the server, but the child of this process
        #expect(job[2] == "报告".utf8.count)
        #expect(job[3] == 1)  // Task.sleep ran: the concurrency runtime started in the child
        #expect(!processExists(pid))
        let server = try #require(ForkServer.serverPIDForTesting)
        #expect(procStat(server)?.parent == getpid())
        #expect(procStat(server)?.name == "mp-forkserver")
    }

    @Test("the server binds its symbols at its start (LD_BIND_NOW); its children get the client's environment")
    func bindsNowChildrenDoNot() throws {
        try #require(getenv("LD_BIND_NOW") == nil, "the test's own environment sets LD_BIND_NOW")
        let job = EnvironmentJob(name: "LD_BIND_NOW", report: ReportJob(memory: try SharedMemory(size: 64)))
        let child = Process(target: TestTargets.environment, argument: job)
        try child.start()
        #expect(try child.join(timeout: .seconds(60)))
        #expect(child.exitCode == 0)
        #expect(job.report[1] == Int(try #require(child.pid)))
        #expect(job.report[0] == 2)  // taken out again before the server forked
        // The server was started with it: /proc keeps the environment a program was started with.
        let server = try #require(ForkServer.serverPIDForTesting)
        let fd = open("/proc/\(server)/environ", O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while case let n = read(fd, &chunk, chunk.count), n > 0 { bytes += chunk[..<n] }
        let entries = bytes.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        #expect(entries.contains("LD_BIND_NOW=1"))
    }

    @Test("4 forkserver children × 100 000 increments under one Lock give exactly 400 000")
    func increments() throws {
        let job = CounterJob(lock: Lock(), memory: try SharedMemory(size: 64), iterations: 100_000)
        let children = (0..<4).map { Process(name: "inc-\($0)", target: TestTargets.increment, argument: job) }
        for child in children { try child.start() }
        for child in children {
            #expect(try child.join(timeout: .seconds(60)))
            #expect(child.exitCode == 0)
        }
        #expect(job.memory.buffer.load(as: Int.self) == 400_000)
    }

    @Test("an error thrown in a forkserver child exits 1; SIGKILL reads -9")
    func exitCodes() throws {
        let failing = Process(target: TestTargets.fail, argument: ExitJob(code: 1))
        try failing.start()
        #expect(try failing.join(timeout: .seconds(60)))
        #expect(failing.exitCode == 1)
        let job = ReportJob(memory: try SharedMemory(size: 64))
        let sleeping = Process(target: TestTargets.sleeper, argument: job)
        try sleeping.start()
        try sleeping.kill()
        #expect(try sleeping.join(timeout: .seconds(60)))
        #expect(sleeping.exitCode == -SIGKILL)
    }

    @Test("a forkserver that died is replaced on the next start")
    func restart() throws {
        let first = Process(target: TestTargets.fail, argument: ExitJob(code: 0))
        try first.start()
        #expect(try first.join(timeout: .seconds(60)))
        let server = try #require(ForkServer.serverPIDForTesting)
        _ = kill(server, SIGKILL)
        #expect(eventually(timeout: .seconds(10)) { processGone(server) })
        let second = Process(target: TestTargets.fail, argument: ExitJob(code: 0))
        try second.start()
        #expect(try second.join(timeout: .seconds(60)))
        #expect(second.exitCode == 0)
        #expect(ForkServer.serverPIDForTesting != server)
        #expect(!processExists(server))  // the dead one was reaped
    }

    @Test("when its client dies, the forkserver SIGKILLs the client's daemons, leaves the others, and exits")
    func clientDeath() throws {
        for daemon in [true, false] {
            let job = ReportJob(memory: try SharedMemory(size: 64), daemon: daemon)
            let client = Process(target: TestTargets.sleeperParent, argument: job)
            try client.start()
            #expect(eventually { job[5] != 0 && job[4] != 0 })
            let grandchild = Int32(job[4])
            let servers = childPIDs(of: Int32(job[5])).filter { procStat($0)?.name == "mp-forkserver" }
            #expect(servers.count == 1)
            #expect(procStat(grandchild)?.parent == Int32(job[5]))
            try client.kill()
            #expect(try client.join(timeout: .seconds(60)))
            for server in servers { #expect(eventually(timeout: .seconds(10)) { processGone(server) }) }
            if daemon {
                #expect(
                    eventually(timeout: .seconds(10)) { processGone(grandchild) },
                    "\(grandchild) \(String(describing: procStat(grandchild)))")
            } else {
                usleep(100_000)
                #expect(!processGone(grandchild))
                _ = kill(grandchild, SIGKILL)
            }
        }
    }

    @Test("only its client can ask: the server's sockets have no name, a malformed request is refused")
    func onlyItsClient() throws {
        let warm = Process(target: TestTargets.fail, argument: ExitJob(code: 0))
        try warm.start()
        #expect(try warm.join(timeout: .seconds(60)))
        let server = try #require(ForkServer.serverPIDForTesting)
        // Every unix socket the server holds is unnamed (a socketpair): nothing to connect to.
        let inodes = socketInodes(of: server)
        #expect(!inodes.isEmpty)
        let named = namedUnixSocketInodes()
        #expect(inodes.isDisjoint(with: named))
        // A request of a wrong version, or one that lies about its descriptors, forks nothing.
        #expect(ForkServer.sendMalformedRequestForTesting(version: 99) == -EINVAL)
        #expect(
            ForkServer.sendMalformedRequestForTesting(version: UInt32(MP_SERVER_VERSION), claimedDescriptors: 3)
                == -EINVAL)
        let after = Process(target: TestTargets.fail, argument: ExitJob(code: 0))  // it still serves
        try after.start()
        #expect(try after.join(timeout: .seconds(60)))
        #expect(after.exitCode == 0)
        #expect(ForkServer.serverPIDForTesting == server)
    }

    @Test("a forkserver child holds only the descriptors its argument names")
    func onlyNamedDescriptors() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        let (parent, child) = try Pipe.make()
        let echo = Process(target: TestTargets.pipeEcho, argument: child)
        try echo.start()
        try parent.send("hi")
        #expect(try parent.receive(String.self, timeout: .seconds(60)) == "hihi")
        writer.close()
        let ended = try reader.poll(timeout: .seconds(5))
        #expect(ended, "the forkserver child holds the write end of a pipe it was never given")
        try parent.send("")
        #expect(try echo.join(timeout: .seconds(60)))
        #expect(echo.exitCode == 0)
    }

    @Test("a program that does not bootstrap cannot be a forkserver: a typed error, nothing left running")
    func notBootstrapped() throws {
        let before = Set(childPIDs(of: getpid()))
        let error = #expect(throws: ProcessError.self) { try ForkServer.launchForTesting(executable: "/bin/true") }
        guard case .forkServerFailed = error else {
            Issue.record("expected forkServerFailed, got \(String(describing: error))")
            return
        }
        let left = Set(childPIDs(of: getpid())).subtracting(before).filter { procStat($0)?.name == "true" }
        #expect(left.isEmpty)
    }

    @Test(
        "a started child registers its named regions with this program's tracker, not one of its own",
        arguments: [Process.StartMethod.forkserver, .spawn])
    func childUsesTheProgramsTracker(startMethod: Process.StartMethod) throws {
        let name = "mp-test-child-tracker-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let report = try SharedMemory(create: name + "-report", size: 64)
        let child = Process(
            target: TestTargets.createRegion, argument: PoolJob(text: name, times: 0), startMethod: startMethod)
        try child.start()
        let pid = try #require(child.pid)
        #expect(eventually { report.buffer.load(fromByteOffset: 32, as: Int.self) == Int(pid) })
        #expect(childPIDs(of: pid).allSatisfy { procStat($0)?.name != "mp-tracker" })
        try child.kill()
        #expect(try child.join(timeout: .seconds(60)))
        #expect(access("/dev/shm/" + name, F_OK) == 0)  // the program lives on: not yet cleaned
        try SharedMemory(attach: name).unlink()
    }

    @Test("a registered target cannot be forked: its body is async")
    func forkRefused() throws {
        let p = Process(target: TestTargets.fail, argument: ExitJob(code: 0), startMethod: .fork)
        #expect(throws: ProcessError.unsupportedStartMethod(.fork, target: "fail")) { try p.start() }
    }
}

/// The inodes of the sockets `pid` holds open.
func socketInodes(of pid: Int32) -> Set<UInt64> {
    guard let dir = opendir("/proc/\(pid)/fd") else { return [] }
    defer { closedir(dir) }
    var inodes: Set<UInt64> = []
    var buffer = [CChar](repeating: 0, count: 256)
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let n = readlink("/proc/\(pid)/fd/\(name)", &buffer, buffer.count - 1)
        guard n > 0 else { continue }
        let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if target.hasPrefix("socket:["), let inode = UInt64(target.dropFirst(8).dropLast()) { inodes.insert(inode) }
    }
    return inodes
}

/// The inodes of every unix socket on the machine that has a name (a path or an abstract name).
func namedUnixSocketInodes() -> Set<UInt64> {
    guard let f = fopen("/proc/net/unix", "r") else { return [] }
    defer { fclose(f) }
    var inodes: Set<UInt64> = []
    var buffer = [CChar](repeating: 0, count: 1024)
    _ = fgets(&buffer, 1024, f)  // the header
    while fgets(&buffer, 1024, f) != nil {
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if fields.count >= 8, let inode = UInt64(fields[6]) { inodes.insert(inode) }
    }
    return inodes
}
