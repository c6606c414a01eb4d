import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Counts what a pool tells it; every call is checked to come from this process.
final class CountingObserver: PoolObserver {
    struct Counts {
        var submitted = 0, succeeded = 0, failed = 0, replaced = 0, stuck = 0, broken = 0
        var died: [WorkerExit] = []
        var lostWith: [Int32] = []  // the pids named by workerDied failures
        var negativeDurations = 0
        var foreignCalls = 0
    }
    let counts = Guarded(Counts())
    private let pid = getpid()

    private func record(_ body: (inout Counts) -> Void) {
        counts.withLock { c in
            if getpid() != pid { c.foreignCalls += 1 }
            body(&c)
        }
    }
    func taskSubmitted() { record { $0.submitted += 1 } }
    func taskSucceeded(after duration: Duration) {
        record { c in
            c.succeeded += 1
            if duration < .zero { c.negativeDurations += 1 }
        }
    }
    func taskFailed(after duration: Duration, error: any Error) {
        record { c in
            c.failed += 1
            if case .workerDied(let pid, _) = error as? PoolError { c.lostWith.append(pid) }
            if duration < .zero { c.negativeDurations += 1 }
        }
    }
    func workerDied(pid: Int32, exit: WorkerExit) { record { $0.died.append(exit) } }
    func workerReplaced(pid: Int32) { record { $0.replaced += 1 } }
    func workerStuck(pid: Int32) { record { $0.stuck += 1 } }
    func poolBroken(_ error: PoolError) { record { $0.broken += 1 } }
}

@Suite("Pool observers: what a pool tells its observer")
struct PoolObserverTests {
    @Test("the workers a closure pool replaced leave this process's list of children")
    func replacedWorkersLeaveTheChildren() throws {
        let died = Guarded<Set<Int32>>([])
        final class DeathLog: PoolObserver, @unchecked Sendable {
            let died: Guarded<Set<Int32>>
            init(_ died: Guarded<Set<Int32>>) { self.died = died }
            func workerDied(pid: Int32, exit: WorkerExit) { died.withLock { _ = $0.insert(pid) } }
        }
        let pool = try ProcessPool<Int, Int>(processes: 2, maxTasksPerChild: 1, observer: DeathLog(died)) { $0 * 2 }
        for _ in 0..<10 { _ = try pool.map(Array(0..<10), chunkSize: 1) }
        let dead = died.withLock { $0 }
        #expect(dead.count >= 50)
        // Every one of them was reaped (by the pool's watcher); before the fix each stayed in the
        // list until a Process.start() or activeChildren, so a pool's replacements piled up.
        let kept = Children.all().filter { p in
            p.pid.map(dead.contains) == true && p.state.withLock { $0.exitCode != nil }
        }
        #expect(kept.count <= 2, "\(kept.count) replaced workers still listed")
        pool.terminate()
    }

    @Test(
        "a process pool: each task submitted once and settled once; a killed worker's death, its task and its replacement"
    )
    func processPool() throws {
        let observer = CountingObserver()
        let running = try SharedCounters()  // the pid of the worker in the task that gets killed
        let pool = try ProcessPool<Int, Int>(processes: 2, observer: observer) { x in
            if x == -1 { throw Boom() }
            if x == -2 {
                running[0] = Int(getpid())
                Glibc.sleep(30)  // killed before it returns
            }
            return x * x
        }
        defer { pool.terminate() }
        #expect(try pool.map(Array(0..<20), chunkSize: 1) == (0..<20).map { $0 * $0 })
        #expect(throws: (any Error).self) { try pool.apply(-1) }
        let doomed = pool.applyAsync(-2)
        #expect(eventually { running[0] != 0 })
        let victim = try #require(pool.core.workerProcesses.first { $0.pid == Int32(running[0]) })
        try victim.kill()
        #expect(throws: PoolError.self) { try doomed.get(timeout: .seconds(30)) }
        #expect(eventually { observer.counts.withLock { $0.replaced } == 1 })
        #expect(pool.unfinishedTasks == 0)
        let c = observer.counts.withLock { $0 }
        #expect(c.submitted == 22)
        #expect(c.succeeded == 20)
        #expect(c.failed == 2)
        #expect(c.died == [.signal(SIGKILL)])
        #expect(c.lostWith == [Int32(running[0])])
        #expect(c.stuck == 0 && c.broken == 0 && c.negativeDurations == 0 && c.foreignCalls == 0)
    }

    @Test("a thread pool: successes and failures counted with their durations, nothing left unfinished")
    func threadPool() throws {
        let observer = CountingObserver()
        let pool = try ThreadPool(threads: 2, observer: observer)
        let handles = (0..<10).map { i in
            pool.applyAsync { () throws -> Int in
                if i % 5 == 0 { throw Boom() }; return i
            }
        }
        for h in handles { _ = try? h.get(timeout: .seconds(30)) }
        #expect(eventually { observer.counts.withLock { $0.succeeded + $0.failed } == 10 })
        let gate = Event()
        let blockers = (0..<2).map { _ in pool.applyAsync { try gate.wait(timeout: .seconds(30)) } }
        let queued = (0..<3).map { _ in pool.applyAsync { 1 } }
        pool.close()
        try gate.set()
        for h in blockers { _ = try? h.get(timeout: .seconds(30)) }
        for h in queued { #expect(try h.get(timeout: .seconds(30)) == 1) }
        #expect(try pool.join(timeout: .seconds(30)))
        let c = observer.counts.withLock { $0 }
        #expect(c.submitted == 15)
        #expect(c.succeeded == 8 + 2 + 3)
        #expect(c.failed == 2)
        #expect(c.negativeDurations == 0)
        #expect(pool.unfinishedTasks == 0)
    }

    @Test("a pool whose initializer fails is reported broken once")
    func broken() throws {
        let observer = CountingObserver()
        let pool = try ProcessPool<Int, Int>(processes: 2, initializer: { throw Boom() }, observer: observer) { $0 }
        defer { pool.terminate() }
        #expect(throws: PoolError.self) { try pool.apply(1) }
        #expect(eventually { observer.counts.withLock { $0.broken } == 1 })
        #expect(observer.counts.withLock { $0.broken } == 1)
    }
}
