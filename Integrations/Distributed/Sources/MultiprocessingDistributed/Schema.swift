import Logging
import PostgresNIO

/// The tables, indexes and triggers the distributed pool keeps in PostgreSQL, created and migrated by
/// the library: ``migrate(_:logger:)`` applies, in one transaction under an advisory lock, every
/// migration the database has not seen, and records each in `mp_schema`. Hosts of different versions
/// can share a database as long as none is older than the schema (it then refuses to start with
/// ``DistributedError/schemaTooNew(found:supported:)``).
///
/// Version 1, table `mp_tasks`, one row per task:
///
/// | column | meaning |
/// |---|---|
/// | `id` | `bigserial`: the task's handle |
/// | `queue` | the ``DurableQueue``'s name |
/// | `worker` | the ``Multiprocessing/PoolWorker``'s registered name |
/// | `payload_version` | the ``PayloadFormat`` of `input` and `result` |
/// | `input`, `result` | the encoded input; the encoded output once succeeded |
/// | `state` | `queued`, `running`, `succeeded` or `failed` |
/// | `attempts`, `max_attempts` | claims so far; the limit |
/// | `run_after` | not claimed before this time (delays, retry back-off) |
/// | `lease_until`, `owner` | while running: who holds it, until when (renewed by heartbeat) |
/// | `error` | the last failure, as `type: message` |
///
/// Version 2 adds the triggers that `NOTIFY` on commit: `mp_queued` (payload: the queue) when a
/// task becomes claimable, `mp_done` (payload: comma-separated ids) when one finishes. Version 3
/// carries a result of up to 64 bytes in its `mp_done` entry (`id:payload_version:hex`).
public enum Schema {
    /// The newest schema version this library knows.
    public static let version = migrations.count

    /// The migrations, in order: version `n` is `migrations[n - 1]`, its statements run one by one
    /// (the extended protocol takes one statement a query). Never edit one that shipped: add one.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE mp_tasks (
                id bigserial PRIMARY KEY,
                queue text NOT NULL,
                worker text NOT NULL,
                payload_version integer NOT NULL,
                input bytea NOT NULL,
                state text NOT NULL DEFAULT 'queued'
                    CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
                attempts integer NOT NULL DEFAULT 0,
                max_attempts integer NOT NULL CHECK (max_attempts >= 1),
                run_after timestamptz NOT NULL DEFAULT now(),
                lease_until timestamptz,
                owner text,
                result bytea,
                error text,
                created_at timestamptz NOT NULL DEFAULT now(),
                finished_at timestamptz
            )
            """,
            "CREATE INDEX mp_tasks_claimable ON mp_tasks (queue, run_after, id) WHERE state = 'queued'",
            "CREATE INDEX mp_tasks_leases ON mp_tasks (lease_until) WHERE state = 'running'",
        ],
        [
            """
            CREATE FUNCTION mp_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                q text;
                ids text;
            BEGIN
                FOR q IN SELECT DISTINCT queue FROM mp_new_rows WHERE state = 'queued' LOOP
                    PERFORM pg_notify('mp_queued', q);
                END LOOP;
                -- Chunks of 500 ids keep each payload under NOTIFY's 8000-byte limit.
                FOR ids IN
                    SELECT string_agg(id::text, ',') FROM (
                        SELECT id, (row_number() OVER ()) / 500 AS chunk FROM mp_new_rows
                        WHERE state IN ('succeeded', 'failed')
                    ) finished GROUP BY chunk
                LOOP
                    PERFORM pg_notify('mp_done', ids);
                END LOOP;
                RETURN NULL;
            END
            $$
            """,
            """
            CREATE TRIGGER mp_tasks_notify_insert AFTER INSERT ON mp_tasks
                REFERENCING NEW TABLE AS mp_new_rows FOR EACH STATEMENT EXECUTE FUNCTION mp_tasks_notify()
            """,
            """
            CREATE TRIGGER mp_tasks_notify_update AFTER UPDATE ON mp_tasks
                REFERENCING NEW TABLE AS mp_new_rows FOR EACH STATEMENT EXECUTE FUNCTION mp_tasks_notify()
            """,
        ],
        [
            // Version 3: a small result rides in its notification (`id:version:hex`), so that a
            // waiter has it without reading the row; a failure or a large result sends the id alone.
            """
            CREATE OR REPLACE FUNCTION mp_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                q text;
                entries text;
            BEGIN
                FOR q IN SELECT DISTINCT queue FROM mp_new_rows WHERE state = 'queued' LOOP
                    PERFORM pg_notify('mp_queued', q);
                END LOOP;
                -- Chunks of 40 entries of at most 160 bytes stay under NOTIFY's 8000-byte limit.
                FOR entries IN
                    SELECT string_agg(entry, ',') FROM (
                        SELECT CASE WHEN state = 'succeeded' AND length(result) <= 64
                            THEN id || ':' || payload_version || ':' || encode(result, 'hex')
                            ELSE id::text END AS entry,
                            (row_number() OVER ()) / 40 AS chunk
                        FROM mp_new_rows WHERE state IN ('succeeded', 'failed')
                    ) finished GROUP BY chunk
                LOOP
                    PERFORM pg_notify('mp_done', entries);
                END LOOP;
                RETURN NULL;
            END
            $$
            """
        ],
    ]

    /// Brings the database's schema to ``version``; safe to call from every host at once (the first
    /// migrates, the others wait on the lock and find nothing to do). Returns the version found before.
    @discardableResult
    public static func migrate(_ client: PostgresClient, logger: Logger = Logger(label: "mp.distributed"))
        async throws(DistributedError) -> Int
    {
        try await translatingErrors {
            try await client.withTransaction(logger: logger) { connection in
                try await migrate(on: connection, logger: logger)
            }
        }
    }

    private static func migrate(on connection: PostgresConnection, logger: Logger) async throws -> Int {
        // One lock id for this library: concurrent migrators serialize; it ends with the transaction.
        try await connection.query("SELECT pg_advisory_xact_lock(7170017)", logger: logger)
        try await connection.query(
            "CREATE TABLE IF NOT EXISTS mp_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
            logger: logger)
        var found = 0
        for try await v in try await connection.query("SELECT coalesce(max(version), 0) FROM mp_schema", logger: logger)
            .decode(Int.self)
        {
            found = v
        }
        guard found <= version else { throw DistributedError.schemaTooNew(found: found, supported: version) }
        for next in stride(from: found + 1, through: version, by: 1) {
            logger.info("migrating the distributed pool's schema", metadata: ["version": "\(next)"])
            for statement in migrations[next - 1] {
                try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            try await connection.query("INSERT INTO mp_schema (version) VALUES (\(next))", logger: logger)
        }
        return found
    }
}
