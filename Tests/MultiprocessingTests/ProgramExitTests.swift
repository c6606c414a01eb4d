import MultiprocessingTestTargets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What a program's normal end does (``ProgramExit``): the helper plays the program under a
/// subreaper of its own (Tests/MultiprocessingTestHelper/ExitScenario.swift), which finds any
/// process of the program that the program did not reap before it ended.
@Suite("Program exit")
struct ProgramExitTests {
    @Test(
        "a program that exits with a pool running, a daemon, a forkserver and a tracker has reaped them all when it ends"
    )
    func nothingOutlivesTheProgram() throws {
        let names = Names(["region"])
        defer { names.removeAll() }
        let watcher = try ScenarioProgram(arguments: ["exit-scenario", names.prefix])
        defer { watcher.stop() }
        let report = try watcher.awaitReady(timeout: .seconds(120))
        #expect(report["workers"] == "2")
        #expect(report["forkservers"] == "1")
        #expect(report["trackers"] == "1")
        #expect(report["program-exit"] == "0")
        // Each entry is pid:name:state; before the fix, the pool's workers, the forkserver and the
        // tracker were here (the last two for a moment after the program ended; the workers always).
        #expect(report["left"] == nil, "left running or unreaped after the program ended: \(report["left"] ?? "")")
        #expect(access("/dev/shm/\(names["region"])", F_OK) != 0, "the named region is unlinked at exit")
        #expect(watcher.awaitExit() == 0)
    }

    // Before its fix the worker _exited at once: its pool's zygote and workers, its forkserver and
    // its tracker were left to the subreaper.
    @Test(
        "a closure pool's worker ends what its work started (a pool, a child, a forkserver, a tracker)",
        .disabled(
            if: runningUnderThreadSanitizer, "closure pools in the helper: TSan's thread is there before the zygote"))
    func closureWorkerEndsWhatItStarted() throws { try expectNothingLeft(by: "exit-scenario-closure-worker") }

    // Before its fix the pool's zygote was left (its result thread, which ends it, was the one that
    // called exit).
    @Test(
        "exit called in a pool's callback ends the pool's zygote too",
        .disabled(
            if: runningUnderThreadSanitizer, "closure pools in the helper: TSan's thread is there before the zygote"))
    func exitFromCallback() throws { try expectNothingLeft(by: "exit-scenario-callback") }

    /// Runs the helper's `scenario` program under its subreaper: it exits 0 and leaves nothing.
    private func expectNothingLeft(by scenario: String) throws {
        let watcher = try ScenarioProgram(arguments: [scenario, "-"])
        defer { watcher.stop() }
        let report = try watcher.awaitReady(timeout: .seconds(120))
        #expect(report["program-exit"] == "0")
        #expect(report["left"] == nil, "left running or unreaped: \(report["left"] ?? "")")
        #expect(watcher.awaitExit() == 0)
    }
}
