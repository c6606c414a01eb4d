import CMultiprocessing
import MultiprocessingTestTargets
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

private struct WrongAnswer: Error, CustomStringConvertible {
    var description: String
}

/// The bytes of /proc/<pid>/environ: the environment the program `pid` was started with.
private func startingEnvironment(of pid: Int32) -> [[UInt8]] {
    let fd = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { break }
        bytes += buffer[0..<n]
    }
    return bytes.split(separator: 0, omittingEmptySubsequences: true).map(Array.init)
}

/// Runs `path` with exactly `environment` and no other descriptor than 0-2; its exit code (or
/// -signal), after at most `timeout` (then it is killed).
private func runProgram(_ path: String, environment: [String], timeout: Duration) -> Int32? {
    var argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
    var envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
    defer {
        for p in argv { free(p) }
        for p in envp { free(p) }
    }
    var pid: pid_t = 0
    guard posix_spawn(&pid, path, nil, nil, &argv, &envp) == 0 else { return nil }
    let end = ContinuousClock.now + timeout
    var status: Int32 = 0
    while waitpid(pid, &status, WNOHANG) == 0 {
        if ContinuousClock.now > end {
            kill(pid, SIGKILL)
            _ = waitpid(pid, &status, 0)
            return -SIGKILL
        }
        usleep(2000)
    }
    return status & 0x7f == 0 ? (status >> 8) & 0xff : -(status & 0x7f)
}

/// An argument whose encoding takes a while and then fails: a start that fails late.
private struct SlowlyRefusedArgument: Codable, Sendable {
    struct Refused: Error {}
    init() {}
    init(from decoder: any Decoder) throws { throw Refused() }
    func encode(to encoder: any Encoder) throws {
        usleep(400_000)
        throw Refused()
    }
}

private let slowlyRefused = SpawnTarget<SlowlyRefusedArgument>("slowlyRefused") { _ in }

@Suite("Process faults found by review")
struct ProcessFaultTests {
    init() { useTestHelper() }

    // Python raises ("can only join a child process"); here a forked child's own Process object
    // went into the polling wait and never saw itself exit: join(timeout:) returned false at its
    // deadline, and join() without one waited for good.
    @Test("a forked child that joins itself gets joinSelf, not a wait for its own end")
    func forkedChildJoinsItself() throws {
        let code = try runInChild(timeout: .seconds(30)) {
            do {
                let finished = try Process.current.join(timeout: .milliseconds(300))
                throw WrongAnswer(description: "join returned \(finished)")
            } catch ProcessError.joinSelf {
                return
            }
        }
        #expect(code == 0)
    }

    // A Process object copied into another process (a forked sibling) names a child that is not
    // that process's: waitid says ECHILD, which was taken for "reaped elsewhere", so join returned
    // true at once and exitCode read -1 (as if SIGHUP had killed it) while the child still ran.
    @Test("joining a process from a process that did not start it is refused, not reported as exited")
    func joinFromAnotherProcess() throws {
        let release = Event()
        let sibling = Process(name: "sibling") { _ = try release.wait(timeout: .seconds(60)) }
        try sibling.start()
        defer {
            release.set()
            _ = try? sibling.join(timeout: .seconds(60))
        }
        let code = try runInChild(timeout: .seconds(30)) {
            do {
                let finished = try sibling.join(timeout: .milliseconds(300))
                throw WrongAnswer(
                    description: "join returned \(finished), exitCode \(String(describing: sibling.exitCode))")
            } catch ProcessError.system(let errno, _) where errno == .noChildProcess {
                return
            }
        }
        #expect(code == 0)
        #expect(sibling.isAlive)
    }

    // The parent's environment was read as Swift Strings, which repair invalid UTF-8: a variable
    // holding, say, a Latin-1 path reached every spawned child (and the forkserver, and so its
    // children) with U+FFFD in place of its bytes. Python's spawn passes environ as it is.
    @Test("a spawned child gets the parent's environment byte for byte, not repaired as UTF-8")
    func environmentBytesPassUnchanged() throws {
        let code = try runInChild(timeout: .seconds(60)) {
            let bytes: [UInt8] = [0x63, 0x61, 0x66, 0xE9, 0x2D, 0xFF]  // "caf\xe9-\xff": Latin-1, not UTF-8
            setenv("MP_REVIEW_LATIN1", (bytes + [0]).map { CChar(bitPattern: $0) }, 1)
            let job = ReportJob(memory: try SharedMemory(size: 64))
            let child = Process(spawn: TestTargets.sleeper, argument: job)
            try child.start()
            defer {
                try? child.kill()
                _ = try? child.join(timeout: .seconds(30))
            }
            guard eventually(timeout: .seconds(30), { job[4] != 0 }) else { throw WrongAnswer(description: "no start") }
            let expected = Array("MP_REVIEW_LATIN1=".utf8) + bytes
            let found = startingEnvironment(of: Int32(job[4])).filter {
                $0.starts(with: Array("MP_REVIEW_LATIN1=".utf8))
            }
            guard found == [expected] else { throw WrongAnswer(description: "the child got \(found)") }
        }
        #expect(code == 0)
    }

