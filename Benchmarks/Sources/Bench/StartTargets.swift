import Multiprocessing

/// The bench's registered entry points, for the forkserver and spawn start methods. `Bench.main`
/// hands them to `Spawn.bootstrap` before anything else runs, in the bench and in its children alike.
enum StartTargets {
    /// As trivial as the closure pool's work (x * 2), so that a pool's start is all there is to time.
    static let doubler = PoolWorker<Int, Int>("bench-doubler") { $0 &* 2 }

    /// A child whose first line tells its parent it runs: one byte on the pipe end it is given.
    static let ready = SpawnTarget<Connection>("bench-ready") { connection in
        try connection.sendBytes([1])
    }

    static let all: [any SpawnEntry] = [doubler, ready]
}
