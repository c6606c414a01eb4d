import Multiprocessing
import MultiprocessingTestTargets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// How many pool lifecycles each case runs: 2 000 (the proof), fewer under the sanitizers,
/// which slow every fork and every task by an order of magnitude.
let hazardLifecycles =
    getenv("MP_HAZARD_LIFECYCLES").flatMap { Int(String(cString: $0)) }
    ?? (runningUnderThreadSanitizer || dlsym(nil, "__asan_init") != nil ? 100 : 2_000)

@Suite("Pools beside busy threads")
struct PoolHazardTests {
    @Test(
        "pool lifecycles while 8 threads make new generic metadata and allocate: no hang, no watchdog replacement",
        arguments: PoolHazardJob.Kind.allCases)
    func lifecyclesBesideBusyThreads(kind: PoolHazardJob.Kind) async throws {
        useTestHelper()
        // A program of its own: its busy threads must not reach this runner's other tests.
        let job = PoolHazardJob(kind: kind, lifecycles: hazardLifecycles, report: try SharedMemory(size: 64))
        let program = Process(
            name: "pool-hazard-\(kind)", target: PoolHazard.target, argument: job, startMethod: .spawn)
        try program.start()
        // Joined on a helper thread: a join that blocked this test's thread for its minutes would hold
        // one of the cooperative pool's two threads here, and both cases both, starving every test that
        // awaits (a coroutine test's task group could not start its loops while its forked producer's
        // puts timed out).
        try await toThread {
            if try !program.join(timeout: .seconds(1200)) {  // a hang fails the test, not the suite
                try program.kill()
                try program.join()
            }
        }
        #expect(program.exitCode == 0)
        #expect(job[0] == hazardLifecycles, "lifecycles done")
        #expect(job[1] == 0, "watchdog replacements")
        #expect(job[2] == 0, "lifecycles that failed")
        #expect(job[3] > 0, "the busy threads made new types")
    }
}
