import Foundation
import Multiprocessing

/// The start suite: how soon a new process does work, for each start method of the engine and of
/// Python. A pool of 2 workers from its creation to its first result, and one child from `start()`
/// to its first line (a byte on a pipe). The servers are running before the clock starts (the
/// contest's warm-up run starts the engine's forkserver, the Python peer starts its own with a
/// throwaway), so a forkserver figure is the start of a worker, not of its server.
///
/// The forkserver rows come first: it is the default start method for registered targets, and the
/// table compares the first engine row with each Python row.
struct StartSuite {
    let quick: Bool
    let runs: Int

    let workers = 2
    /// One pool or child takes a few ms, too short for a sample alone: a run averages many.
    var pools: Int { quick ? 3 : 10 }
    var children: Int { quick ? 10 : 40 }
    /// Spawn starts the program again for every process (tens of ms): fewer keep a run short.
    var spawnedPools: Int { quick ? 1 : 3 }
    var spawnedChildren: Int { quick ? 2 : 10 }

    func run(python: PythonPeers) throws -> [Row] {
        try poolFirstResult(python: python).run(runs: runs) + childFirstLine(python: python).run(runs: runs)
    }

    private func poolFirstResult(python: PythonPeers) -> Contest {
        var contest = Contest(
            suite: "start", caseName: "pool creation → first result, \(workers) workers",
            metric: "time to first result", unit: "ms", higherIsBetter: false)
        let (n, spawned, workers) = (pools, spawnedPools, workers)
        let worker = StartTargets.doubler
        contest.add("engine ProcessPool, PoolWorker forkserver") {
            try meanFirstResult(n) { try ProcessPool(processes: workers, worker: worker) }
        }
        contest.add("engine ProcessPool, closure (zygote)") {
            try meanFirstResult(n) { try ProcessPool(processes: workers) { (x: Int) -> Int in x &* 2 } }
        }
        contest.add("engine ProcessPool, PoolWorker fork (zygote)") {
            try meanFirstResult(n) { try ProcessPool(processes: workers, startMethod: .fork, worker: worker) }
        }
        contest.add("engine ProcessPool, PoolWorker spawn") {
            try meanFirstResult(spawned) { try ProcessPool(processes: workers, startMethod: .spawn, worker: worker) }
        }
        for (method, count) in [("fork", n), ("forkserver", n), ("spawn", spawned)] {
            contest.add("Python Pool(\(workers)), \(method)") {
                try python.measure("pool-start", [method, String(count), String(workers)])
            }
        }
        return contest
    }

    private func childFirstLine(python: PythonPeers) -> Contest {
        var contest = Contest(
            suite: "start", caseName: "a child process runs its first line", metric: "time to first line", unit: "ms",
            higherIsBetter: false)
        let (n, spawned) = (children, spawnedChildren)
        contest.add("engine Process, SpawnTarget forkserver") {
            try meanFirstLine(n) { Multiprocessing.Process(target: StartTargets.ready, argument: $0) }
        }
        contest.add("engine Process, closure fork") {
            try meanFirstLine(n) { writer in Multiprocessing.Process { try writer.sendBytes([1]) } }
        }
        contest.add("engine Process, SpawnTarget spawn") {
            try meanFirstLine(spawned) {
                Multiprocessing.Process(target: StartTargets.ready, argument: $0, startMethod: .spawn)
            }
        }
        for (method, count) in [("fork", n), ("forkserver", n), ("spawn", spawned)] {
            contest.add("Python Process, \(method)") { try python.measure("child-start", [method, String(count)]) }
        }
        return contest
    }
}

/// Mean ms from making a pool to its first `apply` result, over `count` pools one after another.
/// Closing and joining each pool is off the clock: the case is how soon a new pool does work.
func meanFirstResult(_ count: Int, _ makePool: () throws -> ProcessPool<Int, Int>) throws -> Double {
    var elapsed: UInt64 = 0
    for _ in 0..<count {
        let start = now()
        let pool = try makePool()
        let first = try pool.apply(21)
        elapsed += now() - start
        pool.close()
        guard try pool.join(timeout: .seconds(30)) else { throw BenchError.peer("a pool did not end in 30 s") }
        guard first == 42 else { throw BenchError.peer("a new pool answered \(first) for 21 * 2") }
    }
    return Double(elapsed) / Double(count) / 1e6
}

/// Mean ms from `start()` to the child's first byte on a pipe, over `count` children one after
/// another; `makeChild` is given the pipe's sending end. Joining each child is off the clock.
func meanFirstLine(_ count: Int, _ makeChild: (Connection) -> Multiprocessing.Process) throws -> Double {
    let (reader, writer) = try Pipe.make(duplex: false)
    defer {
        reader.close()
        writer.close()
    }
    var elapsed: UInt64 = 0
    for _ in 0..<count {
        let child = makeChild(writer)
        let start = now()
        try child.start()
        guard try reader.poll(timeout: .seconds(30)) else { throw BenchError.peer("\(child.name) did not run in 30 s") }
        _ = try reader.receiveBytes()
        elapsed += now() - start
        try child.join(timeout: .seconds(30))
        try expectClean([child])
    }
    return Double(elapsed) / Double(count) / 1e6
}
