import Multiprocessing
import MultiprocessingTestTargets
import Testing

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
}
