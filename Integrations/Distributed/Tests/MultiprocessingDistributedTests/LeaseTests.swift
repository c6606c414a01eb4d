import DistributedDemoWorkers
import Foundation
import Logging
import Multiprocessing
import PostgresNIO
import Testing

@testable import MultiprocessingDistributed

@Suite("leases, the reaper and the fence", .enabled(if: hasServer, "MP_PG_SOCKET unset: run make test-distributed"))
struct LeaseTests {
    /// Claims `queue`'s tasks as `owner`, waiting up to 10 s for one to be claimable.
    func claim(_ store: TaskStore, _ queue: DurableQueue, _ owner: String, lease: Duration) async throws -> ClaimedTask
    {
        let end = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < end {
            let claimed = try await store.claim(
                queue: queue.name, workers: ["square"], owner: owner, limit: 1, lease: lease)
            if let task = claimed.first { return task }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("no claimable task in 10 s")
        throw DistributedError.timeout
    }

    @Test func anExpiredLeaseIsReapedAndTheLateCompletionIsRefused() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            let store = TaskStore(client: client, logger: Logger(label: "test"))
            let handle = try await queue.applyAsync(DemoWorkers.square, 6)
            let first = try await claim(store, queue, "host-a", lease: .milliseconds(100))
            #expect(first.id == handle.id && first.attempt == 1)
            try await Task.sleep(for: .milliseconds(300))
            // Any host's reaper may have got there first: reap until the task is back in the queue.
            try await eventually("the expired lease reaped") {
                _ = try await store.reap(limit: 100, retry: RetryPolicy(initialDelay: .zero))
                return try await handle.status().state == .queued
            }
            #expect(try await store.renew(owner: "host-a", tasks: [(first.id, 1)], lease: .seconds(10)).isEmpty)
            let second = try await claim(store, queue, "host-b", lease: .seconds(30))
            #expect(second.attempt == 2)
            let late = try await store.complete(owner: "host-a", results: [(first.id, 1, Array("1".utf8))])
            #expect(late.isEmpty, "the fence let a stale owner complete")
            let refusedFailure = try await store.fail(
                owner: "host-a", failures: [(first.id, 1, "X: late", true)], retry: RetryPolicy())
            #expect(refusedFailure.isEmpty)
            let current = try await store.complete(owner: "host-b", results: [(second.id, 2, Array("36".utf8))])
            #expect(current == [second.id])
            #expect(try await handle.get(timeout: .seconds(5)) == 36)
            #expect(try await handle.status().attempts == 2)
        }
    }

    @Test func theLastAttemptsExpiredLeaseFailsTheTask() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client, maxAttempts: 1)
            let store = TaskStore(client: client, logger: Logger(label: "test"))
            let handle = try await queue.applyAsync(DemoWorkers.square, 2)
            _ = try await claim(store, queue, "host-a", lease: .milliseconds(50))
            try await Task.sleep(for: .milliseconds(200))
            try await eventually("the expired lease reaped") {
                _ = try await store.reap(limit: 100, retry: RetryPolicy())
                return try await handle.status().state == .failed
            }
            await #expect(throws: DistributedError.self) { try await handle.get(timeout: .seconds(1)) }
            #expect(try await handle.status().error?.hasPrefix("LeaseExpired") == true)
        }
    }

    @Test func theHeartbeatKeepsALongTasksLease() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            // A 3 s task under a 1 s lease: only the heartbeat keeps it from being reaped.
            try await withWorker(
                queue, pools: [try HostedPool(DemoWorkers.slowSquare, processes: 1)],
                configuration: testConfiguration(lease: .seconds(1))
            ) { worker in
                let handle = try await queue.applyAsync(DemoWorkers.slowSquare, SlowInput(value: 3, milliseconds: 3000))
                #expect(try await handle.get(timeout: .seconds(60)) == 9)
                #expect(try await handle.status().attempts == 1)
                #expect(worker.statistics.refused == 0)
            }
        }
    }

    @Test func drainingFinishesRunningTasksAndReleasesUnstartedOnes() async throws {
        try await withDatabase { client in
            let queue = freshQueue(client)
            var configuration = testConfiguration(lease: .seconds(10))
            configuration.prefetch = 4
            let worker = DurableWorker(
                queue: queue, pools: [try HostedPool(DemoWorkers.slowSquare, processes: 1)],
                configuration: configuration)
            let handles = try await queue.mapAsync(
                DemoWorkers.slowSquare, (0..<5).map { SlowInput(value: $0, milliseconds: 700) })
            let host = Task { try await worker.run() }
            try await eventually("five tasks claimed") { worker.statistics.claimed == 5 }
            worker.drain()
            try await host.value
            let stats = worker.statistics
            #expect(stats.executed >= 1)
            #expect(stats.completed == stats.executed)
            #expect(stats.released == 5 - stats.executed)
            var succeeded = 0
            for handle in handles {
                let status = try await handle.status()
                #expect(status.state == .succeeded || (status.state == .queued && status.attempts == 0))
                if status.state == .succeeded { succeeded += 1 }
            }
            #expect(succeeded == stats.executed)
        }
    }
}
