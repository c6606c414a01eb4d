import Foundation
import Histogram
import Multiprocessing

/// The latency suite: ping-pong round trips between two threads and between two processes, over a
/// pair of engine queues and over a pipe, with percentiles from HdrHistogram; Python's Pipe as the
/// peer. One-way latency is reported as half a round trip.
struct LatencySuite {
    let quick: Bool
    let runs: Int

    var roundTrips: Int { quick ? 20_000 : 200_000 }
    /// A pipe's round trip wakes the other process (~80 µs here): fewer keep a run near 1.5 s.
    var pipeRoundTrips: Int { quick ? 2_000 : 20_000 }

    func run(python: PythonPeers) throws -> [Row] {
        var rows: [Row] = []
        var p50: [String: [Double]] = [:]
        var p99: [String: [Double]] = [:]
        // A peer that failed: its rows say so in place of a figure, as a Contest's do.
        var failures: [String: String] = [:]
        let pythonPipe = "Python multiprocessing.Pipe, 2 processes"
        let cases: [(String, () throws -> Histogram<UInt64>)] = [
            ("engine Queue, 2 threads", { try queueThreads() }),
            ("engine Queue, 2 processes", { try queueProcesses() }),
            ("engine Pipe, 2 processes", { try pipeProcesses() }),
        ]
        _ = try cases.map { try $0.1() }  // warm-up
        for _ in 0..<runs {
            for (name, measure) in cases {
                let h = try measure()
                p50[name, default: []].append(Double(h.valueAtPercentile(50)))
                p99[name, default: []].append(Double(h.valueAtPercentile(99)))
            }
            if python.available && failures[pythonPipe] == nil {
                let n = pipeRoundTrips
                let text = try python.measureText("pipe-pingpong", [String(n)])
                let parts = text.split(separator: " ").compactMap { Double($0) }
                if parts.count == 2 {
                    p50[pythonPipe, default: []].append(parts[0])
                    p99[pythonPipe, default: []].append(parts[1])
                } else {
                    failures[pythonPipe] = "failed: python peer pipe-pingpong printed: \(text.prefix(200))"
                }
            }
        }
        // One case per transport, so that each peer is compared with the engine's like for like;
        // one-way is half the round trip.
        let groups: [(String, [String])] = [
            ("threads", ["engine Queue, 2 threads"]),
            ("processes, Queue", ["engine Queue, 2 processes"]),
            ("processes, Pipe", ["engine Pipe, 2 processes", pythonPipe]),
        ]
        for (kind, scale) in [("round trip", 1.0), ("one-way", 0.5)] {
            for (metric, table) in [("p50", p50), ("p99", p99)] {
                for (group, names) in groups {
                    for name in names {
                        guard let samples = table[name] ?? failures[name].map({ _ in [] }) else { continue }
                        rows.append(
                            Row(
                                suite: "latency", caseName: "\(kind) \(metric), \(group)", impl: name,
                                metric: "\(kind) \(metric)", unit: "ns",
                                samples: failures[name] == nil ? samples.map { $0 * scale } : [],
                                higherIsBetter: false, note: failures[name] ?? ""))
                    }
                }
            }
        }
        return rows
    }

    private func newHistogram() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
    }

    private func queueThreads() throws -> Histogram<UInt64> {
        let ping = try Queue<Int>(), pong = try Queue<Int>()
        let n = roundTrips
        let echo = Multiprocessing.Thread { for _ in 0..<n { try pong.put(try ping.get()) } }
        try echo.start()
        var h = newHistogram()
        for i in 0..<n {
            let start = now()
            try ping.put(i)
            _ = try pong.get()
            _ = h.record(now() - start)
        }
        try echo.join()
        return h
    }

    private func queueProcesses() throws -> Histogram<UInt64> {
        let ping = try Queue<Int>(), pong = try Queue<Int>()
        let n = roundTrips
        let echo = Multiprocessing.Process { for _ in 0..<n { try pong.put(try ping.get()) } }
        try echo.start()
        var h = newHistogram()
        for i in 0..<n {
            let start = now()
            try ping.put(i)
            _ = try pong.get()
            _ = h.record(now() - start)
        }
        try echo.join()
        try expectClean([echo])
        return h
    }

    private func pipeProcesses() throws -> Histogram<UInt64> {
        let (a, b) = try Pipe.make()
        let n = pipeRoundTrips
        let echo = Multiprocessing.Process { for _ in 0..<n { try b.sendBytes(try b.receiveBytes()) } }
        try echo.start()
        var h = newHistogram()
        let message: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        for _ in 0..<n {
            let start = now()
            try a.sendBytes(message)
            _ = try a.receiveBytes()
            _ = h.record(now() - start)
        }
        try echo.join()
        try expectClean([echo])
        return h
    }
}
