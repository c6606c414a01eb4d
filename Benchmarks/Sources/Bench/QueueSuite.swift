import CBenchPeers
import CxxBenchPeers
import Foundation
import Multiprocessing

/// A 64-byte fixed-size message: the copy-only fast path.
struct Fixed64: BitwiseCopyable, Sendable {
    var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    init(_ i: Int) { words = (UInt64(i), 1, 2, 3, 4, 5, 6, 7) }
    /// The index it was made from, or -1 if another word came back changed.
    var index: Int { words.1 == 1 && words.7 == 7 ? Int(words.0) : -1 }
}

/// 0 + 1 + … + (n − 1): what a consumer of the indices 0..<n adds up to.
func indexSum(_ n: Int) -> Int { n * (n - 1) / 2 }

/// A consumer's sum against the one its producers sent: a run that lost, doubled or changed a
/// message measures nothing.
func expectSum(_ got: Int, _ expected: Int) throws {
    guard got == expected else { throw BenchError.peer("the consumer's sum is \(got), not \(expected)") }
}

/// A Codable message of about 64 bytes encoded.
struct Record64: Codable, Sendable {
    var id: Int
    var sequence: Int
    var payload: [UInt8]
    init(_ i: Int) {
        id = 7
        sequence = i
        payload = Record64.bytes
    }
    static let bytes = [UInt8](repeating: 42, count: 32)
}

/// The queue suite: SPSC between threads, cross-process queues and pipes, against a plain C ring,
/// a C Vyukov MPMC ring, Boost's message_queue and Python's queues; and the syscalls a put+get
/// makes with nobody asleep (must be zero).
struct QueueSuite {
    let quick: Bool
    let runs: Int

    var threadMessages: Int { quick ? 200_000 : 5_000_000 }
    var processMessages: Int { quick ? 100_000 : 2_000_000 }
    /// Messages per run for the Swift peers (DispatchQueue, AsyncStream) and Python's.
    var peerMessages: Int { quick ? 50_000 : 500_000 }
    var pythonThreadMessages: Int { quick ? 20_000 : 200_000 }
    var pythonProcessMessages: Int { quick ? 10_000 : 100_000 }
    /// Contended figures (2×2 threads) scatter most: more runs.
    var contendedRuns: Int { quick ? runs : max(runs, 15) }

    func run(python: PythonPeers) throws -> [Row] {
        var rows: [Row] = []
        var spsc = try spsc8()
        spsc8Peers(&spsc, python: python)
        rows += try spsc.run(runs: runs)
        rows += try mpmc(python: python).run(runs: contendedRuns)
        for size in [64, 4096, 65536] {
            let r = try spscBytes(size).run(runs: runs)
            rows += r + bandwidthRows(r, bytes: size)
        }
        rows += try crossProcess(python: python).run(runs: runs) + boostUnavailable()
        rows += try crossProcessCodable(python: python).run(runs: runs)
        rows += try pipes(python: python).run(runs: runs)
        for contest in try crossProcess4K(python: python) {
            let r = try contest.run(runs: runs)
            rows += r + bandwidthRows(r, bytes: 4096)
        }
        rows += syscalls()
        return rows
    }

    /// Moves `n` values from a producer thread (this one) to a consumer thread, pinned apart;
    /// messages per second. `consume` returns a figure of what it got (the value, a batch's sum, a
    /// message's length), which must add up to `expected`, as the C rings check their sums: a
    /// queue that lost, doubled or changed a message fails the run instead of reporting a figure.
    func threadPair(
        _ n: Int, expected: Int, produce: @escaping @Sendable (Int) throws -> Void,
        consume: @escaping @Sendable () throws -> Int
    ) throws -> Double {
        let start = now()
        let got = Counter()
        let consumer = Multiprocessing.Thread {
            try pinned(to: 1) {
                var sum = 0
                for _ in 0..<n { sum &+= try consume() }
                got.value = sum
            }
        }
        try consumer.start()
        // After the start: the consumer would inherit this thread's pinning.
        try pinned(to: 0) {
            for i in 0..<n { try produce(i) }
            try consumer.join()
        }
        let rate = Double(n) / (Double(now() - start) / 1e9)
        try expectSum(got.value, expected)
        return rate
    }

    static let batchesOf64 = "engine Queue<Int>, batches of 64"
    static let lanes = "engine Queue<Int>, per-producer lanes"
    static let lanesBatchesOf64 = "engine Queue<Int>, per-producer lanes, batches of 64"
    static let lanesFixed64 = "engine Queue<Fixed64>, per-producer lanes"

