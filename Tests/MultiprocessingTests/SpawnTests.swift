import MultiprocessingTestTargets
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Spawn start method")
struct SpawnTests {
    init() { useTestHelper() }

    @Test("4 spawned processes × 100 000 increments under one Lock give exactly 400 000")
    func spawnedIncrements() throws {
        let job = CounterJob(lock: Lock(), memory: try SharedMemory(size: 64), iterations: 100_000)
        let children = (0..<4).map { i in Process(name: "spawned-\(i)", spawn: TestTargets.increment, argument: job) }
        #expect(children[0].startMethod == .spawn)
        for child in children { try child.start() }
        for child in children {
            try child.join()
            #expect(child.exitCode == 0)
        }
        #expect(job.memory.buffer.load(as: Int.self) == 400_000)
    }

    @Test("a spawned child is a full Swift process: async code runs, primitives are shared")
    func asyncChild() throws {
        let job = EventJob(event: Event(), reply: Event())
        let child = Process(spawn: TestTargets.asyncEcho, argument: job)
        try child.start()
        job.event.set()
        #expect(try job.reply.wait(timeout: .seconds(60)))
        try child.join()
        #expect(child.exitCode == 0)
    }

    @Test("an error thrown in a spawned child exits 1")
    func failure() throws {
        let child = Process(spawn: TestTargets.fail, argument: ExitJob(code: 1))
        try child.start()
        try child.join()
        #expect(child.exitCode == 1)
        let ok = Process(spawn: TestTargets.fail, argument: ExitJob(code: 0))
        try ok.start()
        try ok.join()
        #expect(ok.exitCode == 0)
    }

    @Test("owner death across spawned processes")
    func ownerDeath() throws {
        let job = CounterJob(lock: Lock(), memory: try SharedMemory(size: 64), iterations: 0)
        let holder = Process(spawn: TestTargets.holdLock, argument: job)
        try holder.start()
        while job.memory.buffer.load(as: Int.self) == 0 { try sleep(for: .milliseconds(5)) }
        try holder.kill()
        #expect(throws: SyncError.self) { try job.lock.acquire() }
        #expect(job.lock.isLocked)
        try job.lock.release()
        try holder.join()
        #expect(holder.exitCode == -SIGKILL)
    }

    @Test("a spawned child keeps only the descriptors its argument names: an unrelated pipe still ends")
    func onlyNamedDescriptors() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        let (parent, child) = try Pipe.make()
        let echo = Process(spawn: TestTargets.pipeEcho, argument: child)
        try echo.start()
        try parent.send("hi")
        #expect(try parent.receive(String.self, timeout: .seconds(60)) == "hihi")  // the child runs
        writer.close()
        let ended = try reader.poll(timeout: .seconds(5))
        #expect(ended, "the spawned child holds the write end of a pipe it was never given")
        if ended { #expect(throws: ConnectionError.endOfFile) { _ = try reader.receiveBytes() } }
        try parent.send("")
        #expect(try echo.join(timeout: .seconds(60)))
        #expect(echo.exitCode == 0)
    }

    @Test("a spawn that fails to start leaves the process unstarted, so start can be tried again")
    func failedStart() throws {
        let (_, closed) = try Pipe.make()
        closed.close()
        let broken = Process(spawn: TestTargets.pipeEcho, argument: closed)  // a closed end cannot go
        for _ in 0..<2 {
            let error = #expect(throws: ProcessError.self) { try broken.start() }
            guard case .argumentEncoding = error else {
                Issue.record("expected argumentEncoding, got \(String(describing: error))")
                continue
            }
        }
        #expect(throws: ProcessError.notStarted) { try broken.join() }
        #expect(broken.pid == nil)
        #expect(!broken.isAlive)

        let p = Process(spawn: TestTargets.fail, argument: ExitJob(code: 0))
        p.executableForTesting = "/nonexistent/multiprocessing-helper"
        #expect(throws: ProcessError.system(.noSuchFileOrDirectory, function: "posix_spawn")) { try p.start() }
        p.executableForTesting = nil
        try p.start()
        #expect(try p.join(timeout: .seconds(60)))
        #expect(p.exitCode == 0)
    }

    @Test("a spawned or forkserver child sees only the descriptors it was given, not ones without O_CLOEXEC")
    func onlyGivenDescriptors() throws {
        useTestHelper()
        var pipeEnds: [Int32] = [-1, -1]
        #expect(pipe(&pipeEnds) == 0)  // no O_CLOEXEC, as a plain pipe() in a user's program
        let path = "/tmp/mp-descriptors-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let file = open(path, O_CREAT | O_RDWR, 0o600)  // nor here
        unlink(path)
        defer {
            close(pipeEnds[0])
            close(pipeEnds[1])
            close(file)
        }
        let job = ReportJob(memory: try SharedMemory(size: 128))
        for (i, fd) in [pipeEnds[0], pipeEnds[1], file].enumerated() {
            var info = stat()
            #expect(fstat(fd, &info) == 0)
            job[i] = Int(fd)
            job[3 + i] = Int(info.st_ino)
        }
        for method in [Process.StartMethod.spawn, .forkserver] {
            job[9] = 0
            let child = Process(
                name: "descriptors", target: TestTargets.inheritedDescriptors, argument: job, startMethod: method)
            try child.start()
            #expect(try child.join(timeout: .seconds(60)))
            #expect(child.exitCode == 0)
            #expect(job[9] == 1, "\(method): the child ran")
            #expect(job[6] == 0 && job[7] == 0 && job[8] == 0, "\(method): a descriptor it was not given reached it")
        }
    }
}
