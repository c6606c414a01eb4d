import Logging
import Synchronization

/// Stores the outcomes of a host's runs in batches: one fenced statement per batch for the results
/// and one for the failures, so that a host's round trips per task stay well under one. An outcome
/// the database cannot take now (the server restarting) waits and is sent again.
final class Completer: Sendable {
    private struct State {
        var successes: [(id: Int64, attempt: Int, result: [UInt8])] = []
        var failures: [(id: Int64, attempt: Int, error: String, retryable: Bool)] = []
        var flushing = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    private let bell = Doorbell()
    private let store: TaskStore
    private let owner: String
    private let retry: RetryPolicy
    private let leases: LeaseBook
    private let statistics: Locked<WorkerStatistics>
    private let logger: Logger

    init(
        store: TaskStore, owner: String, retry: RetryPolicy, leases: LeaseBook, statistics: Locked<WorkerStatistics>,
        logger: Logger
    ) {
        self.store = store
        self.owner = owner
        self.retry = retry
        self.leases = leases
        self.statistics = statistics
        self.logger = logger
    }

    func add(_ task: ClaimedTask, _ outcome: TaskOutcome) {
        state.withLock { state in
            switch outcome {
            case .succeeded(let result): state.successes.append((task.id, task.attempt, result))
            case .failed(let error, let retryable): state.failures.append((task.id, task.attempt, error, retryable))
            }
        }
        bell.ring()
    }

    /// Sends batches as outcomes arrive, until cancelled.
    func run() async {
        while !Task.isCancelled {
            await bell.wait(upTo: .seconds(1))
            await flush()
        }
    }

    /// Returns once every outcome added so far is stored (or `deadline` passed).
    func drain(until deadline: ContinuousClock.Instant) async {
        while ContinuousClock.now < deadline {
            let idle = state.withLock { !$0.flushing && $0.successes.isEmpty && $0.failures.isEmpty }
            if idle { return }
            bell.ring()
            await pauseIgnoringCancellation(for: .milliseconds(20))
        }
        logger.warning("drain deadline passed with outcomes not stored: their leases will expire and they rerun")
    }

    private func flush() async {
        while true {
            let (successes, failures) = state.withLock { state in
                defer {
                    state.successes = []
                    state.failures = []
                    state.flushing = true
                }
                return (state.successes, state.failures)
            }
            if successes.isEmpty && failures.isEmpty {
                state.withLock { $0.flushing = false }
                return
            }
            // Each statement on its own: results stored are recorded even if the failures' statement
            // fails (sent again they would be refused by the fence and counted as lost leases).
            var unsent = (successes: successes[..<0], failures: failures[..<0])
            do {
                let completed = try await store.complete(owner: owner, results: successes)
                record(successes.map { ($0.id, $0.attempt) }, accepted: completed, as: \.completed)
            } catch {
                logger.warning("storing results failed, retrying", metadata: ["error": "\(error)"])
                unsent.successes = successes[...]
            }
            do {
                let failed = try await store.fail(owner: owner, failures: failures, retry: retry)
                record(failures.map { ($0.id, $0.attempt) }, accepted: failed, as: \.failed)
            } catch {
                logger.warning("storing failures failed, retrying", metadata: ["error": "\(error)"])
                unsent.failures = failures[...]
            }
            if !unsent.successes.isEmpty || !unsent.failures.isEmpty {
                // Put them back in front and try again: the fence makes a second try harmless.
                state.withLock { [unsent] state in
                    state.successes.insert(contentsOf: unsent.successes, at: 0)
                    state.failures.insert(contentsOf: unsent.failures, at: 0)
                    state.flushing = false
                }
                await pauseIgnoringCancellation(for: .milliseconds(250))
                if Task.isCancelled { return }
            }
        }
    }

    private func record(
        _ sent: [(id: Int64, attempt: Int)], accepted: Set<Int64>, as counter: WritableKeyPath<WorkerStatistics, Int>
    ) {
        var refused = 0
        for (id, attempt) in sent where !accepted.contains(id) {
            refused += 1
            logger.warning(
                "outcome refused by the fence: the lease was lost",
                metadata: ["task": "\(id)", "attempt": "\(attempt)", "owner": "\(owner)"])
        }
        leases.remove(sent)
        statistics.withLock {
            $0[keyPath: counter] += sent.count - refused
            $0.refused += refused
        }
    }
}

/// The (id, attempt) pairs this host holds leases on: claimed and not yet stored. The heartbeat
/// renews them.
final class LeaseBook: Sendable {
    private let held = Mutex([Int64: Int]())

    init() {}

    func add(_ tasks: [ClaimedTask]) { held.withLock { for t in tasks { $0[t.id] = t.attempt } } }

    /// Forgets these attempts' leases. Only the same attempt: a stale copy of a task that this host
    /// claimed again (its lease lost in an outage) must not drop the new attempt's lease.
    func remove(_ attempts: [(id: Int64, attempt: Int)]) {
        held.withLock { for (id, attempt) in attempts where $0[id] == attempt { $0[id] = nil } }
    }

    var all: [(id: Int64, attempt: Int)] { held.withLock { $0.map { ($0.key, $0.value) } } }
}

/// A value behind a lock, shared by reference (`Mutex` itself cannot be shared: it is not copyable).
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>

    init(_ value: Value) { mutex = Mutex(value) }

    func withLock<R: Sendable>(_ body: (inout Value) -> R) -> R { mutex.withLock { body(&$0) } }
}
