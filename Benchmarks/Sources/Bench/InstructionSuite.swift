import CBenchPeers
import Foundation
import Multiprocessing

/// The instructions suite: instructions per operation, counted by callgrind. Unlike a time, the
/// count is the same whatever else the machine does, so it is the figure to compare between
/// commits. Each row runs its probe (Probes.swift) under `valgrind --tool=callgrind` for N and 2N
/// operations and reports (Ir(2N) − Ir(N)) / N: the start-up cost cancels out.
struct InstructionSuite {
    /// One row of the table: its case and implementation, and the probe that runs the operation.
    struct Entry {
        var caseName: String
        var impl: String
        var probe: String
        /// N for this row (tasks cost far more than queue operations: fewer keep callgrind quick).
        var iterations: Int
        /// Whether the probe talks to a loopback echo server (which the suite starts, uncounted).
        var echo: Bool
        init(
            _ caseName: String, _ impl: String, probe: String, iterations: Int = InstructionSuite.iterations,
            echo: Bool = false
        ) {
            (self.caseName, self.impl, self.probe, self.iterations, self.echo) = (
                caseName, impl, probe, iterations, echo
            )
        }
    }

    /// The rows: a new row is one line here (and its probe in runProbe).
    static let entries: [Entry] = [
        Entry("Queue put+get, 8 B, 1 thread", "engine Queue<Int>", probe: "queue"),
        Entry("Queue put+get, 8 B, 1 thread", QueueSuite.lanes, probe: "queue-lanes"),
        Entry("Queue put+get, 8 B, batches of 64, per message", "engine Queue<Int>", probe: "queue-batch64"),
        Entry("Queue put+get, 8 B, batches of 64, per message", QueueSuite.lanes, probe: "queue-lanes-batch64"),
        Entry("Queue put+get, 8 B, 1 thread", "engine ring (from C)", probe: "ring-c"),
        Entry("Queue put+get, 8 B, 1 thread", "C reference SPSC ring", probe: "reference-ring"),
        Entry("Queue put+get, 8 B, 1 thread", "C Vyukov MPMC ring", probe: "vyukov-ring"),
        Entry("Queue put+get, Record64 (Codable), 1 thread", "engine Queue<Record64>", probe: "queue-codable"),
        Entry("Lock acquire+release, uncontended, 1 thread", "engine Lock", probe: "lock"),
        Entry("Lock acquire+release, uncontended, 1 thread", "pthread_mutex_t", probe: "pthread-mutex"),
        // The sync-vs-async suite's sleep workload, per task: creating it, its 10 ms sleep, its end
        // (every instruction of the process, the loop's thread and the runtime's included).
        Entry(sleepingTask, "engine EventLoop coroutines", probe: "sva-eventloop-sleep", iterations: 2_000),
        Entry(sleepingTask, "Swift default executor (Tasks)", probe: "sva-tasks-sleep", iterations: 2_000),
        // Its TCP workload, per connection: connect, 64 bytes there and back, close (the echo
        // server's instructions are not counted; the kernel's never are).
        Entry(tcpRoundTrip, "engine EventLoop coroutines", probe: "sva-eventloop-tcp", iterations: 100, echo: true),
        Entry(tcpRoundTrip, "Swift threads (one per task)", probe: "sva-threads-tcp", iterations: 100, echo: true),
        Entry(tcpRoundTrip, "Swift default executor (Tasks)", probe: "sva-tasks-tcp", iterations: 100, echo: true),
    ]

    static let sleepingTask = "a task that sleeps 10 ms, per task"
    static let tcpRoundTrip = "a loopback TCP round trip of 64 B (connect to close), per connection"

    /// N: large enough that the loop dwarfs the noise of start-up (which cancels anyway), small
    /// enough that callgrind's ~50× slowdown keeps a probe near a second.
    static let iterations = 100_000

    func run() -> [Row] {
        guard !shell("command -v valgrind").isEmpty else { return Self.unavailable("no valgrind") }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("multiprocessing-bench-callgrind-\(getpid())").path
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // valgrind 3.19 (Debian 12) cannot read the DWARF 5 that Swift emits: count a copy without it.
        let binary = directory + "/bench-nodebug"
        _ = shell("strip --strip-debug -o '\(binary)' '\(benchExecutable())' 2>&1")
        guard FileManager.default.isExecutableFile(atPath: binary) else { return Self.unavailable("strip failed") }
        let echo = EchoServer()
        defer { echo?.stop() }
        return Self.entries.map { entry in
            let n = entry.iterations
            var port = 0
            if entry.echo {
                guard let echo else { return Self.row(entry, samples: [], note: "no echo server") }
                port = echo.port
            }
            guard let once = instructions(binary, entry.probe, n, port, directory),
                let twice = instructions(binary, entry.probe, 2 * n, port, directory)
            else { return Self.row(entry, samples: [], note: "callgrind failed") }
            return Self.row(entry, samples: [Double(twice - once) / Double(n)])
        }
    }

    /// The total instructions (Ir) of one run of `probe` at `n` under callgrind; nil if it failed.
    private func instructions(_ binary: String, _ probe: String, _ n: Int, _ port: Int, _ directory: String) -> Int? {
        let out = "\(directory)/\(probe)-\(n).callgrind"
        let status = shell(
            "valgrind --tool=callgrind --callgrind-out-file='\(out)' '\(binary)' --probe \(probe)"
                + " --probe-iterations \(n) --probe-port \(port) >/dev/null 2>&1; echo $?")
        guard status == "0", let text = try? String(contentsOfFile: out, encoding: .utf8) else { return nil }
        // The out file's "summary: 56376152" (older valgrinds) or "totals: 56376152" line.
        let total = text.split(separator: "\n").first { $0.hasPrefix("summary:") || $0.hasPrefix("totals:") }
        return total.flatMap { $0.split(separator: " ").dropFirst().first }.flatMap { Int($0) }
    }

    private static func row(_ entry: Entry, samples: [Double], note: String = "") -> Row {
        Row(
            suite: "instructions", caseName: entry.caseName, impl: entry.impl, metric: "instructions per operation",
            unit: "instr", samples: samples, higherIsBetter: false, note: note)
    }

    private static func unavailable(_ why: String) -> [Row] { entries.map { row($0, samples: [], note: why) } }
}

/// The loopback echo server of the TCP rows (the sync-vs-async suite's), in a child process.
private final class EchoServer {
    let port: Int
    private let server: Multiprocessing.Process

    /// nil if it could not listen or start.
    init?() {
        var port: Int32 = 0
        let listener = bench_echo_listen(4096, &port)
        guard listener >= 0 else { return nil }
        defer { close(listener) }
        server = Multiprocessing.Process(name: "echo-server") { bench_echo_serve(listener) }
        guard (try? server.start()) != nil else { return nil }
        self.port = Int(port)
    }

    func stop() {
        try? server.kill()
        _ = try? server.join(timeout: .seconds(5))
    }
}
