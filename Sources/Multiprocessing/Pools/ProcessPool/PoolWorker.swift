/// A pool's work function registered by name, for the forkserver and spawn start methods: the
/// worker process finds it by `name`. Register it with ``Spawn/bootstrap(_:)-(SpawnEntry...)``
/// first thing in `main`, like any ``SpawnTarget``.
///
/// ```swift
/// let doubler = PoolWorker<Int, Int>("doubler") { $0 * 2 }
/// Spawn.bootstrap(doubler)
/// let pool = try ProcessPool(processes: 4, worker: doubler)   // forkserver workers
/// ```
public struct PoolWorker<Input: Codable & Sendable, Output: Codable & Sendable>: SpawnEntry {
    /// The name the worker process looks the worker up by: unique within the program, the same in
    /// the parent and the child.
    public let name: String
    let initializer: (@Sendable () throws -> Void)?
    let work: @Sendable (Input) throws -> Output

    /// A worker named `name` (unique within the program) running `work`, after `initializer`.
    public init(
        _ name: String, initializer: (@Sendable () throws -> Void)? = nil,
        work: @escaping @Sendable (Input) throws -> Output
    ) {
        self.name = name
        self.initializer = initializer
        self.work = work
    }

    /// Runs the worker loop in a pool's worker process (called by ``Spawn/bootstrap(_:)-(SpawnEntry...)``,
    /// not by user code): connects to the pool named in `argument` and runs tasks until told to stop.
    public func runSpawned(argument: [UInt8]) async throws {
        let argument = try SpawnCoding.decode(PoolWorkerArgument.self, from: argument)
        let channels = try PoolChannels(handle: argument.channels)
        WorkerLoop(
            channels: channels, index: argument.index, maxTasks: argument.maxTasks, initializer: initializer, work: work
        ).run()
    }
}

extension PoolWorker: ChildPreparing {
    func prepareChildren() {
        _ = TypeFingerprint.of(PoolWorkerArgument.self)
        _ = (TypeFingerprint.of(Input.self), TypeFingerprint.of([Input].self))
        _ = (TypeFingerprint.of(Output.self), TypeFingerprint.of([Output].self))
        WorkerLoop<Input, Output>.warmUp()
    }
}

struct PoolWorkerArgument: Codable, Sendable {
    var channels: PoolChannels.Handle
    var index: Int
    var maxTasks: Int?
}
