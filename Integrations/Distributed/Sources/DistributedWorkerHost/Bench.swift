import DistributedDemoWorkers
import Foundation
import Logging
import Multiprocessing
import MultiprocessingDistributed
import PostgresNIO

/// The distributed suite's Swift side: for each local pool size, tasks per second through the
/// queue (enqueue all, wait for all) and enqueue-to-result latency (one task at a time). One JSON
/// object per line on stdout, for Scripts/bench-distributed.
func bench(_ arguments: Arguments) async throws {
    let tasks = arguments.int("tasks", 5000)
    let samples = arguments.int("latency-samples", 200)
    for processes in arguments.ints("processes", [1, 2, 4]) {
        try await withClient(arguments, connections: 12) { client in
            try await migrateWithRetry(client)
            var logger = Logger(label: "bench")
            logger.logLevel = .warning
            let queue = DurableQueue(client: client, name: "bench-\(processes)-\(getpid())", logger: logger)
            var configuration = DurableWorker.Configuration()
            configuration.lease = .seconds(30)
            let worker = DurableWorker(
                queue: queue, pools: [try HostedPool(DemoWorkers.square, processes: processes)],
                configuration: configuration, logger: logger)
            let host = Task { try await worker.run() }
            defer { host.cancel() }
            _ = try await queue.map(DemoWorkers.square, 0..<100, timeout: .seconds(60))  // warm-up

            let start = ContinuousClock.now
            var handles: [DurableResult<Int>] = []
            for batch in stride(from: 0, to: tasks, by: 1000) {
                handles += try await queue.mapAsync(DemoWorkers.square, batch..<min(batch + 1000, tasks))
            }
            let results = try await DurableResult.all(handles, timeout: .seconds(300))
            let elapsed = (ContinuousClock.now - start).seconds
            precondition(results.enumerated().allSatisfy { $0.element == $0.offset * $0.offset })

            var latencies: [Double] = []
            for n in 0..<samples {
                let sent = ContinuousClock.now
                let value = try await queue.applyAsync(DemoWorkers.square, n).get(timeout: .seconds(30))
                latencies.append((ContinuousClock.now - sent).seconds * 1000)
                precondition(value == n * n)
            }
            latencies.sort()
            worker.drain()
            try await host.value
            let row: [String: Any] = [
                "system": "swift-multiprocessing", "processes": processes, "tasks": tasks,
                "tasks_per_s": Double(tasks) / elapsed, "latency_p50_ms": latencies[latencies.count / 2],
                "latency_p99_ms": latencies[min(latencies.count - 1, latencies.count * 99 / 100)],
            ]
            let json = try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys])
            print(String(decoding: json, as: UTF8.self))
            fflush(nil)  // all streams: a script reads these lines as they come
        }
    }
}

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
