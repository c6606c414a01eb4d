import DistributedDemoWorkers
import Foundation
import Logging
import Multiprocessing
import PostgresNIO
import Testing

@testable import MultiprocessingDistributed

@Suite("durable queue on a real PostgreSQL", .enabled(if: hasServer, "MP_PG_SOCKET unset: run make test-distributed"))
struct QueueTests {
    @Test func schemaIsVersionedAndMigratingTwiceDoesNothing() async throws {
        try await withDatabase { client in
            #expect(try await Schema.migrate(client) == Schema.version)
            var versions: [Int] = []
            for try await v in try await client.query("SELECT version FROM mp_schema ORDER BY version").decode(Int.self)
            {
                versions.append(v)
            }
            #expect(versions == Array(1...Schema.version))
        }
    }

    @Test func aSchemaNewerThanTheLibraryIsRefused() async throws {
        let database = "mp_schema_test_\(UInt32.random(in: 0...UInt32.max))"
        try await withDatabase(migrated: false) { client in
            try await client.query("CREATE DATABASE \(unescaped: database)")
        }
        try await withDatabase(database, migrated: false) { client in
            #expect(try await Schema.migrate(client) == 0)
            try await client.query("INSERT INTO mp_schema (version) VALUES (\(Schema.version + 1))")
            await #expect(throws: DistributedError.schemaTooNew(found: Schema.version + 1, supported: Schema.version)) {
                try await Schema.migrate(client)
            }
        }
        try await withDatabase(migrated: false) { client in
            try await client.query("DROP DATABASE \(unescaped: database)")
        }
    }

    @Test func applyMapAndImapReturnResultsByHandle() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.square, processes: 2)]) { _ in
                let handle = try await queue.applyAsync(DemoWorkers.square, 7)
                #expect(try await handle.get(timeout: .seconds(30)) == 49)
                #expect(try await handle.isReady)
                let again = queue.result(of: handle.id, as: Int.self)
                #expect(try await again.get(timeout: .zero) == 49)
                #expect(
                    try await queue.map(DemoWorkers.square, 0..<200, timeout: .seconds(60)) == (0..<200).map { $0 * $0 }
                )
                var ordered: [Int] = []
                for try await v in queue.imap(DemoWorkers.square, Array(0..<20)) { ordered.append(v) }
                #expect(ordered == (0..<20).map { $0 * $0 })
                let status = try await queue.status(of: handle.id)
                #expect(status.state == .succeeded && status.attempts == 1)
            }
        }
    }

    @Test func getTimesOutWhileNoHostServesTheQueue() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            let handle = try await queue.applyAsync(DemoWorkers.square, 3)
            await #expect(throws: DistributedError.timeout) { try await handle.get(timeout: .milliseconds(300)) }
            #expect(try await handle.status().state == .queued)
            // The task waits in the database; a host started later runs it.
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.square, processes: 1)]) { _ in
                let value = try await handle.get(timeout: .seconds(30))
                #expect(value == 9)
            }
        }
    }

    @Test func enqueueInTheCallersTransactionExistsIffItCommits() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            let logger = Logger(label: "test")
            try await client.query("CREATE TABLE IF NOT EXISTS test_orders (id bigint PRIMARY KEY, task bigint)")
            let order = Int64.random(in: 1...Int64.max)
            struct Rollback: Error {}
            var rolledBack: Int64 = 0
            do {
                try await client.withTransaction(logger: logger) { connection in
                    try await connection.query("INSERT INTO test_orders (id) VALUES (\(order))", logger: logger)
                    let handle = try await queue.applyAsync(DemoWorkers.square, 5, on: connection)
                    rolledBack = handle.id
                    throw Rollback()
                }
            } catch let error as PostgresTransactionError {
                #expect(error.closureError is Rollback)
            }
            await #expect(throws: DistributedError.unknownTask(rolledBack)) { try await queue.status(of: rolledBack) }

            let id = try await client.withTransaction(logger: logger) { connection in
                let handle = try await queue.applyAsync(DemoWorkers.square, 5, on: connection)
                try await connection.query(
                    "INSERT INTO test_orders (id, task) VALUES (\(order), \(handle.id))", logger: logger)
                return handle.id
            }
            #expect(try await queue.status(of: id).state == .queued)
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.square, processes: 1)]) { _ in
                let value = try await queue.result(of: id, as: Int.self).get(timeout: .seconds(30))
                #expect(value == 25)
            }
        }
    }

    @Test func aDelayedTaskWaitsItsDelay() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.square, processes: 1)]) { _ in
                let start = ContinuousClock.now
                let handle = try await queue.applyAsync(DemoWorkers.square, 4, delay: .seconds(1))
                #expect(try await handle.get(timeout: .seconds(30)) == 16)
                #expect(ContinuousClock.now - start >= .milliseconds(900))
            }
            await #expect(throws: DistributedError.negativeTimeout(.seconds(-1))) {
                try await queue.applyAsync(DemoWorkers.square, 4, delay: .seconds(-1))
            }
        }
    }

    @Test func aLocalWorkerDeathBecomesARetry() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            let marker = FileManager.default.temporaryDirectory.appendingPathComponent("crash-\(UUID())").path
            defer { try? FileManager.default.removeItem(atPath: marker) }
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.crashOnce, processes: 1)]) { worker in
                let handle = try await queue.applyAsync(DemoWorkers.crashOnce, marker)
                #expect(try await handle.get(timeout: .seconds(60)) == "survived")
                let status = try await handle.status()
                #expect(status.attempts == 2)
                #expect(status.error?.hasPrefix("WorkerDied") == true)
                #expect(worker.statistics.failed == 1)
            }
        }
    }

    @Test func aTaskThatKeepsFailingFailsAfterMaxAttemptsWithBackOff() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client, maxAttempts: 3)
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.alwaysFails, processes: 1)]) { _ in
                let handle = try await queue.applyAsync(DemoWorkers.alwaysFails, 1)
                do {
                    _ = try await handle.get(timeout: .seconds(60))
                    Issue.record("no error")
                } catch let error as DistributedError {
                    guard case .taskFailed(let type, _, let attempts) = error else {
                        Issue.record("unexpected \(error)")
                        return
                    }
                    #expect(attempts == 3)
                    #expect(type.contains("DemoError"))
                }
            }
        }
    }

    @Test func aHostOverAnExistingPoolRunsItsWorker() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            let pool = try ProcessPool(processes: 1, worker: DemoWorkers.square)
            let worker = DurableWorker(
                queue: queue, worker: DemoWorkers.square, pool: pool, configuration: testConfiguration())
            let host = Task { try await worker.run() }
            let value = try await queue.apply(DemoWorkers.square, 12, timeout: .seconds(30))
            #expect(value == 144)
            worker.drain()
            try await host.value
            #expect(worker.statistics.completed == 1)
        }
    }

    @Test func aNotificationEntryCarriesASmallResult() throws {
        let entry = try #require(ResultWatcher.FinishedEntry("42:1:3439"))
        #expect(entry.id == 42 && entry.result?.version == 1 && entry.result?.bytes == Array("49".utf8))
        #expect(ResultWatcher.FinishedEntry("7")?.result == nil)
        #expect(ResultWatcher.FinishedEntry("x") == nil)
    }

    @Test func retryDelaysDoubleUpToTheCap() {
        let policy = RetryPolicy(initialDelay: .milliseconds(100), maxDelay: .milliseconds(500))
        #expect((1...5).map { policy.delay(afterAttempt: $0) } == [100, 200, 400, 500, 500].map { .milliseconds($0) })
    }
}
