import DistributedDemoWorkers
import Foundation
import Logging
import Multiprocessing
import PostgresNIO
import Synchronization
import Testing

@testable import MultiprocessingDistributed

/// Faults found by a review of the durable pool, one test each.
@Suite(
    "durable pool faults", .serialized, .enabled(if: hasServer, "MP_PG_SOCKET unset: run make test-distributed"))
struct DurableFaultTests {
    /// Runs `body` with a client of a fresh database of its own (migrated), dropped afterwards: no other
    /// test's host reaps or claims there.
    func withPrivateDatabase<T: Sendable>(_ body: @Sendable (PostgresClient) async throws -> T) async throws -> T {
        let database = "mp_fault_\(UInt32.random(in: 0...UInt32.max))"
        try await withDatabase(migrated: false) { client in
            _ = try await client.query("CREATE DATABASE \(unescaped: database)")
        }
        let drop: @Sendable () async throws -> Void = {
            try await withDatabase(migrated: false) { client in
                _ = try await client.query("DROP DATABASE IF EXISTS \(unescaped: database) WITH (FORCE)")
            }
        }
        do {
            let result = try await withDatabase(database, body)
            try await drop()
            return result
        } catch {
            try? await drop()
            throw error
        }
    }

    /// A unix socket that takes connections and never answers: a server gone silent (a dead route, a
    /// stopped machine), as a client sees it. Returns its folder; the socket is `.s.PGSQL.5432`.
    func silentServer() throws -> (folder: String, fd: Int32) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("mp-silent-\(UUID())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array("\(folder)/.s.PGSQL.5432".utf8CString)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, c) in path.enumerated() { raw[i] = UInt8(bitPattern: c) }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0 && listen(fd, 64) == 0)
        return (folder, fd)
    }