    private func spsc8() throws -> Contest {
        let n = threadMessages
        var contest = Contest(
            suite: "queue", caseName: "SPSC 8 B, 2 threads", metric: "throughput", unit: "msg/s", higherIsBetter: true)
        let q = try Queue<Int>(capacity: 1 << 20)
        let sum = indexSum(n)
        contest.add("engine Queue<Int>") {
            try threadPair(n, expected: sum, produce: { try q.put($0) }, consume: { try q.get() })
        }
        let lanes = try Queue<Int>(capacity: 1 << 20, ordering: .perProducer)
        contest.add(Self.lanes) {
            try threadPair(n, expected: sum, produce: { try lanes.put($0) }, consume: { try lanes.get() })
        }
        let batch = Array(0..<64)
        for ordering in [QueueOrdering.causal, .perProducer] {
            let batches = try Queue<Int>(capacity: 1 << 20, ordering: ordering)
            contest.add(ordering == .causal ? Self.batchesOf64 : Self.lanesBatchesOf64) {
                // `n` messages each way, 64 to a put(contentsOf:) and up to 64 to a get(max:).
                try threadPair(
                    n / 64, expected: n / 64 * indexSum(64), produce: { _ in try batches.put(contentsOf: batch) },
                    consume: { try getBatch(batches) }) * 64
            }
        }
        contest.add("engine ring (from C)") { try checked(bench_engine_spsc(Int64(n)), "engine ring") }
        contest.add("C reference SPSC ring") { bench_reference_spsc(Int64(n)) }
        contest.add("C Vyukov MPMC ring, 1×1") { try checked(bench_vyukov_ring(1, 1, Int64(n)), "Vyukov ring") }
        return contest
    }

    /// A batch of 64 through `get(max:)` (which may hand it over in parts): the sum of its values.
    func getBatch(_ q: Queue<Int>) throws -> Int {
        var (got, sum) = (0, 0)
        while got < 64 {
            let part = try q.get(max: 64 - got)
            got += part.count
            sum &+= part.reduce(0, &+)
        }
        return sum
    }

    /// A C contest's rate, or an error if it lost a message (it returns -1 then).
    private func checked(_ rate: Double, _ name: String) throws -> Double {
        guard rate > 0 else { throw BenchError.peer("\(name) lost messages") }
        return rate
    }

    private func spscBytes(_ size: Int) throws -> Contest {
        let n = max(1000, threadMessages / 2 / max(1, size / 64))
        var contest = Contest(
            suite: "queue", caseName: "SPSC \(size < 1024 ? "\(size) B" : "\(size / 1024) KiB"), 2 threads",
            metric: "throughput", unit: "msg/s", higherIsBetter: true)
        let q = try Queue<[UInt8]>(capacity: 4 << 20)
        let message = [UInt8](repeating: 1, count: size)
        contest.add("engine Queue<[UInt8]>") {
            try threadPair(n, expected: n * size, produce: { _ in try q.put(message) }, consume: { try q.get().count })
        }
        return contest
    }

    /// A forked producer puts `n` messages; this process gets them: messages per second. The two
    /// are pinned apart (the child to CPU slot 1, this thread to slot 0), as Boost's peer is: left
    /// to the scheduler, the same build ran either at 30-40 M or at 10-12 M msg/s from run to run.
    /// `figure` of each message got (its index, its length) must add up to `expected`, as in threadPair.
    func processPair<E: Sendable>(
        _ q: Queue<E>, _ n: Int, _ make: @escaping (Int) -> E, figure: (E) -> Int, expected: Int
    ) throws -> Double {
        let start = now()
        let producer = Multiprocessing.Process { try pinned(to: 1) { for i in 0..<n { try q.put(make(i)) } } }
        try producer.start()
        let sum = try pinned(to: 0) {
            var sum = 0
            for _ in 0..<n { sum &+= figure(try q.get()) }
            return sum
        }
        try producer.join()
        let elapsed = Double(now() - start) / 1e9
        try expectClean([producer])
        try expectSum(sum, expected)
        return Double(n) / elapsed
    }

