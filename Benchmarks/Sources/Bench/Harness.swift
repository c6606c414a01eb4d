import Dispatch
import Foundation
import Multiprocessing

/// One figure of one implementation: a metric measured over several runs.
struct Row: Sendable {
    var suite: String
    var caseName: String
    var impl: String
    var metric: String
    var unit: String
    var samples: [Double]
    /// Whether bigger is better (throughput) or smaller (time per operation, latency).
    var higherIsBetter: Bool
    /// A note for the table (a missed target, a limit).
    var note: String = ""

    var sorted: [Double] { samples.sorted() }
    var median: Double {
        let s = sorted
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    var min: Double { sorted.first ?? .nan }
    var max: Double { sorted.last ?? .nan }
}

/// A case measured for several implementations, interleaved: run 1 of every implementation, then
/// run 2 of every implementation... so that a noisy phase of the machine hits all of them alike.
struct Contest {
    struct Entry {
        var impl: String
        var measure: () throws -> Double
    }
    var suite: String
    var caseName: String
    var metric: String
    var unit: String
    var higherIsBetter: Bool
    var entries: [Entry] = []

    mutating func add(_ impl: String, _ measure: @escaping () throws -> Double) {
        entries.append(Entry(impl: impl, measure: measure))
    }

    /// A peer that fails (python3 missing, a Python case that raised, Boost refused its shared
    /// memory) is left out of the later runs and its row says why, in place of a figure: the rest
    /// of the bench goes on. An engine row that fails stops the bench: that is this library's fault.
    func run(runs: Int, warmup: Int = 1) throws -> [Row] {
        var failures = [String?](repeating: nil, count: entries.count)
        var samples = [[Double]](repeating: [], count: entries.count)
        for round in 0..<(warmup + runs) {
            for (i, e) in entries.enumerated() where failures[i] == nil {
                do {
                    let value = try e.measure()
                    if round >= warmup { samples[i].append(value) }
                } catch  where !e.impl.hasPrefix("engine") {
                    failures[i] = "failed: " + String("\(error)".prefix(200))
                }
            }
        }
        return entries.enumerated().map { i, e in
            Row(
                suite: suite, caseName: caseName, impl: e.impl, metric: metric, unit: unit,
                samples: failures[i] == nil ? samples[i] : [], higherIsBetter: higherIsBetter,
                note: failures[i] ?? "")
        }
    }
}

/// Nanoseconds on the monotonic clock.
@inline(__always) func now() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Nanoseconds per iteration of `body(iterations)`.
@inline(__always) func nsPerOp(_ iterations: Int, _ body: (Int) throws -> Void) rethrows -> Double {
    let start = now()
    try body(iterations)
    return Double(now() - start) / Double(iterations)
}

/// Keeps a value alive and opaque to the optimizer.
@inline(never) func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }

/// Facts about the machine for the report.
struct Machine: Codable {
    var cpus: Int
    var cpuModel: String
    var kernel: String
    var swift: String
    var python: String
    var date: String
    /// The commit measured (`git rev-parse HEAD`, with "+dirty" for uncommitted changes); "?" outside git.
    var commit: String

    static func read() -> Machine {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .map { String($0.split(separator: ":").last ?? "").trimmingCharacters(in: .whitespaces) } ?? "?"
        return Machine(
            cpus: cpuCount, cpuModel: model, kernel: shell("uname -r"),
            swift: shell("swift --version 2>/dev/null | head -1"), python: shell("python3 --version 2>&1"),
            date: shell("date -u +%Y-%m-%dT%H:%M:%SZ"),
            commit: Machine.commit())
    }

    static func commit() -> String {
        let head = shell("git rev-parse HEAD 2>/dev/null")
        guard !head.isEmpty else { return "?" }
        return head + (shell("git status --porcelain --untracked-files=no 2>/dev/null").isEmpty ? "" : "+dirty")
    }
}

/// Runs a shell command and returns its standard output, trimmed.
///
/// Through popen (the C library's posix_spawn of /bin/sh), not Foundation.Process: children that
/// Foundation.Process started ran the engine's loopback TCP round trips about 3× slower (measured
/// in the sync-vs-async suite; the Python and Task children were not affected), and a benchmark's
/// child must run as it would from a shell.
func shell(_ command: String) -> String {
    guard let stream = popen(command, "r") else { return "" }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = fread(&chunk, 1, chunk.count, stream)
        if n == 0 { break }
        output += chunk[0..<n]
    }
    pclose(stream)
    return String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

enum BenchError: Error, CustomStringConvertible {
    case peer(String)
    var description: String {
        switch self {
        case .peer(let message): message
        }
    }
}

/// A benchmark whose children crashed measures nothing: refuse it.
func expectClean(_ children: [Multiprocessing.Process]) throws {
    for c in children where c.exitCode != 0 {
        throw BenchError.peer("child \(c.name) ended with exit code \(c.exitCode.map(String.init) ?? "?")")
    }
}

/// Runs `body` as a task on Swift's default executor and blocks this (non-pool) thread until it ends.
func blockingAwait<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        box.value = await body()
        done.signal()
    }
    done.wait()
    return box.value!
}

/// Carries a task's result to the thread that waits for it (written before the semaphore signals).
final class ResultBox<T>: @unchecked Sendable { var value: T? }
