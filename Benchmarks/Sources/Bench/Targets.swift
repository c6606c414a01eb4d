/// The benchmark issue's targets, checked against the figures of this run: each adds a note to the
/// engine's row ("met" or "MISSED") and a line to the report's target list. A ratio here reads as
/// in the tables: how many times better the engine's figure is than the reference's.
struct Target {
    /// What the engine row's median must reach.
    enum Bound {
        /// At least `minimum` times better than the `reference` row of `referenceCase` (nil: the
        /// engine row's case).
        case ratio(reference: String, minimum: Double, referenceCase: String?)
        /// At most this value, in the row's unit: a figure that matters by itself, whatever the peers do.
        case maximum(Double)
    }

    var suite: String
    var caseName: String
    var engine: String
    var bound: Bound
    var text: String

    static let all: [Target] =
        [
            Target(
                suite: "lock", caseName: "uncontended acquire+release", engine: "engine Lock",
                reference: "pthread_mutex_t",
                minimumRatio: 1 / 1.2, text: "Lock uncontended: at most 1.2× slower than pthread_mutex_t"),
            Target(
                suite: "lock", caseName: "2 threads contended", engine: "engine Lock", reference: "pthread_mutex_t",
                minimumRatio: 1, text: "Lock contended (2 threads): at least as fast as pthread_mutex_t"),
            Target(
                suite: "lock", caseName: "2 processes contended", engine: "engine Lock",
                reference: "pthread_mutex_t (process-shared)", minimumRatio: 1,
                text: "Lock contended (2 processes): at least as fast as pthread_mutex_t"),
            Target(
                suite: "queue", caseName: "SPSC 8 B, 2 threads", engine: "engine ring (from C)",
                reference: "C reference SPSC ring", minimumRatio: 0.7,
                text: "engine ring SPSC 8 B: at most 1.43× slower than the C ring"),
            Target(
                suite: "queue", caseName: "SPSC 8 B, 2 threads", engine: "engine Queue<Int>",
                reference: "C reference SPSC ring", minimumRatio: 0.5,
                text: "Queue<Int> SPSC 8 B: at most 2× slower than the C ring"),
            Target(
                suite: "queue", caseName: "SPSC 8 B, 2 threads", engine: QueueSuite.batchesOf64,
                reference: "C reference SPSC ring", minimumRatio: 1,
                text: "Queue<Int> SPSC 8 B in batches of 64: at least as fast as the C ring (per message)"),
            Target(
                suite: "queue", caseName: "SPSC 8 B, 2 threads", engine: QueueSuite.lanes,
                reference: "C reference SPSC ring", minimumRatio: 0.5,
                text: "Queue<Int> on lanes, SPSC 8 B: at most 2× slower than the C ring"),
            Target(
                suite: "queue", caseName: "SPSC 8 B, 2 threads", engine: QueueSuite.lanesBatchesOf64,
                reference: "C reference SPSC ring", minimumRatio: 1,
                text: "Queue<Int> on lanes, SPSC 8 B in batches of 64: at least as fast as the C ring (per message)"),
            Target(
                suite: "queue", caseName: "MPMC 8 B, 2×2 threads", engine: QueueSuite.lanes,
                reference: QueueSuite.vyukovRing, minimumRatio: 1,
                text: "MPMC 2×2 threads on lanes: at least as fast as the Vyukov ring"),
            Target(
                suite: "queue", caseName: "cross-process Queue, 64 B fixed-size", engine: QueueSuite.lanesFixed64,
                reference: "Python multiprocessing.Queue", minimumRatio: 100,
                text: "cross-process Queue on lanes, 64 B fixed-size: at least 100× faster than multiprocessing.Queue"),
            Target(
                suite: "queue", caseName: "cross-process Queue, 64 B fixed-size", engine: QueueSuite.lanesFixed64,
                reference: QueueSuite.boostQueue, minimumRatio: 5,
                text: "cross-process 64 B fixed-size on lanes: at least 5× faster than Boost message_queue"),
            Target(
                suite: "queue", caseName: "cross-process Queue, 64 B fixed-size", engine: "engine Queue<Fixed64>",
                reference: "Python multiprocessing.Queue", minimumRatio: 100,
                text: "cross-process Queue, 64 B fixed-size: at least 100× faster than multiprocessing.Queue"),
            Target(
                suite: "queue", caseName: "MPMC 8 B, 2×2 threads", engine: "engine Queue<Int>",
                reference: QueueSuite.vyukovRing, minimumRatio: 1,
                text: "MPMC 2×2 threads: at least as fast as the Vyukov ring"),
            Target(
                suite: "queue", caseName: "cross-process Queue, 64 B fixed-size", engine: "engine Queue<Fixed64>",
                reference: QueueSuite.boostQueue, minimumRatio: 5,
                text: "cross-process 64 B fixed-size: at least 5× faster than Boost message_queue"),
            Target(
                suite: "queue", caseName: "cross-process Queue, Codable ~64 B", engine: "engine Queue<Record64>",
                reference: "Python multiprocessing.Queue", minimumRatio: 15,
                text: "cross-process Queue, Codable: at least 15× faster than multiprocessing.Queue"),
            Target(
                suite: "latency", caseName: "round trip p50, processes, Queue", engine: "engine Queue, 2 processes",
                reference: "engine Queue, 2 threads", minimumRatio: 0.5,
                text: "cross-process round trip: at most 2× slower than the thread ping-pong (p50)",
                referenceCase: "round trip p50, threads"),
            Target(
                suite: "pool", caseName: "applyAsync, trivial tasks", engine: "engine ProcessPool.applyAsync",
                reference: "Python Pool.apply_async", minimumRatio: 20,
                text: "ProcessPool.applyAsync: at least 20× faster than Pool.apply_async"),
            Target(
                suite: "pool", caseName: "map, trivial tasks", engine: "engine ProcessPool.map",
                reference: "Python Pool.map", minimumRatio: 2, text: "ProcessPool.map: at least 2× faster than Pool.map"
            ),
            // Issue #14, precise sleeps: the plain timer stays at the kernel's floor; tolerance .zero beats it.
            Target(
                suite: "sleep", caseName: "1 ms sleep, overshoot p50", engine: "engine sleep (EventLoop, io_uring)",
                reference: "raw C io_uring timeout", minimumRatio: 1 / 1.2,
                text: "sleep 1 ms p50 overshoot, default mode: at most 1.2× a raw io_uring timeout's"),
            Target(
                suite: "sleep", caseName: "1 ms sleep, overshoot p50", engine: SleepSuite.precise, maximum: 10,
                text: "sleep 1 ms p50 overshoot, precise mode (tolerance .zero): at most 10 µs"),
            Target(
                suite: "sleep", caseName: "1 ms sleep, overshoot p99", engine: SleepSuite.precise, maximum: 50,
                text: "sleep 1 ms p99 overshoot, precise mode (tolerance .zero): at most 50 µs"),
            // Issue #14, coroutines (retiring "≥ 10× less memory than threads", impossible with one stock
            // Swift task per coroutine, and "2× smaller than Task.sleep", which the precise mode replaces).
            Target(
                suite: "sync-vs-async", caseName: "10000 × sleep 10 ms, wall time",
                engine: "engine EventLoop coroutines",
                reference: "Swift default executor (Tasks)", minimumRatio: 1 / 0.9,
                text: "10 000 coroutines sleeping 10 ms: wall time at most 0.9× the default executor's"),
            Target(
                suite: "sync-vs-async", caseName: "10000 × sleep 10 ms, task memory",
                engine: "engine EventLoop coroutines",
                reference: "Swift default executor (Tasks)", minimumRatio: 1,
                text: "10 000 coroutines sleeping 10 ms: task memory at most the default executor's"),
            Target(
                suite: "sync-vs-async", caseName: "10000 × sleep 10 ms, task memory",
                engine: "engine EventLoop coroutines",
                reference: "Swift threads (one per task)", minimumRatio: 5,
                text: "10 000 coroutines sleeping 10 ms: at least 5× less memory than 10 000 threads"),
            Target(
                suite: "instructions", caseName: "Queue put+get, 8 B, 1 thread", engine: "engine Queue<Int>",
                maximum: 60, text: "Queue<Int> put+get: at most 60 instructions"),
            Target(
                suite: "instructions", caseName: "Queue put+get, 8 B, 1 thread", engine: QueueSuite.lanes,
                maximum: 60, text: "Queue<Int> on lanes put+get: at most 60 instructions"),
            Target(
                suite: "instructions", caseName: InstructionSuite.sleepingTask, engine: "engine EventLoop coroutines",
                maximum: 8_000, text: "a coroutine that sleeps: at most 8 000 instructions per task"),
        ]
        + [100, 10_000].flatMap { n in
            [
                Target(
                    suite: "sync-vs-async", caseName: "\(n) × TCP round trip, wall time",
                    engine: "engine EventLoop coroutines", reference: "Swift default executor (Tasks)", minimumRatio: 1,
                    text: "\(n) loopback TCP round trips: at least as fast as Tasks"),
                Target(
                    suite: "sync-vs-async", caseName: "\(n) × TCP round trip, wall time",
                    engine: "engine EventLoop coroutines", reference: "Swift threads (one per task)", minimumRatio: 2,
                    text: "\(n) loopback TCP round trips: at least 2× faster than threads"),
            ]
        } + [
            Target(
                suite: "start", caseName: "a child process runs its first line",
                engine: "engine Process, SpawnTarget forkserver", maximum: 2,
                text: "forkserver worker ready within 2 ms"),
            Target(
                suite: "start", caseName: "a child process runs its first line",
                engine: "engine Process, SpawnTarget forkserver", reference: "Python Process, forkserver",
                minimumRatio: 10, text: "forkserver worker ready at least 10× faster than Python's forkserver"),
        ]
}

