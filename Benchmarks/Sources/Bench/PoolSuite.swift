import Foundation
import Multiprocessing

/// The pool suite: trivial tasks (x * 2 on an Int) per second through the engine's ProcessPool
/// (`applyAsync` one task at a time, `map` in chunks) and ThreadPool, against Python's Pool,
/// ProcessPoolExecutor, ThreadPool and ThreadPoolExecutor. Two workers (one per core), started
/// and warmed before the clock starts, as the Python peers do.
struct PoolSuite {
    let quick: Bool
    let runs: Int

    let workers = 2
    let chunk = 10_000
    var asyncTasks: Int { quick ? 20_000 : 200_000 }
    var mapTasks: Int { quick ? 200_000 : 4_000_000 }
    var pythonAsyncTasks: Int { quick ? 5_000 : 50_000 }
    var pythonMapTasks: Int { quick ? 200_000 : 2_000_000 }

    func run(python: PythonPeers) throws -> [Row] {
        let pool = try ProcessPool(processes: workers) { (x: Int) -> Int in x &* 2 }
        defer {
            pool.close()
            _ = try? pool.join(timeout: .seconds(30))
        }
        _ = try pool.map(0..<workers)  // the workers are up
        let threads = try ThreadPool(threads: workers)
        defer {
            threads.close()
            _ = try? threads.join(timeout: .seconds(30))
        }
        var rows: [Row] = []

        var applyAsync = Contest(
            suite: "pool", caseName: "applyAsync, trivial tasks", metric: "throughput", unit: "tasks/s",
            higherIsBetter: true)
        let n = asyncTasks
        applyAsync.add("engine ProcessPool.applyAsync") {
            let start = now()
            let handles = (0..<n).map { pool.applyAsync($0) }
            for (i, h) in handles.enumerated() where try h.get() != i &* 2 { throw BenchError.peer("wrong result") }
            return Double(n) / (Double(now() - start) / 1e9)
        }
        let pn = pythonAsyncTasks
        applyAsync.add("Python Pool.apply_async") { try python.measure("pool-apply-async", [String(pn), "2"]) }
        applyAsync.add("Python ProcessPoolExecutor.submit") {
            // ~4× slower than apply_async: a quarter of the tasks keeps its runs as long.
            try python.measure("process-pool-executor", [String(pn / 4), "2"])
        }
        rows += try applyAsync.run(runs: runs)

        var map = Contest(
            suite: "pool", caseName: "map, trivial tasks", metric: "throughput", unit: "tasks/s", higherIsBetter: true)
        let items = Array(0..<mapTasks)
        map.add("engine ProcessPool.map") {
            let start = now()
            let out = try pool.map(items, chunkSize: chunk)
            let rate = Double(items.count) / (Double(now() - start) / 1e9)
            guard out.count == items.count, out.last == items.last.map({ $0 &* 2 }) else {
                throw BenchError.peer("map lost results")
            }
            return rate
        }
        let pm = pythonMapTasks
        map.add("Python Pool.map") { try python.measure("pool-map", [String(pm), "2", String(chunk)]) }
        rows += try map.run(runs: runs)

        var threadTasks = Contest(
            suite: "pool", caseName: "ThreadPool applyAsync, trivial tasks", metric: "throughput", unit: "tasks/s",
            higherIsBetter: true)
        threadTasks.add("engine ThreadPool.applyAsync") {
            let start = now()
            let handles = (0..<n).map { i in threads.applyAsync { i &* 2 } }
            for (i, h) in handles.enumerated() where try h.get() != i &* 2 { throw BenchError.peer("wrong result") }
            return Double(n) / (Double(now() - start) / 1e9)
        }
        threadTasks.add("Python ThreadPool.apply_async") { try python.measure("thread-pool", [String(pn), "2"]) }
        threadTasks.add("Python ThreadPoolExecutor.submit") {
            try python.measure("thread-pool-executor", [String(pn), "2"])
        }
        rows += try threadTasks.run(runs: runs)
        return rows
    }
}
