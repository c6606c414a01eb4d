import DistributedDemoWorkers
import Foundation
import Logging
import Multiprocessing
import MultiprocessingDistributed
import PostgresNIO
import ServiceLifecycle

/// Runs `body` with a running client.
func withClient<T: Sendable>(
    _ arguments: Arguments, connections: Int = 8, _ body: @Sendable (PostgresClient) async throws -> T
) async throws -> T {
    let client = arguments.client(connections: connections)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        return try await body(client)
    }
}

/// Migrates the schema, retrying while the server is not up yet (a test starts both at once).
func migrateWithRetry(_ client: PostgresClient, deadline: Duration = .seconds(60)) async throws {
    let end = ContinuousClock.now + deadline
    while true {
        do {
            try await Schema.migrate(client)
            return
        } catch {
            if ContinuousClock.now > end { throw error }
            try await Task.sleep(for: .milliseconds(250))
        }
    }
}

func migrate(_ arguments: Arguments) async throws {
    try await withClient(arguments) { client in try await migrateWithRetry(client) }
    print("schema at version \(Schema.version)")
}

/// A worker host: SIGTERM (or SIGINT) drains it; its statistics are its last line.
func serve(_ arguments: Arguments) async throws {
    var logger = Logger(label: "distributed-worker")
    logger.logLevel = arguments.has("verbose") ? .debug : .info
    let client = arguments.client(connections: 8)
    let migrated = Task {
        try await withClient(arguments, connections: 1) { client in try await migrateWithRetry(client) }
    }
    try await migrated.value
    let queue = DurableQueue(client: client, name: arguments.string("queue", "default"), logger: logger)
    let processes = arguments.int("processes", cpuCount)
    var configuration = DurableWorker.Configuration()
    configuration.lease = .milliseconds(arguments.int("lease-ms", 10_000))
    configuration.reapInterval = .milliseconds(arguments.int("reap-ms", 500))
    configuration.name = arguments.has("name") ? arguments.string("name", "") : nil
    let worker = DurableWorker(
        queue: queue,
        pools: [
            try HostedPool(DemoWorkers.square, processes: processes),
            try HostedPool(DemoWorkers.slowSquare, processes: processes),
            try HostedPool(DemoWorkers.crashOnce, processes: 1),
        ], configuration: configuration, logger: logger)
    print("serving owner=\(worker.owner)")
    fflush(nil)  // all streams: a script reads these lines as they come
    let group = ServiceGroup(
        configuration: .init(
            services: [
                .init(service: client),
                .init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup),
            ], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
    print("statistics owner=\(worker.owner) \(worker.statistics)")
    fflush(nil)  // all streams: a script reads these lines as they come
}

/// Enqueues `--count` tasks numbered from `--start`; with `--wait-seconds`, waits for every result
/// and checks it.
func submit(_ arguments: Arguments) async throws {
    let count = arguments.int("count", 100)
    let start = arguments.int("start", 0)
    let sleepMS = arguments.int("sleep-ms", 0)
    let workerName = arguments.string("worker", "square")
    let waitSeconds = arguments.int("wait-seconds", 0)
    let maxAttempts = arguments.int("max-attempts", 3)
    try await withClient(arguments) { client in
        try await migrateWithRetry(client)
        let queue = DurableQueue(
            client: client, name: arguments.string("queue", "default"), maxAttempts: maxAttempts,
            pollInterval: .milliseconds(500))
        var ids: [Int64] = []
        var verified = 0
        for batch in stride(from: start, to: start + count, by: 1000) {
            let values = Array(batch..<min(batch + 1000, start + count))
            if workerName == "slow-square" {
                let handles = try await queue.mapAsync(
                    DemoWorkers.slowSquare, values.map { SlowInput(value: $0, milliseconds: sleepMS) })
                ids += handles.map(\.id)
            } else {
                let handles = try await queue.mapAsync(DemoWorkers.square, values)
                ids += handles.map(\.id)
            }
        }
        print("submitted \(ids.count) tasks ids=\(ids.first ?? 0)...\(ids.last ?? 0)")
        fflush(nil)  // all streams: a script reads these lines as they come
        guard waitSeconds > 0 else { return }
        let handles = ids.map { queue.result(of: $0, as: Int.self) }
        var results: [Int] = []
        for chunk in stride(from: 0, to: handles.count, by: 2000) {
            let part = Array(handles[chunk..<min(chunk + 2000, handles.count)])
            results += try await DurableResult.all(part, timeout: .seconds(waitSeconds))
        }
        for (offset, result) in results.enumerated() where result == (start + offset) * (start + offset) {
            verified += 1
        }
        print("verified \(verified) of \(count) results")
        if verified != count { exit(3) }
    }
}
