import DistributedDemoWorkers
import Foundation
import Logging
import Multiprocessing
import PostgresNIO
import Testing

@testable import MultiprocessingDistributed

/// The private server `make test-distributed` starts (Scripts/pg-start): its socket folder and port.
/// Without it these tests are skipped, with a note.
let serverSocket = ProcessInfo.processInfo.environment["MP_PG_SOCKET"]
let serverPort = Int(ProcessInfo.processInfo.environment["MP_PG_PORT"] ?? "") ?? 5432
let hasServer = serverSocket != nil

/// Points the forkserver at the worker host, which bootstraps the demo workers (the test runner's
/// own main cannot).
let pointedAtHost: Void = {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    var dir = String(decoding: buffer[0..<max(n, 0)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    while let last = dir.last, last != "/" { dir.removeLast() }
    // The xctest bundle sits in .build/debug/ beside the executable.
    if dir.hasSuffix(".xctest/") || dir.contains(".xctest/") {
        dir = String(dir[..<dir.range(of: ".xctest/")!.lowerBound])
        while let last = dir.last, last != "/" { dir.removeLast() }
    }
    Spawn.executable = dir + "distributed-worker"
}()

/// Runs `body` with a running client of the test server, the schema migrated.
func withDatabase<T: Sendable>(
    _ database: String = "postgres", migrated: Bool = true, _ body: @Sendable (PostgresClient) async throws -> T
) async throws -> T {
    _ = pointedAtHost
    var configuration = PostgresClient.Configuration(
        unixSocketPath: "\(serverSocket ?? "/tmp")/.s.PGSQL.\(serverPort)", username: "postgres", password: nil,
        database: database)
    configuration.options.maximumConnections = 8
    let client = PostgresClient(configuration: configuration)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { await client.run() }
        defer { group.cancelAll() }
        if migrated { try await Schema.migrate(client) }
        return try await body(client)
    }
}

/// A queue of its own for each test (the tests share the server and run in parallel).
func freshQueue(_ client: PostgresClient, maxAttempts: Int = 3) -> DurableQueue {
    DurableQueue(
        client: client, name: "test-\(UUID().uuidString.prefix(8))", maxAttempts: maxAttempts,
        pollInterval: .milliseconds(200))
}

/// A short-lease configuration, so that the failure tests take seconds.
func testConfiguration(lease: Duration = .seconds(2)) -> DurableWorker.Configuration {
    var configuration = DurableWorker.Configuration()
    configuration.lease = lease
    configuration.pollInterval = .milliseconds(200)
    configuration.reapInterval = .milliseconds(200)
    configuration.retry = RetryPolicy(initialDelay: .milliseconds(50), maxDelay: .milliseconds(500))
    return configuration
}

/// Runs `body` while a worker host serves `queue`; then drains the host and waits for it.
func withWorker<T: Sendable>(
    _ queue: DurableQueue, pools: [HostedPool], configuration: DurableWorker.Configuration = testConfiguration(),
    _ body: @Sendable (DurableWorker) async throws -> T
) async throws -> T {
    let worker = DurableWorker(queue: queue, pools: pools, configuration: configuration)
    let host = Task { try await worker.run() }
    do {
        let result = try await body(worker)
        worker.drain()
        try await host.value
        return result
    } catch {
        worker.drain()
        _ = try? await host.value
        throw error
    }
}

/// Polls `condition` every 50 ms until it holds, failing the test after `deadline`.
func eventually(
    within deadline: Duration = .seconds(30), _ what: String, _ condition: @Sendable () async throws -> Bool
) async throws {
    let end = ContinuousClock.now + deadline
    while ContinuousClock.now < end {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    Issue.record("timed out waiting for: \(what)")
    throw DistributedError.timeout
}
