import Multiprocessing

/// A local ``Multiprocessing/ProcessPool`` that a ``DurableWorker`` feeds: the tasks of one
/// registered worker name, decoded here, run in the pool's processes, encoded back.
public struct HostedPool: Sendable {
    /// The registered name of the worker the pool runs: the tasks the host claims for it.
    public let workerName: String
    /// How many tasks run at once (the pool's processes).
    public let processes: Int
    let run: @Sendable (ClaimedTask) async -> TaskOutcome
    let stop: @Sendable () -> Void

    /// A forkserver pool of `processes` workers (``Multiprocessing/cpuCount``, the host's size, when
    /// nil) running `worker`. The program must bootstrap `worker` first thing in `main`
    /// (``Multiprocessing/Spawn/bootstrap(_:)-(SpawnEntry...)``).
    public init<Input, Output>(_ worker: PoolWorker<Input, Output>, processes: Int? = nil) throws(PoolError) {
        self.init(worker, pool: try ProcessPool(processes: processes, worker: worker))
    }

    /// Hosts an existing pool running `worker`. The ``DurableWorker`` terminates it when it stops.
    public init<Input, Output>(_ worker: PoolWorker<Input, Output>, pool: ProcessPool<Input, Output>) {
        workerName = worker.name
        processes = pool.processes
        stop = { pool.terminate() }
        run = { task in
            let input: Input
            do {
                input = try PayloadFormat.of(version: task.payloadVersion).decode(Input.self, from: task.input)
            } catch {
                // No attempt can decode it: failing at once spares the retries.
                return .failed(error: "DecodingError: \(error)", retryable: false)
            }
            let output: Output
            do {
                output = try await pool.run(input)
            } catch let error as PoolError {
                if case .workerDied = error { return .failed(error: "WorkerDied: \(error)", retryable: true) }
                return .failed(error: "PoolError: \(error)", retryable: true)
            } catch {
                return .failed(error: "\(String(reflecting: type(of: error))): \(error)", retryable: true)
            }
            do {
                return .succeeded(result: try PayloadFormat.current.encode(output))
            } catch {
                // An output the format cannot hold (NaN in JSON) fails every run alike: spare the retries.
                return .failed(error: "EncodingError: \(error)", retryable: false)
            }
        }
    }
}
