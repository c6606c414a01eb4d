import Logging
import PostgresNIO
import Synchronization

/// Wakes result waiters when their tasks finish: one `LISTEN mp_done` connection per queue object,
/// opened on the first wait, whose ids ring the doorbells of those waiting on them.
final class ResultWatcher: Sendable {
    private struct State {
        var listener: Task<Void, Never>?
        var closed = false
        /// The doorbells waiting on each task id.
        var waiting: [Int64: [ObjectIdentifier: Doorbell]] = [:]
    }
    private let state = Mutex(State())
    private let client: PostgresClient
    private let logger: Logger

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Rings `bell` when any of `ids` finishes, until ``unregister(_:from:)``.
    func register(_ bell: Doorbell, for ids: some Sequence<Int64>) {
        state.withLock { state in
            for id in ids { state.waiting[id, default: [:]][ObjectIdentifier(bell)] = bell }
            if state.listener == nil && !state.closed {
                let client = client
                let logger = logger
                // Holds the watcher until close(), which the queue's deinit calls.
                state.listener = Task {
                    await listenForever(client: client, channel: "mp_done", logger: logger) { payload in
                        self.finished(payload)
                    }
                }
            }
        }
    }

    func unregister(_ bell: Doorbell, from ids: some Sequence<Int64>) {
        state.withLock { state in
            for id in ids {
                state.waiting[id]?[ObjectIdentifier(bell)] = nil
                if state.waiting[id]?.isEmpty == true { state.waiting[id] = nil }
            }
        }
    }

    /// A notification's payload: the comma-separated ids that finished ("" after listening anew: all).
    private func finished(_ payload: String) {
        let bells: [Doorbell] = state.withLock { state in
            if payload.isEmpty { return state.waiting.values.flatMap(\.values) }
            return payload.split(separator: ",").flatMap { id in
                Int64(id).flatMap { state.waiting[$0].map { Array($0.values) } } ?? []
            }
        }
        var rung = Set<ObjectIdentifier>()
        for bell in bells where rung.insert(ObjectIdentifier(bell)).inserted { bell.ring() }
    }

    /// Stops listening.
    func close() {
        let listener = state.withLock { state in
            state.closed = true
            defer { state.listener = nil }
            return state.listener
        }
        listener?.cancel()
    }
}
