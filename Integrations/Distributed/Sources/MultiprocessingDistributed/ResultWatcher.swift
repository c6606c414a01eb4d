import Logging
import PostgresNIO
import Synchronization

/// Wakes result waiters when their tasks finish: one `LISTEN mp_done` connection per queue object,
/// opened on the first wait, whose ids go to the waiters of those ids.
final class ResultWatcher: Sendable {
    /// One waiter's inbox: the ids notified since it last looked, and the bell that wakes it.
    final class Inbox: Sendable {
        let bell = Doorbell()
        private let notified = Mutex((ids: Set<Int64>(), everything: false))

        init() {}

        fileprivate func deliver(_ id: Int64?) {
            notified.withLock { if let id { $0.ids.insert(id) } else { $0.everything = true } }
        }

        /// The ids notified since the last call; nil when anything may have finished (listening anew).
        func take() -> Set<Int64>? {
            notified.withLock { state in
                defer { state = ([], false) }
                return state.everything ? nil : state.ids
            }
        }
    }

    private struct State {
        var listener: Task<Void, Never>?
        var closed = false
        /// The inboxes waiting on each task id.
        var waiting: [Int64: [ObjectIdentifier: Inbox]] = [:]
    }
    private let state = Mutex(State())
    private let client: PostgresClient
    private let logger: Logger

    init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Delivers to `inbox` (and rings it) when any of `ids` finishes, until ``unregister(_:from:)``.
    func register(_ inbox: Inbox, for ids: some Sequence<Int64>) {
        state.withLock { state in
            for id in ids { state.waiting[id, default: [:]][ObjectIdentifier(inbox)] = inbox }
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

    func unregister(_ inbox: Inbox, from ids: some Sequence<Int64>) {
        state.withLock { state in
            for id in ids {
                state.waiting[id]?[ObjectIdentifier(inbox)] = nil
                if state.waiting[id]?.isEmpty == true { state.waiting[id] = nil }
            }
        }
    }

    /// A notification's payload: the comma-separated ids that finished ("" after listening anew: all).
    private func finished(_ payload: String) {
        var woken: [ObjectIdentifier: Inbox] = [:]
        state.withLock { state in
            if payload.isEmpty {
                for inboxes in state.waiting.values {
                    for (key, inbox) in inboxes {
                        inbox.deliver(nil)
                        woken[key] = inbox
                    }
                }
                return
            }
            for part in payload.split(separator: ",") {
                guard let id = Int64(part), let inboxes = state.waiting[id] else { continue }
                for (key, inbox) in inboxes {
                    inbox.deliver(id)
                    woken[key] = inbox
                }
            }
        }
        for inbox in woken.values { inbox.bell.ring() }
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
