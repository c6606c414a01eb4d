import CBenchPeers
import Foundation
import Multiprocessing

/// Counts the system calls (only those named in `trace`, e.g. "futex", when given) of one run of
/// this program in probe mode; nil without strace.
func countSyscalls(probe: String, iterations: Int, trace: String? = nil) -> Int? {
    let filter = trace.map { "-e trace=\($0) " } ?? ""
    let out = shell(
        "strace -f -c \(filter)-o /dev/stdout '\(benchExecutable())' --probe \(probe) --probe-iterations \(iterations)"
            + " 2>/dev/null; echo \"probe-exit $?\"")
    // strace exits with the probe's status: a probe that failed (a lost increment) counts nothing.
    guard out.hasSuffix("probe-exit 0") else { return nil }  // the output is trimmed
    guard let total = out.split(separator: "\n").last(where: { $0.contains("total") }) else { return nil }
    let fields = total.split(separator: " ", omittingEmptySubsequences: true)
    // "100.00    0.000123          1       123         4 total": calls is the 4th column.
    return fields.count >= 4 ? Int(fields[3]) : nil
}

/// The probes: `iterations` operations of one kind and nothing else, for strace, valgrind and perf
/// to measure from outside (`--probe NAME --probe-iterations N`).
func runProbe(_ name: String, iterations: Int) throws {
    switch name {
    case "lock":
        let lock = Lock()
        for _ in 0..<iterations { try lock.acquire(); try lock.release() }
    case "pthread-mutex":
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        bench_pthread_mutex_loop(bench_pthread_mutex_init(memory, 0), Int64(iterations))
    case "lock-contended":
        // Two threads pinned apart, each doing `iterations` acquire, increment, release.
        let lock = Lock()
        let counter = Counter()
        try onTwoPinnedThreads { _ in
            for _ in 0..<iterations { try! lock.acquire(); counter.value &+= 1; try! lock.release() }
        }
        guard counter.value == 2 * iterations else { throw BenchError.peer("lost increments: \(counter.value)") }
    case "pthread-contended":
        let memory = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        let mutex = PointerBox(pointer: bench_pthread_mutex_init(memory, 0))
        let counter = Counter()
        try onTwoPinnedThreads { _ in
            for _ in 0..<iterations {
                bench_pthread_mutex_lock(mutex.pointer)
                counter.value &+= 1
                bench_pthread_mutex_unlock(mutex.pointer)
            }
        }
        guard counter.value == 2 * iterations else { throw BenchError.peer("lost increments: \(counter.value)") }
    case "queue":
        let q = try Queue<Int>()
        for i in 0..<iterations {
            try q.put(i)
            _ = try q.get()
        }
    case "queue-lanes":
        let q = try Queue<Int>(ordering: .perProducer)  // this thread's lane
        for i in 0..<iterations {
            try q.put(i)
            _ = try q.get()
        }
    case "queue-batch64", "queue-lanes-batch64":
        // `iterations` messages, 64 to a batch each way.
        let q = try Queue<Int>(ordering: name == "queue-batch64" ? .causal : .perProducer)
        let batch = Array(0..<64)
        for _ in 0..<(iterations / 64) {
            try q.put(contentsOf: batch)
            guard try q.get(max: 64).count == 64 else { throw BenchError.peer("a batch came back short") }
        }
    case "cross-process-64", "cross-process-64-lanes":
        // The cross-process 64 B row's loop: a forked producer, this process consuming.
        let q = try Queue<Fixed64>(ordering: name == "cross-process-64" ? .causal : .perProducer)
        let rate = try QueueSuite(quick: true, runs: 1).processPair(
            q, iterations, Fixed64.init, figure: \.index, expected: indexSum(iterations))
        print(String(format: "%.2f M msg/s", rate / 1e6))
    case "boost-64":
        // The cross-process 64 B row's Boost.Interprocess message_queue peer.
        let rate = try QueueSuite(quick: true, runs: 1).boostPair(iterations)
        print(String(format: "%.2f M msg/s", rate / 1e6))
    case "cross-process-codable":
        // The cross-process Codable row's loop (Record64, about 64 bytes encoded).
        let q = try Queue<Record64>()
        let rate = try QueueSuite(quick: true, runs: 1).processPair(
            q, iterations, Record64.init, figure: \.sequence, expected: indexSum(iterations))
        print(String(format: "%.2f M msg/s", rate / 1e6))
    case "queue-codable":
        // The Codable row's per-message work without a second process: encode, ring, decode.
        let q = try Queue<Record64>()
        for i in 0..<iterations {
            try q.put(Record64(i))
            guard try q.get().sequence == i else { throw BenchError.peer("a Record64 came back changed") }
        }
    case "engine-spsc":
        // The "engine ring (from C)" row's contest: two pinned C threads over the engine's ring.
        print(String(format: "%.2f M msg/s", bench_engine_spsc(Int64(iterations)) / 1e6))
    case "ring-c":
        guard bench_engine_put_get(Int64(iterations)) == 0 else { throw BenchError.peer("engine ring lost values") }
    case "reference-ring":
        bench_reference_put_get(Int64(iterations))
    case "reference-spsc":
        // The SPSC 8 B row's C reference ring, its two threads pinned apart, once.
        print(String(format: "%.2f M msg/s", bench_reference_spsc(Int64(iterations)) / 1e6))
    case "vyukov-ring":
        bench_vyukov_put_get(Int64(iterations))
    case "spsc", "spsc-lanes":
        // The SPSC 8 B row's contest (its two threads pinned apart), once.
        let q = try Queue<Int>(capacity: 1 << 20, ordering: name == "spsc" ? .causal : .perProducer)
        let rate = try QueueSuite(quick: true, runs: 1).threadPair(
            iterations, expected: indexSum(iterations), produce: { try q.put($0) }, consume: { try q.get() })
        print(String(format: "%.2f M msg/s", rate / 1e6))
    case "spsc-batch64", "spsc-lanes-batch64":
        // The batches-of-64 rows' contest, once: `iterations` messages, 64 to a put and a get.
        let q = try Queue<Int>(capacity: 1 << 20, ordering: name == "spsc-batch64" ? .causal : .perProducer)
        let batch = Array(0..<64)
        let suite = QueueSuite(quick: true, runs: 1)
        let rate =
            try suite.threadPair(
                iterations / 64, expected: iterations / 64 * indexSum(64),
                produce: { _ in try q.put(contentsOf: batch) },
                consume: { try suite.getBatch(q) }) * 64
        print(String(format: "%.2f M msg/s", rate / 1e6))
    case "start-child", "start-child-fork":
        // For perf and strace: forkserver (or fork) children one after another, the mean printed.
        let ms = try meanFirstLine(iterations) { writer in
            name == "start-child"
                ? Multiprocessing.Process(target: StartTargets.ready, argument: writer)
                : Multiprocessing.Process { try writer.sendBytes([1]) }
        }
        print(String(format: "%.3f ms per child", ms))
    case "start-pool":
        // For perf: forkserver pools of 2 one after another, creation to first result, the mean printed.
        let ms = try meanFirstResult(iterations) { try ProcessPool(processes: 2, worker: StartTargets.doubler) }
        print(String(format: "%.3f ms per pool", ms))
    case "eventloop-run":
        // The fixed cost of asyncio.run's counterpart: a loop made, an empty body run, the loop gone.
        let start = now()
        for _ in 0..<iterations { try EventLoop.run {} }
        print(String(format: "%.1f µs per run", Double(now() - start) / Double(iterations) / 1e3))
    default:
        throw BenchError.peer("unknown probe \(name)")
    }
}
