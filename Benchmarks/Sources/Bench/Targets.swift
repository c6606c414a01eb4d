/// The benchmark issue's targets, checked against the figures of this run: each adds a note to the
/// engine's row ("met" or "MISSED") and a line to the report's target list. A ratio here reads as
/// in the tables: how many times better the engine's figure is than the reference's.
struct Target {
    var suite: String
    var caseName: String
    var engine: String
    var reference: String
    var minimumRatio: Double
    var text: String
    /// The reference's case, when it is not the engine row's.
    var referenceCase: String? = nil

    static let all: [Target] = [
        Target(
            suite: "lock", caseName: "uncontended acquire+release", engine: "engine Lock", reference: "pthread_mutex_t",
            minimumRatio: 1 / 1.2, text: "Lock uncontended ≤ 1.2× pthread_mutex_t"),
        Target(
            suite: "lock", caseName: "2 threads contended", engine: "engine Lock", reference: "pthread_mutex_t",
            minimumRatio: 1, text: "Lock contended (2 threads) ≥ 1.0× pthread_mutex_t"),
        Target(
            suite: "lock", caseName: "2 processes contended", engine: "engine Lock",
            reference: "pthread_mutex_t (process-shared)", minimumRatio: 1,
            text: "Lock contended (2 processes) ≥ 1.0× pthread_mutex_t"),
        Target(
            suite: "queue", caseName: "SPSC 8 B, 2 threads", engine: "engine ring (from C)",
            reference: "C reference SPSC ring", minimumRatio: 0.7, text: "engine ring SPSC 8 B ≥ 0.7× the C ring"),
        Target(
            suite: "queue", caseName: "SPSC 8 B, 2 threads", engine: "engine Queue<Int>",
            reference: "C reference SPSC ring", minimumRatio: 0.5, text: "Queue<Int> SPSC 8 B ≥ 0.5× the C ring"),
        Target(
            suite: "queue", caseName: "cross-process Queue, 64 B fixed-size", engine: "engine Queue<Fixed64>",
            reference: "Python multiprocessing.Queue", minimumRatio: 100,
            text: "cross-process Queue, 64 B fixed-size ≥ 100× multiprocessing.Queue"),
        Target(
            suite: "queue", caseName: "cross-process Queue, Codable ~64 B", engine: "engine Queue<Record64>",
            reference: "Python multiprocessing.Queue", minimumRatio: 10,
            text: "cross-process Queue, Codable ≥ 10× multiprocessing.Queue"),
        Target(
            suite: "latency", caseName: "round trip p50, processes, Queue", engine: "engine Queue, 2 processes",
            reference: "engine Queue, 2 threads", minimumRatio: 0.5,
            text: "cross-process round trip ≤ 2× the thread ping-pong (p50)", referenceCase: "round trip p50, threads"),
        Target(
            suite: "pool", caseName: "applyAsync, trivial tasks", engine: "engine ProcessPool.applyAsync",
            reference: "Python Pool.apply_async", minimumRatio: 20,
            text: "ProcessPool.applyAsync ≥ 20× Pool.apply_async"),
        Target(
            suite: "pool", caseName: "map, trivial tasks", engine: "engine ProcessPool.map",
            reference: "Python Pool.map", minimumRatio: 2, text: "ProcessPool.map ≥ 2× Pool.map"),
        Target(
            suite: "sleep", caseName: "1 ms sleep, overshoot p50", engine: "engine sleep (EventLoop, io_uring)",
            reference: "raw C io_uring timeout", minimumRatio: 1 / 1.2,
            text: "sleep 1 ms p50 overshoot ≤ 1.2× a raw io_uring timeout's"),
        Target(
            suite: "sleep", caseName: "1 ms sleep, overshoot p50", engine: "engine sleep (EventLoop, io_uring)",
            reference: "Task.sleep", minimumRatio: 2, text: "sleep 1 ms p50 overshoot ≥ 2× better than Task.sleep"),
        Target(
            suite: "sync-vs-async", caseName: "10000 × sleep 10 ms, wall time", engine: "engine EventLoop coroutines",
            reference: "Swift default executor (Tasks)", minimumRatio: 1,
            text: "10 000 coroutines sleeping 10 ms: wall time ≤ Swift's default executor"),
        Target(
            suite: "sync-vs-async", caseName: "10000 × sleep 10 ms, task memory", engine: "engine EventLoop coroutines",
            reference: "Swift threads (one per task)", minimumRatio: 10,
            text: "10 000 coroutines sleeping 10 ms: memory ≥ 10× less than 10 000 threads"),
    ]

    /// The ratio in this run, or nil when either row is missing.
    func ratio(in rows: [Row]) -> Double? {
        guard let e = rows.first(where: { $0.suite == suite && $0.caseName == caseName && $0.impl == engine }),
            let r = rows.first(where: {
                $0.suite == suite && $0.caseName == (referenceCase ?? caseName) && $0.impl == reference
            }),
            e.median > 0, r.median > 0
        else { return nil }
        return e.higherIsBetter ? e.median / r.median : r.median / e.median
    }

    /// Adds each target's verdict to its engine row's note; returns one line per target checked.
    static func annotate(_ rows: inout [Row]) -> [String] {
        var lines: [String] = []
        for t in all {
            guard let x = t.ratio(in: rows) else { continue }
            let verdict = x >= t.minimumRatio ? "met" : "MISSED"
            let shown = String(format: "%.2f×", x)
            lines.append("- \(t.text): \(shown) vs \(t.reference) — \(verdict)")
            if let i = rows.firstIndex(where: {
                $0.suite == t.suite && $0.caseName == t.caseName && $0.impl == t.engine
            }) {
                let note = "target: \(shown) vs \(t.reference), \(verdict)"
                rows[i].note = rows[i].note.isEmpty ? note : rows[i].note + "; " + note
            }
        }
        return lines
    }
}
