import Logging
import NIOCore
import PostgresNIO

/// Every statement the queue and the worker hosts run on `mp_tasks`, in one place: the table's
/// protocol (who may move a row from which state to which) is read here and nowhere else.
///
/// Time is always the database's `now()`: hosts' clocks never decide a lease or a delay.
struct TaskStore: Sendable {
    let client: PostgresClient
    let logger: Logger
    /// The longest a statement may take, its rows read, before the caller gives up on it (see
    /// ``withStatementDeadline(_:_:)``).
    var deadline: Duration = .seconds(10)
    /// Whether cancelling the caller abandons a statement as its deadline does (a waiter's reads).
    var abandonsOnCancel = false

    /// Runs `query` and hands its rows to `read`, within ``deadline``.
    private func run<T: Sendable>(
        _ query: PostgresQuery, _ read: @escaping @Sendable (PostgresRowSequence) async throws -> T
    ) async throws -> T {
        let client = client
        let logger = logger
        return try await withStatementDeadline(deadline, abandoningOnCancel: abandonsOnCancel) {
            try await read(try await client.query(query, logger: logger))
        }
    }

    // MARK: Enqueue

    /// Inserts one task per input and returns their ids, in input order. `run` runs the statement on the
    /// caller's connection (so inside its transaction) or on the pool.
    static func insert(
        queue: String, worker: String, inputs: [[UInt8]], maxAttempts: Int, delay: Duration,
        run: (PostgresQuery) async throws -> PostgresRowSequence
    ) async throws -> [Int64] {
        let buffers = inputs.map { ByteBuffer(bytes: $0) }
        let version = PayloadFormat.current.rawValue
        let rows = try await run(
            """
            INSERT INTO mp_tasks (queue, worker, payload_version, input, max_attempts, run_after)
            SELECT \(queue), \(worker), \(version), u.input, \(maxAttempts),
                now() + make_interval(secs => \(delay.seconds))
            FROM unnest(\(buffers)::bytea[]) WITH ORDINALITY AS u(input, n) ORDER BY u.n
            RETURNING id
            """)
        var ids: [Int64] = []
        ids.reserveCapacity(inputs.count)
        for try await id in rows.decode(Int64.self) { ids.append(id) }
        // The sequence hands out ids in the SELECT's order; RETURNING's own order is not promised.
        ids.sort()
        return ids
    }

    // MARK: Worker hosts

    /// Claims up to `limit` claimable tasks of `queue` whose worker is one of `workers`, for `owner`,
    /// leased for `lease`: one statement, `FOR UPDATE SKIP LOCKED` so that hosts never wait on each other.
    func claim(queue: String, workers: [String], owner: String, limit: Int, lease: Duration) async throws
        -> [ClaimedTask]
    {
        return try await run(
            """
            WITH picked AS (
                SELECT id FROM mp_tasks
                WHERE queue = \(queue) AND state = 'queued' AND run_after <= now() AND worker = ANY(\(workers))
                ORDER BY run_after, id
                LIMIT \(limit)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE mp_tasks t
            SET state = 'running', attempts = t.attempts + 1, owner = \(owner),
                -- From when the row is taken, not the statement's start (now()): a claim that waited on a lock
                -- would otherwise take tasks whose lease has already run out.
                lease_until = clock_timestamp() + make_interval(secs => \(lease.seconds))
            FROM picked WHERE t.id = picked.id
            RETURNING t.id, t.worker, t.payload_version, t.input, t.attempts
            """
        ) { rows in
            var claimed: [ClaimedTask] = []
            for try await (id, worker, version, input, attempt) in rows.decode(
                (Int64, String, Int, ByteBuffer, Int).self)
            {
                claimed.append(
                    ClaimedTask(
                        id: id, worker: worker, payloadVersion: version, input: Array(input.readableBytesView),
                        attempt: attempt))
            }
            return claimed.sorted { $0.id < $1.id }
        }
    }