extension Target {
    /// A target of at least `minimumRatio` times better than the `reference` row.
    init(
        suite: String, caseName: String, engine: String, reference: String, minimumRatio: Double, text: String,
        referenceCase: String? = nil
    ) {
        self.init(
            suite: suite, caseName: caseName, engine: engine,
            bound: .ratio(reference: reference, minimum: minimumRatio, referenceCase: referenceCase), text: text)
    }

    /// A target of at most `maximum`, in the engine row's unit.
    init(suite: String, caseName: String, engine: String, maximum: Double, text: String) {
        self.init(suite: suite, caseName: caseName, engine: engine, bound: .maximum(maximum), text: text)
    }

    /// The engine row's figure as the target reads it ("3.20× faster than X", "1.23 ms (at most 2 ms)") and
    /// whether it meets the target; nil when a row it needs is missing from this run.
    func verdict(in rows: [Row]) -> (shown: String, met: Bool)? {
        guard let e = row(engine, of: caseName, in: rows), e.median > 0 else { return nil }
        switch bound {
        case .ratio(let reference, let minimum, let referenceCase):
            guard let r = row(reference, of: referenceCase ?? caseName, in: rows), r.median > 0 else { return nil }
            let x = e.higherIsBetter ? e.median / r.median : r.median / e.median
            return (ratioInWords(x, unit: e.unit) + " than \(reference)", x >= minimum)
        case .maximum(let maximum):
            let (figure, bound) = (String(format: "%.3g", e.median), String(format: "%g", maximum))
            return ("\(figure) \(e.unit) (at most \(bound) \(e.unit))", e.median <= maximum)
        }
    }

    private func row(_ impl: String, of caseName: String, in rows: [Row]) -> Row? {
        rows.first { $0.suite == suite && $0.caseName == caseName && $0.impl == impl }
    }

    /// Adds each target's verdict to its engine row's note; returns one line per target checked.
    static func annotate(_ rows: inout [Row]) -> [String] {
        var lines: [String] = []
        for t in all {
            guard let (shown, met) = t.verdict(in: rows) else {
                // Its suite ran but a row it needs has no figure (no Boost, a peer that failed): the
                // list says so, rather than dropping a target the reader would then take as met.
                if rows.contains(where: { $0.suite == t.suite }) {
                    lines.append("- \(t.text): not checked (a row it needs was not measured in this run)")
                }
                continue
            }
            let verdict = met ? "met" : "MISSED"
            lines.append("- \(t.text): \(shown) — \(verdict)")
            if let i = rows.firstIndex(where: {
                $0.suite == t.suite && $0.caseName == t.caseName && $0.impl == t.engine
            }) {
                let note = "target: \(shown), \(verdict)"
                rows[i].note = rows[i].note.isEmpty ? note : rows[i].note + "; " + note
            }
        }
        return lines
    }
}
