import CBenchPeers
import Dispatch
import Foundation
import Multiprocessing

/// The queue suite's cases beyond SPSC: MPMC between threads, the hand-offs Swift offers out of the
/// box (DispatchQueue, AsyncStream), 4 KiB across processes, and bytes per second.
extension QueueSuite {
    /// SPSC 8 B peers that are not rings: a serial DispatchQueue receiving one block per message, an
    /// AsyncStream fed by a thread and drained by a task, and Python's queue.Queue.
    func spsc8Peers(_ contest: inout Contest, python: PythonPeers) {
        // The peers move 10-100× fewer messages per second: fewer messages keep each run near a second.
        let n = peerMessages
        contest.add("DispatchQueue hand-off") {
            let queue = DispatchQueue(label: "bench.consumer")
            let received = Counter()
            let start = now()
            for _ in 0..<n { queue.async { received.value += 1 } }
            queue.sync {}
            guard received.value == n else { throw BenchError.peer("dispatch lost messages") }
            return Double(n) / (Double(now() - start) / 1e9)
        }
        contest.add("AsyncStream") {
            let (stream, continuation) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .unbounded)
            let start = now()
            let producer = Multiprocessing.Thread {
                for i in 0..<n { continuation.yield(i) }
                continuation.finish()
            }
            try producer.start()
            let received = blockingAwait {
                var count = 0
                for await _ in stream { count += 1 }
                return count
            }
            try producer.join()
            guard received == n else { throw BenchError.peer("AsyncStream lost messages") }
            return Double(n) / (Double(now() - start) / 1e9)
        }
        let pn = pythonThreadMessages
        contest.add("Python queue.Queue") { try python.measure("thread-queue", [String(pn), "1", "1"]) }
    }

    static let vyukovRing = "C Vyukov MPMC ring (futex eventcount)"

    /// Two producer threads and two consumer threads on one queue.
    func mpmc(python: PythonPeers) throws -> Contest {
        let n = threadMessages / 2 * 2
        var contest = Contest(
            suite: "queue", caseName: "MPMC 8 B, 2×2 threads", metric: "throughput", unit: "msg/s",
            higherIsBetter: true)
        for ordering in [QueueOrdering.causal, .perProducer] {
            let q = try Queue<Int>(capacity: 1 << 20, ordering: ordering)
            contest.add(ordering == .causal ? "engine Queue<Int>" : QueueSuite.lanes) {
                let start = now()
                let sums = [Counter(), Counter()]
                let threads =
                    (0..<2).map { _ in Multiprocessing.Thread { for i in 0..<(n / 2) { try q.put(i) } } }
                    + sums.map { got in
                        Multiprocessing.Thread {
                            var sum = 0
                            for _ in 0..<(n / 2) { sum &+= try q.get() }
                            got.value = sum
                        }
                    }
                for t in threads { try t.start() }
                for t in threads { _ = try t.join() }
                let rate = Double(n) / (Double(now() - start) / 1e9)
                // Each producer puts 0..<n/2: the two consumers' sums add up to twice that.
                try expectSum(sums[0].value + sums[1].value, 2 * indexSum(n / 2))
                return rate
            }
        }
        // The fair peer: a C MPMC ring that sleeps on a futex as the engine does, rather than spins.
        contest.add(Self.vyukovRing) {
            let rate = bench_vyukov_ring(2, 2, Int64(n))
            guard rate > 0 else { throw BenchError.peer("Vyukov ring lost messages") }
            return rate
        }
        let pn = pythonThreadMessages
        contest.add("Python queue.Queue") { try python.measure("thread-queue", [String(pn), "2", "2"]) }
        return contest
    }

    /// 4 KiB messages from a forked producer, through the engine's Queue and Pipe and Python's.
    func crossProcess4K(python: PythonPeers) throws -> [Contest] {
        let n = quick ? 20_000 : 200_000
        let pn = quick ? 10_000 : 100_000
        let message = [UInt8](repeating: 5, count: 4096)
        var queueContest = Contest(
            suite: "queue", caseName: "cross-process Queue, 4 KiB", metric: "throughput", unit: "msg/s",
            higherIsBetter: true)
        let q = try Queue<[UInt8]>(maxSize: 4096, capacity: 8 << 20)
        queueContest.add("engine Queue<[UInt8]>") {
            try processPair(q, n, { _ in message }, figure: \.count, expected: n * message.count)
        }
        queueContest.add("Python multiprocessing.Queue") { try python.measure("mp-queue", [String(pn), "4096"]) }
        queueContest.add("Python multiprocessing.SimpleQueue") {
            try python.measure("mp-simplequeue", [String(pn), "4096"])
        }
        var pipeContest = Contest(
            suite: "queue", caseName: "cross-process Pipe, 4 KiB", metric: "throughput", unit: "msg/s",
            higherIsBetter: true)
        let (reader, writer) = try Pipe.make(duplex: false)
        pipeContest.add("engine Pipe") {
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
        pipeContest.add("Python multiprocessing.Pipe") { try python.measure("mp-pipe", [String(pn), "4096"]) }
        return [queueContest, pipeContest]
    }
}

/// The same figures in bytes per second, for the cases whose messages have a known size.
func bandwidthRows(_ rows: [Row], bytes: Int) -> [Row] {
    rows.map { r in
        var b = r
        b.caseName = r.caseName + ", bytes/s"
        b.metric = "bandwidth"
        b.unit = "B/s"
        b.samples = r.samples.map { $0 * Double(bytes) }
        return b
    }
}
