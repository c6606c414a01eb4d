import CBenchPeers
import Dispatch
import Foundation
import Multiprocessing

/// The sleep suite: how late a 1 ms and a 10 ms sleep wake up (overshoot past the requested time,
/// p50 and p99 of each run's samples), for the engine's io_uring sleep (plain, and precise: tolerance
/// `.zero`) against a raw C io_uring timeout (the floor of a plain timer), clock_nanosleep, Swift's
/// `Task.sleep` and Python's `asyncio.sleep`.
struct SleepSuite {
    let quick: Bool
    let runs: Int

    /// The row of `sleep(for:tolerance: .zero)`, which the targets name.
    static let precise = "engine precise sleep (tolerance .zero)"

    func samples(_ durationNs: Int64) -> Int {
        durationNs <= 1_000_000 ? (quick ? 100 : 400) : (quick ? 15 : 60)
    }

    func run(python: PythonPeers) throws -> [Row] {
        var rows: [Row] = []
        for ms in [1, 10] { rows += try overshoot(Int64(ms) * 1_000_000, python: python) }
        return rows
    }

    private func overshoot(_ ns: Int64, python: PythonPeers) throws -> [Row] {
        let n = samples(ns)
        var cases: [(String, () throws -> [Int64])] = []
        cases.append(("engine sleep (EventLoop, io_uring)", { try engineSleep(ns, n, tolerance: nil) }))
        cases.append((Self.precise, { try engineSleep(ns, n, tolerance: .zero) }))
        cases.append(("raw C io_uring timeout", { try rawUring(ns, n) }))
        cases.append(("clock_nanosleep", { nanosleep(ns, n) }))
        cases.append(("Task.sleep", { taskSleep(ns, n) }))
        var p50: [String: [Double]] = [:]
        var p99: [String: [Double]] = [:]
        // A peer that failed: its rows say so in place of a figure, as a Contest's do.
        var failures: [String: String] = [:]
        let asyncio = "Python asyncio.sleep"
        for (_, measure) in cases { _ = try measure() }  // warm-up
        for _ in 0..<runs {
            for (name, measure) in cases {
                let s = try measure().sorted()
                p50[name, default: []].append(Double(s[s.count / 2]) / 1000)
                p99[name, default: []].append(Double(s[Swift.min(s.count - 1, s.count * 99 / 100)]) / 1000)
            }
            if python.available && failures[asyncio] == nil {
                let text = try python.measureText("asyncio-sleep", [String(ns), String(n)])
                let parts = text.split(separator: " ").compactMap { Double($0) }
                if parts.count == 2 {
                    p50[asyncio, default: []].append(parts[0] / 1000)
                    p99[asyncio, default: []].append(parts[1] / 1000)
                } else {
                    failures[asyncio] = "failed: python peer asyncio-sleep printed: \(text.prefix(200))"
                }
            }
        }
        let order = cases.map(\.0) + [asyncio]
        var rows: [Row] = []
        for (metric, table) in [("p50", p50), ("p99", p99)] {
            for name in order {
                guard let samples = table[name] ?? failures[name].map({ _ in [] }) else { continue }
                rows.append(
                    Row(
                        suite: "sleep", caseName: "\(ns / 1_000_000) ms sleep, overshoot \(metric)", impl: name,
                        metric: "overshoot \(metric)", unit: "µs", samples: failures[name] == nil ? samples : [],
                        higherIsBetter: false, note: failures[name] ?? ""))
            }
        }
        return rows
    }

    private func rawUring(_ ns: Int64, _ n: Int) throws -> [Int64] {
        var out = [Int64](repeating: 0, count: n)
        let rc = bench_uring_timeout_overshoot(ns, Int64(n), &out)
        guard rc == 0 else { throw BenchError.peer("raw io_uring timeout failed: errno \(-rc)") }
        return out
    }

    private func nanosleep(_ ns: Int64, _ n: Int) -> [Int64] {
        var out = [Int64](repeating: 0, count: n)
        bench_nanosleep_overshoot(ns, Int64(n), &out)
        return out
    }

    private func taskSleep(_ ns: Int64, _ n: Int) -> [Int64] {
        blockingAwait {
            var out: [Int64] = []
            out.reserveCapacity(n)
            for _ in 0..<n {
                let start = now()
                try? await Task.sleep(for: .nanoseconds(ns))
                out.append(Int64(now() - start) - ns)
            }
            return out
        }
    }

    /// One loop, the sleeps one after another, as the raw C peer makes them: plain timers (`tolerance`
    /// nil), or precise sleeps (`.zero`: an early timer, then the loop polls the clock). The loop is
    /// new for each run, so a precise run includes its loop's learning of the wake-up latency.
    private func engineSleep(_ ns: Int64, _ n: Int, tolerance: Duration?) throws -> [Int64] {
        try EventLoop.run {
            var out: [Int64] = []
            out.reserveCapacity(n)
            for _ in 0..<n {
                let start = now()
                if let tolerance {
                    try await sleep(for: .nanoseconds(ns), tolerance: tolerance)
                } else {
                    try await sleep(for: .nanoseconds(ns))
                }
                out.append(Int64(now() - start) - ns)
            }
            return out
        }
    }
}