    /// Extends the leases `owner` still holds on these (id, attempt) pairs; returns the ids it still
    /// holds (a missing one was reaped and perhaps claimed by another host: its result will be refused).
    func renew(owner: String, tasks: [(id: Int64, attempt: Int)], lease: Duration) async throws -> Set<Int64> {
        guard !tasks.isEmpty else { return [] }
        return try await run(
            """
            UPDATE mp_tasks t SET lease_until = now() + make_interval(secs => \(lease.seconds))
            FROM unnest(\(tasks.map(\.id))::bigint[], \(tasks.map(\.attempt))::integer[]) AS u(id, attempt)
            WHERE t.id = u.id AND t.attempts = u.attempt AND t.owner = \(owner) AND t.state = 'running'
            RETURNING t.id
            """, Self.ids(in:))
    }

    /// Stores the results of succeeded tasks, fenced: only a row still running under `owner` at the
    /// same attempt takes its result. Returns the ids that were accepted.
    func complete(owner: String, results: [(id: Int64, attempt: Int, result: [UInt8])]) async throws -> Set<Int64> {
        guard !results.isEmpty else { return [] }
        return try await run(
            """
            UPDATE mp_tasks t
            SET state = 'succeeded', result = u.result, lease_until = NULL, finished_at = now()
            FROM unnest(\(results.map(\.id))::bigint[], \(results.map(\.attempt))::integer[],
                \(results.map { ByteBuffer(bytes: $0.result) })::bytea[]) AS u(id, attempt, result)
            WHERE t.id = u.id AND t.attempts = u.attempt AND t.owner = \(owner) AND t.state = 'running'
            RETURNING t.id
            """, Self.ids(in:))
    }

    /// Records failed runs, fenced as ``complete(owner:results:)``: a retryable failure with attempts
    /// left goes back to the queue after `backoff(attempt)`, any other is failed for good.
    func fail(owner: String, failures: [(id: Int64, attempt: Int, error: String, retryable: Bool)], retry: RetryPolicy)
        async throws -> Set<Int64>
    {
        guard !failures.isEmpty else { return [] }
        let delays = failures.map { retry.delay(afterAttempt: $0.attempt).seconds }
        // PostgreSQL's text cannot hold a NUL: one in a message would make this statement fail on every
        // retry, and every failure batched with it.
        let errors = failures.map { $0.error.replacing("\u{0}", with: "\\0") }
        return try await run(
            """
            UPDATE mp_tasks t
            SET state = CASE WHEN u.retryable AND t.attempts < t.max_attempts THEN 'queued' ELSE 'failed' END,
                error = u.error, lease_until = NULL,
                owner = CASE WHEN u.retryable AND t.attempts < t.max_attempts THEN NULL ELSE t.owner END,
                run_after = now() + make_interval(secs => u.delay),
                finished_at = CASE WHEN u.retryable AND t.attempts < t.max_attempts THEN NULL ELSE now() END
            FROM unnest(\(failures.map(\.id))::bigint[], \(failures.map(\.attempt))::integer[],
                \(errors)::text[], \(failures.map(\.retryable))::boolean[],
                \(delays)::float8[]) AS u(id, attempt, error, retryable, delay)
            WHERE t.id = u.id AND t.attempts = u.attempt AND t.owner = \(owner) AND t.state = 'running'
            RETURNING t.id
            """, Self.ids(in:))
    }

    /// Returns tasks that `owner` claimed but never started to the queue, as if never claimed (a
    /// draining host's prefetched work): their attempt is not counted.
    func release(owner: String, tasks: [(id: Int64, attempt: Int)]) async throws -> Set<Int64> {
        guard !tasks.isEmpty else { return [] }
        return try await run(
            """
            UPDATE mp_tasks t
            SET state = 'queued', attempts = t.attempts - 1, owner = NULL, lease_until = NULL
            FROM unnest(\(tasks.map(\.id))::bigint[], \(tasks.map(\.attempt))::integer[]) AS u(id, attempt)
            WHERE t.id = u.id AND t.attempts = u.attempt AND t.owner = \(owner) AND t.state = 'running'
            RETURNING t.id
            """, Self.ids(in:))
    }

