import ArgumentParser
import Foundation
import Multiprocessing

@main
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "multiprocessing-bench",
        abstract: "swift-multiprocessing's engine side by side with its peers.")

    static let allSuites = ["lock", "queue", "instructions", "latency", "pool", "start", "sleep", "sync-vs-async"]

    /// Registers the bench's targets before anything else runs: in a forkserver or spawned child of
    /// the bench this runs the requested target and never returns, and the forkserver refuses to
    /// serve a program that has started a thread before it.
    static func main() {
        Spawn.bootstrap(StartTargets.all)
        main(nil)
    }

    @Option(help: "A suite to run (\(Bench.allSuites.joined(separator: ", "))), or all.")
    var suite: String = "all"

    @Flag(help: "A short run (smaller loops, one measured run): a smoke test, not a measurement.")
    var quick = false

    @Option(help: "Measured runs per figure (after a warm-up run).")
    var runs: Int?

    @Option(help: "Write the results as JSON to this file.")
    var json: String = "bench-results/latest.json"

    @Option(help: "Write the Markdown report to this file.")
    var markdown: String = "bench-results/latest.md"

    @Option(help: .hidden) var probe: String?
    @Option(help: .hidden) var probeIterations: Int = 0
    @Option(help: .hidden) var probePort: Int = 0

    mutating func run() throws {
        if let probe {
            if probe.hasPrefix("sva-") {
                try runSyncVsAsyncChild(probe, n: probeIterations, port: probePort)
            } else {
                try runProbe(probe, iterations: probeIterations)
            }
            return
        }
        let suites = suite == "all" ? Bench.allSuites : [suite]
        guard suites.allSatisfy(Bench.allSuites.contains) else {
            throw ValidationError("unknown suite \(suite); choose from \(Bench.allSuites.joined(separator: ", "))")
        }
        let runs = self.runs ?? (quick ? 1 : 5)
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1") }
        let python = PythonPeers()
        var rows: [Row] = []
        for name in suites {
            print("running suite \(name)…")
            switch name {
            case "lock": rows += try LockSuite(quick: quick, runs: runs).run(python: python)
            case "queue": rows += try QueueSuite(quick: quick, runs: runs).run(python: python)
            case "instructions": rows += InstructionSuite().run()
            case "latency": rows += try LatencySuite(quick: quick, runs: runs).run(python: python)
            case "pool": rows += try PoolSuite(quick: quick, runs: runs).run(python: python)
            case "start": rows += try StartSuite(quick: quick, runs: runs).run(python: python)
            case "sleep": rows += try SleepSuite(quick: quick, runs: runs).run(python: python)
            case "sync-vs-async": rows += try SyncVsAsyncSuite(quick: quick, runs: runs).run(python: python)
            default: break
            }
        }
        let targets = Target.annotate(&rows)
        // A quick or one-suite run writes latest.md too: it says so, and `make readme-results` refuses it.
        var limits: [String] = []
        if quick { limits.append("--quick: smaller loops, one run each, a smoke test") }
        if suite != "all" { limits.append("suite \(suite) only") }
        let partial = limits.isEmpty ? nil : "Not a full run (\(limits.joined(separator: "; "))): not for publishing."
        let report = Report(machine: Machine.read(), rows: rows, targets: targets, partial: partial)
        for name in suites { print("\n## \(name)\n\n" + report.table(for: name)) }
        if !targets.isEmpty { print("\n## Targets\n\n" + targets.joined(separator: "\n")) }
        try write(report.markdown(), to: markdown)
        try write(String(decoding: try report.json(), as: UTF8.self), to: json)
        print("\nwrote \(markdown) and \(json)")
        print(python.chart(json: json, into: URL(fileURLWithPath: markdown).deletingLastPathComponent().path))
    }

    func write(_ text: String, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
    }
}