    private func crossProcess(python: PythonPeers) throws -> Contest {
        let n = processMessages
        var contest = Contest(
            suite: "queue", caseName: "cross-process Queue, 64 B fixed-size", metric: "throughput", unit: "msg/s",
            higherIsBetter: true)
        let q = try Queue<Fixed64>(maxSize: 65536)
        contest.add("engine Queue<Fixed64>") {
            try processPair(q, n, Fixed64.init, figure: \.index, expected: indexSum(n))
        }
        let lanes = try Queue<Fixed64>(ordering: .perProducer)
        contest.add(Self.lanesFixed64) {
            try processPair(lanes, n, Fixed64.init, figure: \.index, expected: indexSum(n))
        }
        let pn = pythonProcessMessages
        contest.add("Python multiprocessing.Queue") { try python.measure("mp-queue", [String(pn), "64"]) }
        contest.add("Python multiprocessing.SimpleQueue") { try python.measure("mp-simplequeue", [String(pn), "64"]) }
        if bench_boost_available() == 1 {
            // Its capacity in messages as the engine queue's maxSize; a mutex and two conditions per message.
            contest.add(Self.boostQueue) { try boostPair(n / 2) }
        }
        return contest
    }

    static let boostQueue = "Boost.Interprocess message_queue"

    /// Boost's `message_queue` between a forked producer and this process, 64-byte messages, as
    /// many in flight as the engine row's `maxSize`: messages per second.
    func boostPair(_ n: Int) throws -> Double {
        try checked(bench_boost_message_queue(Int64(n), 64, 65536), "Boost message_queue")
    }

    /// The Boost row of a build without Boost's headers: it says so rather than leaving the row out.
    private func boostUnavailable() -> [Row] {
        guard bench_boost_available() == 0 else { return [] }
        return [
            Row(
                suite: "queue", caseName: "cross-process Queue, 64 B fixed-size", impl: Self.boostQueue,
                metric: "throughput", unit: "msg/s", samples: [], higherIsBetter: true,
                note: "no Boost: make deps installs libboost-dev")
        ]
    }

    private func crossProcessCodable(python: PythonPeers) throws -> Contest {
        let n = processMessages / 2
        var contest = Contest(
            suite: "queue", caseName: "cross-process Queue, Codable ~64 B", metric: "throughput", unit: "msg/s",
            higherIsBetter: true)
        let q = try Queue<Record64>(maxSize: 65536)
        contest.add("engine Queue<Record64>") {
            try processPair(q, n, Record64.init, figure: \.sequence, expected: indexSum(n))
        }
        let pn = pythonProcessMessages
        contest.add("Python multiprocessing.Queue") { try python.measure("mp-queue-object", [String(pn)]) }
        return contest
    }

    private func pipes(python: PythonPeers) throws -> Contest {
        let n = quick ? 50_000 : 500_000
        var contest = Contest(
            suite: "queue", caseName: "cross-process Pipe, 64 B", metric: "throughput", unit: "msg/s",
            higherIsBetter: true)
        let (reader, writer) = try Pipe.make(duplex: false)
        let message = [UInt8](repeating: 3, count: 64)
        contest.add("engine Pipe") {
            let start = now()
            let producer = Multiprocessing.Process { for _ in 0..<n { try writer.sendBytes(message) } }
            try producer.start()
            var bytes = 0
            for _ in 0..<n { bytes += try reader.receiveBytes().count }
            try producer.join()
            let elapsed = Double(now() - start) / 1e9
            try expectClean([producer])
            try expectSum(bytes, n * message.count)
            return Double(n) / elapsed
        }
        let pn = pythonProcessMessages
        contest.add("Python multiprocessing.Pipe") { try python.measure("mp-pipe", [String(pn), "64"]) }
        return contest
    }

    /// System calls per put+get pair with nobody asleep (one thread puts then gets).
    private func syscalls() -> [Row] {
        let n = 1_000_000
        guard let base = countSyscalls(probe: "queue", iterations: 1),
            let loaded = countSyscalls(probe: "queue", iterations: 1 + n)
        else {
            return [
                Row(
                    suite: "queue", caseName: "syscalls, no sleeper", impl: "engine Queue<Int>",
                    metric: "syscalls per put+get", unit: "calls", samples: [], higherIsBetter: false,
                    note: "strace unavailable")
            ]
        }
        let per = Double(max(0, loaded - base)) / Double(n)
        return [
            Row(
                suite: "queue", caseName: "syscalls, no sleeper", impl: "engine Queue<Int>",
                metric: "syscalls per put+get", unit: "calls", samples: [per], higherIsBetter: false,
                note: per == 0 ? "target 0: met" : "target 0: MISSED")
        ]
    }
}
