// `MultiprocessingTestHelper exit-scenario <prefix>`: a program that ends normally while a
// process pool still runs, beside a daemon child, a child that made a pool of its own, its
// forkserver and its resource tracker (ProgramExitTests). Whatever the program did not reap
// before it ended must be found, so this process plays the program in a child of its own and is
// that child's subreaper: a process of the program that outlives it becomes a child of this one,
// alive or a zombie, and is reported.
//
// Descriptor 3 carries reports to the test, one "key value" line each, "ready" last.
import CMultiprocessing
import Multiprocessing
import MultiprocessingTestTargets
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

enum ExitScenario {
    /// Runs the watcher or the program and exits if the arguments ask for one; returns otherwise.
    static func runIfRequested() {
        let arguments = CommandLine.arguments
        guard arguments.count == 3 else { return }
        switch arguments[1] {
        case "exit-scenario": watch(prefix: arguments[2])
        case "exit-scenario-program": program(prefix: arguments[2])
        case "exit-scenario-closure-worker":
            watch(prefix: arguments[2], program: "exit-scenario-closure-worker-program")
        case "exit-scenario-closure-worker-program": closureWorkerProgram()
        case "exit-scenario-callback": watch(prefix: arguments[2], program: "exit-scenario-callback-program")
        case "exit-scenario-callback-program": callbackProgram()
        default: return
        }
    }

    /// Becomes a subreaper, runs the program, reaps only it, then reports what is left below.
    static func watch(prefix: String, program name: String = "exit-scenario-program") -> Never {
        let rc = mp_testing_become_subreaper()
        guard rc == 0 else { TrackerScenario.fail("PR_SET_CHILD_SUBREAPER: \(-rc)") }
        let arguments = [CommandLine.arguments[0], name, prefix]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var program: pid_t = 0
        let spawned = posix_spawn(&program, "/proc/self/exe", nil, nil, &argv, environ)
        guard spawned == 0 else { TrackerScenario.fail("posix_spawn \(spawned)") }
        var status: Int32 = 0
        while waitpid(program, &status, 0) < 0 {
            guard errno == EINTR else { TrackerScenario.fail("waitpid \(errno)") }
        }
        TrackerScenario.report("program-exit \(status & 0x7f == 0 ? (status >> 8) & 0xff : -(status & 0x7f))")
        // At this instant the program has ended: what it did not reap is ours now.
        let left = ProcStat.children(of: getpid())
        TrackerScenario.report("left " + left.map { "\($0.pid):\($0.name):\($0.state)" }.joined(separator: ","))
        for process in left {
            kill(process.pid, SIGKILL)
            _ = waitpid(process.pid, nil, 0)
        }
        TrackerScenario.report("ready")
        exit(0)
    }

    /// The program: a named region (a tracker), a forkserver pool with a task done, a daemon
    /// sleeping, and a child that made a pool of its own and returned; then `exit(0)` with the pool
    /// still held, as a program with a pool in a global does.
    static func program(prefix: String) -> Never {
        do {
            let region = try SharedMemory(create: "\(prefix)-region", size: 64)
            let pool = try ProcessPool(processes: 2, worker: TestTargets.twice)
            guard try pool.apply(21) == 42 else { TrackerScenario.fail("twice(21)") }
            let child = Process(name: "pool-then-exit", target: TestTargets.poolThenExit, argument: 2)
            try child.start()
            guard try child.join(timeout: .seconds(60)), child.exitCode == 0 else {
                TrackerScenario.fail("the child that made a pool exited \(child.exitCode ?? 999)")
            }
            let job = ReportJob(memory: try SharedMemory(size: 64))
            let daemon = Process(name: "sleeper", daemon: true, target: TestTargets.sleeper, argument: job)
            try daemon.start()
            // Counted once the daemon runs: a child just forked by the forkserver bears its name
            // ("mp-forkserver") until it names itself, before its target.
            let limit = ContinuousClock.now + .seconds(30)
            while job[4] == 0 {
                guard ContinuousClock.now < limit else { TrackerScenario.fail("the daemon did not start") }
                try Multiprocessing.sleep(for: .milliseconds(1))
            }
            let me = getpid()
            TrackerScenario.report("workers \(pool.workerPIDs.count)")
            TrackerScenario.report("forkservers \(ProcStat.children(of: me, named: "mp-forkserver").count)")
            TrackerScenario.report("trackers \(ProcStat.children(of: me, named: "mp-tracker").count)")
            withExtendedLifetime((region, pool, daemon)) { exit(0) }
        } catch {
            TrackerScenario.fail("\(error)")
        }
    }

    /// A closure pool whose work leaves running what a program may start (a pool of its own, a
    /// child, and so a forkserver and a tracker), closed and joined; then `exit(0)`. A worker ends
    /// as every child of the library does: what it started is ended and reaped before it exits.
    static func closureWorkerProgram() -> Never {
        do {
            let pool = try ProcessPool<Int, Int>(processes: 1) { x in
                let inner = try ProcessPool<Int, Int>(processes: 2) { $0 + 1 }
                keptPools.withLock { $0.append(inner) }  // never deinitialized: terminated at the worker's end
                let child = Process(name: "pool-then-exit", target: TestTargets.poolThenExit, argument: 1)
                try child.start()  // a forkserver child (a forkserver and a tracker), joined at the worker's end
                return try inner.apply(x)
            }
            guard try pool.apply(41) == 42 else { TrackerScenario.fail("inner(41)") }
            pool.close()
            guard try pool.join(timeout: .seconds(60)) else { TrackerScenario.fail("the pool did not join") }
            exit(0)
        } catch {
            TrackerScenario.fail("\(error)")
        }
    }

    /// A closure pool's callback that calls `exit(0)` (on the pool's result thread).
    static func callbackProgram() -> Never {
        do {
            let pool = try ProcessPool<Int, Int>(processes: 2) { $0 * 2 }
            pool.applyAsync(21, callback: { _ in exit(0) })
            _ = try? sleep(for: .seconds(60))
            TrackerScenario.fail("the callback did not run")
        } catch {
            TrackerScenario.fail("\(error)")
        }
    }

    private static let keptPools = Mutex<[ProcessPool<Int, Int>]>([])
}