    /// Runs `body` with a running client of the silent server.
    func withSilentClient<T: Sendable>(_ body: @Sendable (PostgresClient) async throws -> T) async throws -> T {
        let (folder, fd) = try silentServer()
        defer {
            close(fd)
            try? FileManager.default.removeItem(atPath: folder)
        }
        var configuration = PostgresClient.Configuration(
            unixSocketPath: "\(folder)/.s.PGSQL.5432", username: "postgres", password: nil, database: "postgres")
        // Never given up by the client: as a statement on an established connection whose route died.
        configuration.options.connectTimeout = .seconds(300)
        let client = PostgresClient(configuration: configuration)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await client.run() }
            defer { group.cancelAll() }
            return try await body(client)
        }
    }

    // MARK: Notifications

    /// Any role that can connect may `NOTIFY mp_done`: an entry that is only colons split into no parts,
    /// and the watcher indexed the first: every waiter's process crashed (index out of range).
    @Test func aGarbledDoneNotificationIsIgnoredNotACrash() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            let handle = try await queue.applyAsync(DemoWorkers.square, 3)
            let waiter = Task { try await handle.get(timeout: .seconds(3)) }
            for _ in 0..<20 {
                try await client.query("SELECT pg_notify('mp_done', ':,::,\(handle.id):,\(handle.id)::zz')")
                try await Task.sleep(for: .milliseconds(100))
            }
            await #expect(throws: DistributedError.timeout) { try await waiter.value }
        }
    }

    /// A result carried in an `mp_done` entry is taken unread (the shortest wait), and any role that
    /// may connect may send one: by default a task no host ever ran, still `queued`, "returns" 1234
    /// to its waiter. A queue made with `takesResultsFromNotifications: false` reads the row instead.
    @Test(arguments: [true, false])
    func aForgedDoneNotificationIsTakenOnlyWhereResultsFromNotificationsAre(takes: Bool) async throws {
        try await withDatabase { client in
            let queue = DurableQueue(
                client: client, name: "test-\(UUID().uuidString.prefix(8))", pollInterval: .milliseconds(200),
                takesResultsFromNotifications: takes)
            let handle = try await queue.applyAsync(DemoWorkers.square, 3)
            let waiter = Task { try await handle.get(timeout: .seconds(3)) }
            let forged = "\(handle.id):1:" + "1234".utf8.map { String($0, radix: 16) }.joined()
            for _ in 0..<20 {
                _ = try await client.query("SELECT pg_notify('mp_done', \(forged))")
                try await Task.sleep(for: .milliseconds(100))
            }
            let answer = await waiter.result
            if takes {
                #expect(try answer.get() == 1234)  // the documented trust: every role that may connect
            } else {
                #expect(throws: DistributedError.timeout) { try answer.get() }
            }
            #expect(try await handle.status().state == .queued)
        }
    }

    // MARK: Storing outcomes

    /// A worker error whose message holds a NUL byte: PostgreSQL's text refuses it, so the failure
    /// statement failed on every retry, and every failure batched with it after. The task stayed
    /// `running` forever (its lease renewed), the waiter hung, and other tasks' failures were never stored.
    @Test func aNULInAnErrorMessageDoesNotWedgeTheHostsFailures() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client, maxAttempts: 1)
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.failsSaying, processes: 1)]) { worker in
                let poisoned = try await queue.applyAsync(DemoWorkers.failsSaying, "bad\u{0}byte")
                do {
                    _ = try await poisoned.get(timeout: .seconds(15))
                    Issue.record("no error")
                } catch let error as DistributedError {
                    guard case .taskFailed(_, let message, let attempts) = error else {
                        Issue.record("unexpected \(error); the row: \(try await poisoned.status().state)")
                        return
                    }
                    #expect(attempts == 1 && message.hasPrefix("bad") && message.hasSuffix("byte"))
                }
                // A failure after it is stored too.
                let plain = try await queue.applyAsync(DemoWorkers.failsSaying, "plain")
                await #expect(
                    throws: DistributedError.taskFailed(
                        type: String(reflecting: DemoMessage.self), message: "plain", attempts: 1)
                ) {
                    try await plain.get(timeout: .seconds(15))
                }
                #expect(worker.statistics.refused == 0)
            }
        }
    }

    /// An output the payload format cannot encode (NaN in JSON) fails the same way on every run, as an
    /// input that cannot be decoded does; it was retried as if the work function had thrown, so the
    /// work ran `maxAttempts` times for nothing.
    @Test func anOutputThatCannotBeEncodedIsNotRetried() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client, maxAttempts: 3)
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.notANumber, processes: 1)]) { worker in
                let handle = try await queue.applyAsync(DemoWorkers.notANumber, 1)
                do {
                    _ = try await handle.get(timeout: .seconds(30))
                    Issue.record("no error")
                } catch let error as DistributedError {
                    guard case .taskFailed(let type, _, let attempts) = error else {
                        Issue.record("unexpected \(error)")
                        return
                    }
                    #expect(attempts == 1, "\(type)")
                }
                #expect(worker.statistics.executed == 1)
            }
        }
    }

    // MARK: Waiters and deadlines

    /// A waiter's read of its rows ran under the store's own 10 s statement deadline whatever the
    /// caller's: `get(timeout: 1 s)` against a server gone silent returned after 10 s.
    @Test func aWaitersDeadlineBoundsItsReadOfAnUnreachableServer() async throws {
        try await withSilentClient { client in
            let queue = DurableQueue(client: client, name: "silent", pollInterval: .milliseconds(200))
            let start = ContinuousClock.now
            await #expect(throws: DistributedError.timeout) {
                try await queue.result(of: 1, as: Int.self).get(timeout: .seconds(1))
            }
            let took = ContinuousClock.now - start
            #expect(took < .seconds(5), "get(timeout: 1 s) took \(took)")
        }
    }

    /// `get()` waits forever (the task is safe in the database while it is out of reach) yet the
    /// statement deadline's `.timeout` ended it after 10 s; and a cancelled waiter must end.
    @Test func aWaiterWithoutDeadlineOutlastsAnUnreachableServerAndEndsOnCancel() async throws {
        try await withSilentClient { client in
            let queue = DurableQueue(client: client, name: "silent", pollInterval: .milliseconds(200))
            let ended = Atomic<Bool>(false)
            let waiter = Task {
                defer { ended.store(true, ordering: .relaxed) }
                return try await queue.result(of: 1, as: Int.self).get()
            }
            try await Task.sleep(for: .seconds(13))
            let endedEarly = ended.load(ordering: .relaxed)
            #expect(!endedEarly, "get() without a timeout gave up")
            waiter.cancel()
            let cancelledAt = ContinuousClock.now
            do {
                _ = try await waiter.value
                Issue.record("no error")
            } catch {
                #expect(error as? DistributedError == .closed)
            }
            let took = ContinuousClock.now - cancelledAt
            #expect(took < .seconds(5), "the cancelled waiter took \(took) to end")
        }
    }

    // MARK: Claiming

    /// A claim statement that outlives the store's 10 s client-side deadline is abandoned by the host,
    /// not by the server: when it commits, its tasks are `running` under a host that never heard of
    /// them. No heartbeat renews them; the reaper takes them after the lease, an attempt spent on a
    /// run that never happened (with `maxAttempts` 1 the task failed without ever running).
    @Test func aClaimAbandonedAtItsDeadlineDoesNotSpendTheTasksAttempt() async throws {
        try await withPrivateDatabase { client in
            let queue = freshQueue(client, maxAttempts: 1)
            let handle = try await queue.applyAsync(DemoWorkers.square, 5)
            // The host's first claim waits on this lock past its deadline, then commits.
            let locked = Atomic<Bool>(false)
            let locker = Task {
                try await client.withTransaction(logger: Logger(label: "test")) { connection in
                    try await connection.query("LOCK TABLE mp_tasks IN EXCLUSIVE MODE", logger: Logger(label: "test"))
                    locked.store(true, ordering: .relaxed)
                    try await Task.sleep(for: .seconds(12))
                }
            }
            try await eventually("the table locked") { locked.load(ordering: .relaxed) }
            try await withWorker(queue, pools: [try HostedPool(DemoWorkers.square, processes: 1)]) { _ in
                try await locker.value
                #expect(try await handle.get(timeout: .seconds(30)) == 25)
                let status = try await handle.status()
                #expect(status.attempts == 1, "\(status.state) \(status.error ?? "")")
            }
        }
    }

    // MARK: Draining

    /// `drainTimeout` is "how long a graceful shutdown waits for running tasks": the host waited for
    /// a running task however long it ran. Past the deadline the task must go back to the queue.
    @Test func drainingGivesUpOnARunningTaskAfterTheDrainTimeout() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            var configuration = testConfiguration(lease: .seconds(10))
            configuration.drainTimeout = .seconds(1)
            let worker = DurableWorker(
                queue: queue, pools: [try HostedPool(DemoWorkers.slowSquare, processes: 1)],
                configuration: configuration)
            let handle = try await queue.applyAsync(DemoWorkers.slowSquare, SlowInput(value: 3, milliseconds: 40_000))
            let ended = Atomic<Bool>(false)
            let host = Task {
                defer { ended.store(true, ordering: .relaxed) }
                try await worker.run()
            }
            try await eventually("the task claimed") { worker.statistics.claimed == 1 }
            try await Task.sleep(for: .milliseconds(500))
            worker.drain()
            let stopped: Void? = try? await eventually(within: .seconds(20), "the host stopped") {
                ended.load(ordering: .relaxed)
            }
            try await host.value
            #expect(stopped != nil)
            let status = try await handle.status()
            #expect(status.state == .queued, "left \(status.state) with attempts \(status.attempts)")
        }
    }

    // MARK: Retries

    /// The reaper is documented to use the retry policy's back-off, which doubles per attempt; it
    /// used `initialDelay` on every attempt.
    @Test func aReapedTasksBackOffDoublesPerAttemptAsAFailedOnes() async throws {
        try await withPrivateDatabase { client in
            let queue = freshQueue(client, maxAttempts: 5)
            let store = TaskStore(client: client, logger: Logger(label: "test"))
            let policy = RetryPolicy(initialDelay: .seconds(1), maxDelay: .seconds(60))
            let handle = try await queue.applyAsync(DemoWorkers.square, 2)
            var backOffs: [Double] = []
            for attempt in 1...2 {
                var claimed: [ClaimedTask] = []
                let end = ContinuousClock.now + .seconds(10)
                while claimed.isEmpty && ContinuousClock.now < end {
                    try await Task.sleep(for: .milliseconds(50))
                    claimed = try await store.claim(
                        queue: queue.name, workers: ["square"], owner: "host-a", limit: 1, lease: .milliseconds(50))
                }
                #expect(claimed.first?.attempt == attempt)
                try await Task.sleep(for: .milliseconds(150))
                let reaped = try await store.reap(limit: 10, retry: policy)
                #expect(reaped.requeued == 1 && reaped.failed == 0)
                let rows = try await client.query(
                    "SELECT extract(epoch FROM run_after - now())::float8 FROM mp_tasks WHERE id = \(handle.id)")
                for try await seconds in rows.decode(Double.self) { backOffs.append(seconds) }
            }
            // The first after 1 s, the second after 2 s (RetryPolicy.delay(afterAttempt: 2)).
            #expect(backOffs.count == 2)
            #expect(backOffs.first.map { abs($0 - 1) < 0.3 } == true, "\(backOffs)")
            #expect(backOffs.last.map { abs($0 - 2) < 0.3 } == true, "\(backOffs)")
        }
    }
}