    /// Returns to the queue, as never claimed, the tasks running under `owner` at an attempt it does not
    /// hold (`held`): what a claim it abandoned at its deadline took when it committed after all.
    func releaseOrphans(owner: String, held: [(id: Int64, attempt: Int)]) async throws -> Set<Int64> {
        return try await run(
            """
            UPDATE mp_tasks t
            SET state = 'queued', attempts = t.attempts - 1, owner = NULL, lease_until = NULL
            WHERE t.owner = \(owner) AND t.state = 'running' AND NOT EXISTS (
                SELECT 1 FROM unnest(\(held.map(\.id))::bigint[], \(held.map(\.attempt))::integer[]) AS u(id, attempt)
                WHERE u.id = t.id AND u.attempt = t.attempts)
            RETURNING t.id
            """, Self.ids(in:))
    }

    /// Returns up to `limit` tasks whose lease expired to the queue (after `retry`'s back-off), or
    /// fails them when they used their last attempt. Any host may run it; returns how many it moved.
    func reap(limit: Int, retry: RetryPolicy) async throws -> (requeued: Int, failed: Int) {
        return try await run(
            """
            WITH expired AS (
                SELECT id FROM mp_tasks WHERE state = 'running' AND lease_until < now()
                ORDER BY lease_until LIMIT \(limit) FOR UPDATE SKIP LOCKED
            )
            UPDATE mp_tasks t
            SET state = CASE WHEN t.attempts < t.max_attempts THEN 'queued' ELSE 'failed' END,
                error = 'LeaseExpired: the lease of ' || coalesce(t.owner, '?') || ' on attempt '
                    || t.attempts || ' expired',
                owner = CASE WHEN t.attempts < t.max_attempts THEN NULL ELSE t.owner END,
                lease_until = NULL,
                -- RetryPolicy.delay(afterAttempt: attempts): doubling per attempt, capped.
                run_after = now() + make_interval(secs => least(
                    \(retry.initialDelay.seconds) * power(2::float8, least(greatest(t.attempts, 1), 64) - 1),
                    \(retry.maxDelay.seconds))),
                finished_at = CASE WHEN t.attempts < t.max_attempts THEN NULL ELSE now() END
            FROM expired WHERE t.id = expired.id
            RETURNING t.state
            """
        ) { rows in
            var requeued = 0
            var failed = 0
            for try await state in rows.decode(String.self) {
                if state == "queued" { requeued += 1 } else { failed += 1 }
            }
            return (requeued, failed)
        }
    }

    /// The ids a `RETURNING t.id` statement answered.
    @Sendable private static func ids(in rows: PostgresRowSequence) async throws -> Set<Int64> {
        var ids = Set<Int64>()
        for try await id in rows.decode(Int64.self) { ids.insert(id) }
        return ids
    }

    // MARK: Waiters

    /// The rows of these tasks (missing ids are absent from the answer).
    func status(of ids: [Int64]) async throws -> [Int64: TaskStatus] {
        return try await run(
            """
            SELECT id, state, attempts, max_attempts, owner, error, result, payload_version
            FROM mp_tasks WHERE id = ANY(\(ids))
            """
        ) { rows in
            var found: [Int64: TaskStatus] = [:]
            for try await (id, state, attempts, maxAttempts, owner, error, result, version) in rows.decode(
                (Int64, String, Int, Int, String?, String?, ByteBuffer?, Int).self)
            {
                found[id] = TaskStatus(
                    id: id, state: TaskState(rawValue: state) ?? .failed, attempts: attempts,
                    maxAttempts: maxAttempts, owner: owner, error: error,
                    result: result.map { Array($0.readableBytesView) }, payloadVersion: version)
            }
            return found
        }
    }
}

extension Duration {
    /// The duration in seconds, as PostgreSQL's `make_interval(secs =>)` takes it.
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