    // A bootstrap variable that is not a descriptor number was ignored without a word, and left
    // set: the program went on as a parent whose every start then failed with "has not called
    // Spawn.bootstrap: call it first in main", though it had. A descriptor that is not a payload
    // is refused (status 1, a message); so is a value that is not a descriptor at all.
    @Test("a bootstrap variable that is not a descriptor number is refused, as a wrong descriptor is")
    func malformedBootstrapVariable() throws {
        let helper = Spawn.executable
        for value in ["junk", "", "3x", "99999999999"] {
            let code = runProgram(helper, environment: ["\(Spawn.environmentKey)=\(value)"], timeout: .seconds(30))
            #expect(code == 1, "value \"\(value)\": exit \(String(describing: code))")
        }
        // A number that is not a payload's descriptor is refused already (the same status).
        #expect(runProgram(helper, environment: ["\(Spawn.environmentKey)=7"], timeout: .seconds(30)) == 1)
    }

    // A program started with stdin closed (a daemon, `prog <&-`) has its first descriptor at 0: here
    // the SharedMemory's memfd. The forkserver refused any request that placed a descriptor below
    // 3, and the client took the refusal for a broken server: it killed it, started another, was
    // refused again and threw forkServerFailed("... Invalid argument"). Spawn keeps such a
    // descriptor under its number (the child's stdin is then that memfd, as the parent's is).
    @Test("a program with stdin closed can hand a descriptor numbered 0 to a forkserver child")
    func descriptorAtZeroToForkserverChild() throws {
        let code = try runInChild(timeout: .seconds(60)) {
            close(0)
            let job = ReportJob(memory: try SharedMemory(size: 64))
            let child = Process(target: TestTargets.report, argument: job)
            try child.start()
            guard try child.join(timeout: .seconds(30)), child.exitCode == 0 else {
                throw WrongAnswer(description: "exit \(String(describing: child.exitCode))")
            }
            guard job[0] == Int(try #require(child.pid)), job[3] == 1 else {
                throw WrongAnswer(description: "the child did not report")
            }
        }
        #expect(code == 0)
    }

    // Python's child knows it is a daemon (current_process().daemon); a forked child here does too
    // (Process.current is the object it was started as), but a spawned or forkserver child's
    // Process.current was made from its payload's name alone, and read false in a daemon.
    @Test("Process.current.daemon in a spawned or forkserver child is the daemon flag it was started with")
    func currentDaemonInRegisteredChild() throws {
        for method in [Process.StartMethod.spawn, .forkserver] {
            for daemon in [true, false] {
                let job = ReportJob(memory: try SharedMemory(size: 64))
                let child = Process(daemon: daemon, target: TestTargets.report, argument: job, startMethod: method)
                try child.start()
                #expect(try child.join(timeout: .seconds(60)))
                #expect(child.exitCode == 0)
                #expect(job[6] == (daemon ? 1 : 2), "\(method), daemon \(daemon): slot 6 is \(job[6])")
            }
        }
    }

    // join on another thread while start() was still preparing the child saw it started with no
    // pid yet, and polled for its exit; when that start failed (and left the process unstarted,
    // as documented) the poll went on to its deadline, and forever without one.
    @Test("a join that overlaps a start that fails ends with notStarted, not at its deadline")
    func joinDuringFailedStart() throws {
        let process = Process(target: slowlyRefused, argument: SlowlyRefusedArgument())
        let outcome = Guarded<String?>(nil)
        let joiner = Multiprocessing.Thread {
            usleep(100_000)  // start() is encoding the argument now
            do {
                let finished = try process.join(timeout: .seconds(10))
                outcome.withLock { $0 = "join returned \(finished)" }
            } catch {
                outcome.withLock { $0 = "\(error)" }
            }
        }
        try joiner.start()
        #expect(throws: ProcessError.self) { try process.start() }
        #expect(try joiner.join(timeout: .seconds(30)))
        #expect(outcome.withLock { $0 } == "\(ProcessError.notStarted)")
    }
}
