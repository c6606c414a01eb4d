// The spawned children of the test suite. The suite runs under a test runner that cannot re-exec
// itself as a child, so it points `Spawn.executable` here; this program registers the same targets.
import Multiprocessing
import MultiprocessingTestTargets

#if canImport(Glibc)
    import Glibc
#endif

TrackerScenario.runIfRequested()  // ResourceTrackerTests: a program of its own
Spawn.bootstrap(TestTargets.all)
ExitScenario.runIfRequested()  // ProgramExitTests: a program of its own, whose children are forkserver ones
print("MultiprocessingTestHelper: run by the test suite as a spawned child")
