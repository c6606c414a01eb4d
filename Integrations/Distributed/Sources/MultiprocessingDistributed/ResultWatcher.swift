import Logging
import PostgresNIO
import Synchronization

/// Wakes result waiters when their tasks finish: one `LISTEN mp_done` connection per queue object,
/// opened on the first wait, whose ids go to the waiters of those ids.
final class ResultWatcher: Sendable {
    /// One waiter's inbox: the ids notified since it last looked, and the bell that wakes it.
    final class Inbox: Sendable {
        let bell = Doorbell()
        private let notified = Mutex(Notified())

        init() {}

        fileprivate func deliver(_ entry: FinishedEntry?) {
            notified.withLock { state in
                guard let entry else { return state.everything = true }
                if let result = entry.result {
                    state.results[entry.id] = result
                } else {
                    state.ids.insert(entry.id)
                }
            }
        }

        /// What was notified since the last call; `everything` when anything may have finished
        /// (listening anew).
        func take() -> Notified {
            notified.withLock { state in
                defer { state = Notified() }
                return state
            }
        }
    }

    /// What an inbox holds: ids to read, and results that came with their notification.
    struct Notified: Sendable {
        var ids: Set<Int64> = []
        var results: [Int64: (version: Int, bytes: [UInt8])] = [:]
        var everything = false
    }

    /// One entry of an `mp_done` payload: `id`, or `id:version:hex` with the result.
    struct FinishedEntry {
        var id: Int64
        var result: (version: Int, bytes: [UInt8])?

        init?(_ text: Substring) {
            // Any role that may connect may NOTIFY this channel: an entry of colons alone splits into nothing.
            let parts = text.split(separator: ":", maxSplits: 2)
            guard let first = parts.first, let id = Int64(first) else { return nil }
            self.id = id
            if parts.count == 3, let version = Int(parts[1]), let bytes = Self.bytes(hex: parts[2]) {
                result = (version, bytes)
            }
        }

        private static func bytes(hex: Substring) -> [UInt8]? {
            let digits = Array(hex.utf8)
            guard digits.count % 2 == 0 else { return nil }
            var bytes: [UInt8] = []
            bytes.reserveCapacity(digits.count / 2)
            var index = 0
            while index < digits.count {
                guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
                bytes.append(high << 4 | low)
                index += 2
            }
            return bytes
        }

        private static func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            default: nil
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

    /// A notification's payload: the comma-separated entries of the tasks that finished ("" after
    /// listening anew: anything may have).
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
                guard let entry = FinishedEntry(part), let inboxes = state.waiting[entry.id] else { continue }
                for (key, inbox) in inboxes {
                    inbox.deliver(entry)
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
