import CBenchPeers
import Foundation
import Multiprocessing

/// The sync-vs-async suite: N concurrent tasks that each sleep 10 ms, or each do one 64-byte round
/// trip to a loopback echo server, as threads, as `EventLoop` coroutines, as tasks on Swift's
/// default executor, as Python asyncio coroutines and as Python threads. Wall time, peak RSS, and
/// the tasks' memory: the peak RSS less the process's before the tasks started.
/// Each measurement runs in a fresh child process so that its peak RSS is its own; the echo server
/// (C, epoll, one thread) runs in another process, so only the clients are measured.
struct SyncVsAsyncSuite {
    let quick: Bool
    let runs: Int

    var sizes: [Int] { quick ? [100, 1000] : [100, 1000, 10_000] }

    /// Samples per implementation at `n` tasks. A run of 100 round trips lasts about 5 ms, and its
    /// time swings by a third between runs (the loopback's connects, where the two vCPUs are): 15
    /// samples, as the contended rows take, keep its median steady. The larger sizes keep `runs`.
    func samples(_ n: Int) -> Int { quick || n > 100 ? runs : max(runs, 15) }

    /// The Swift implementations, by the probe name a child runs them under.
    static let swiftImpls: [(probe: String, label: String)] = [
        ("eventloop", "engine EventLoop coroutines"),
        ("threads", "Swift threads (one per task)"),
        ("tasks", "Swift default executor (Tasks)"),
    ]

    func run(python: PythonPeers) throws -> [Row] {
        var port: Int32 = 0
        let listener = bench_echo_listen(4096, &port)
        guard listener >= 0 else { throw BenchError.peer("echo server: errno \(-listener)") }
        let server = Multiprocessing.Process(name: "echo-server") { bench_echo_serve(listener) }
        try server.start()
        close(listener)
        defer {
            try? server.kill()
            _ = try? server.join(timeout: .seconds(5))
        }
        var rows: [Row] = []
        for workload in ["sleep", "tcp"] {
            for n in sizes { rows += try measure(workload, n, port: Int(port), python: python) }
        }
        return rows
    }

    private func measure(_ workload: String, _ n: Int, port: Int, python: PythonPeers) throws -> [Row] {
        var cases: [(String, () throws -> (Double, Double, Double))] = []
        for impl in Self.swiftImpls {
            cases.append((impl.label, { try child("sva-\(impl.probe)-\(workload)", n, port) }))
        }
        if python.available {
            cases.append(("Python asyncio", { try pythonChild(python, "sva-asyncio", workload, n, port) }))
            cases.append(("Python threads", { try pythonChild(python, "sva-threads", workload, n, port) }))
        }
        var wall: [String: [Double]] = [:]
        var rss: [String: [Double]] = [:]
        var taskMemory: [String: [Double]] = [:]
        // A peer that fails is left out of later runs and its rows say why, as in a Contest; the
        // engine's failure stops the bench.
        var failures: [String: String] = [:]
        for round in 0...samples(n) {  // round 0: the warm-up
            for (name, m) in cases where failures[name] == nil {
                do {
                    let (ns, kib, baseline) = try m()
                    guard round > 0 else { continue }
                    wall[name, default: []].append(ns / 1e6)
                    rss[name, default: []].append(kib / 1024)
                    taskMemory[name, default: []].append(Swift.max(0, kib - baseline) / 1024)
                } catch  where !name.hasPrefix("engine") {
                    failures[name] = "failed: " + String("\(error)".prefix(200))
                }
            }
        }
        let what = workload == "sleep" ? "sleep 10 ms" : "TCP round trip"
        var rows: [Row] = []
        for (metric, unit, table) in [
            ("wall time", "ms", wall), ("peak RSS", "MiB", rss), ("task memory", "MiB", taskMemory),
        ] {
            for (name, _) in cases {
                rows.append(
                    Row(
                        suite: "sync-vs-async", caseName: "\(n) × \(what), \(metric)", impl: name, metric: metric,
                        unit: unit, samples: failures[name] == nil ? table[name] ?? [] : [], higherIsBetter: false,
                        note: failures[name] ?? ""))
            }
        }
        return rows
    }

    /// Runs this program as a child measuring `probe`: (wall ns, peak RSS KiB).
    private func child(_ probe: String, _ n: Int, _ port: Int) throws -> (Double, Double, Double) {
        let out = shell("'\(benchExecutable())' --probe \(probe) --probe-iterations \(n) --probe-port \(port) 2>&1")
        return try parseFigures(out, probe)
    }

    private func pythonChild(_ python: PythonPeers, _ name: String, _ workload: String, _ n: Int, _ port: Int)
        throws -> (Double, Double, Double)
    {
        try parseFigures(try python.measureText(name, [workload, String(n), String(port)]), name)
    }

    private func parseFigures(_ text: String, _ what: String) throws -> (Double, Double, Double) {
        let parts = (text.split(separator: "\n").last ?? "").split(separator: " ").compactMap { Double($0) }
        guard parts.count == 3 else { throw BenchError.peer("\(what) printed: \(text.suffix(300))") }
        return (parts[0], parts[1], parts[2])
    }
}

/// This program's path, for running it again as a child.
func benchExecutable() -> String {
    CommandLine.arguments[0].hasPrefix("/")
        ? CommandLine.arguments[0] : FileManager.default.currentDirectoryPath + "/" + CommandLine.arguments[0]
}

/// The peak resident set of this process so far, in KiB.
func peakRSSKiB() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss)
}
