import Multiprocessing

/// The handle of a task in a ``DurableQueue``: its id, and its result once a worker host stores it
/// (Python's `AsyncResult`, kept in the database: any process may wait on it by id).
public struct DurableResult<Output: Decodable & Sendable>: Sendable {
    /// The task's id, its row's primary key.
    public let id: Int64
    let queue: DurableQueue

    init(id: Int64, queue: DurableQueue) {
        self.id = id
        self.queue = queue
    }

    /// The task's row now.
    public func status() async throws(DistributedError) -> TaskStatus { try await queue.status(of: id) }

    /// Whether the task has finished (succeeded or failed for good).
    public var isReady: Bool {
        get async throws(DistributedError) { try await status().state.isFinished }
    }

    /// The task's result, waiting up to `timeout` (forever when nil). Throws
    /// ``DistributedError/taskFailed(type:message:attempts:)`` when it failed on its last attempt,
    /// ``DistributedError/timeout`` when it did not finish in time (it goes on).
    public func get(timeout: Duration? = nil) async throws(DistributedError) -> Output {
        try await Self.all([self], timeout: timeout)[0]
    }

    /// The results of `handles`, in order, waiting up to `timeout` (forever when nil) for all; throws
    /// the first failure found. One query per wake-up for all of them, however many.
    public static func all(_ handles: [DurableResult], timeout: Duration?) async throws(DistributedError) -> [Output] {
        guard let queue = handles.first?.queue else { return [] }
        if let timeout, timeout < .zero { throw .negativeTimeout(timeout) }
        let deadline = timeout.map { ContinuousClock.now + $0 }
        var outputs = [Output?](repeating: nil, count: handles.count)
        var pending: [Int64: [Int]] = [:]
        for (index, handle) in handles.enumerated() { pending[handle.id, default: []].append(index) }
        let inbox = ResultWatcher.Inbox()
        queue.watcher.register(inbox, for: pending.keys)
        defer { queue.watcher.unregister(inbox, from: handles.map(\.id)) }
        var lastFullRead = ContinuousClock.now
        var toRead: Set<Int64>? = nil  // nil: every pending id
        var delivered: [Int64: (version: Int, bytes: [UInt8])] = [:]
        while true {
            // Results that came with their notification need no read.
            for (id, result) in delivered {
                guard let indices = pending.removeValue(forKey: id) else { continue }
                let output = try PayloadFormat.of(version: result.version).decode(Output.self, from: result.bytes)
                for index in indices { outputs[index] = output }
            }
            if pending.isEmpty { return outputs.map { $0! } }
            // Registered before reading: a task finishing after this read is delivered to the inbox.
            // After a notification only the notified ids are read; all of them at each poll.
            let ids = toRead.map { Array($0.filter { pending[$0] != nil }) } ?? Array(pending.keys)
            if toRead == nil { lastFullRead = .now }
            let rows: [Int64: TaskStatus]
            do {
                // The read is bounded by the caller's deadline (not only by the store's own), given a
                // second at least (a zero timeout still reads once), and ends when the caller is cancelled.
                var store = queue.store
                store.abandonsOnCancel = true
                if let deadline { store.deadline = min(store.deadline, max(.seconds(1), deadline - .now)) }
                rows = ids.isEmpty ? [:] : try await translatingErrors { [store] in try await store.status(of: ids) }
            } catch {
                // The server restarting, or out of reach for a while (the read's deadline passed): the
                // task is safe in it; ask again, until the caller's deadline or cancellation.
                switch error {
                case .database, .timeout: break
                default: throw error
                }
                if let deadline, ContinuousClock.now >= deadline { throw error }
                if Task.isCancelled { throw .closed }
                try? await Task.sleep(for: deadline.map { min(queue.pollInterval, $0 - .now) } ?? queue.pollInterval)
                toRead = nil
                continue
            }
            for id in ids {
                guard let indices = pending[id] else { continue }
                guard let row = rows[id] else { throw .unknownTask(id) }
                switch row.state {
                case .succeeded:
                    let format = try PayloadFormat.of(version: row.payloadVersion)
                    let output = try format.decode(Output.self, from: row.result ?? [])
                    for index in indices { outputs[index] = output }
                    pending[id] = nil
                case .failed:
                    throw row.failure
                case .queued, .running:
                    continue
                }
            }
            if pending.isEmpty { return outputs.map { $0! } }
            var wait = queue.pollInterval
            if let deadline {
                let left = deadline - .now
                if left <= .zero { throw .timeout }
                wait = min(wait, left)
            }
            if Task.isCancelled { throw .closed }
            let sinceFull = ContinuousClock.now - lastFullRead
            if sinceFull < queue.pollInterval {
                await inbox.bell.wait(upTo: min(wait, queue.pollInterval - sinceFull))
            }
            let notified = inbox.take()
            var notifiedIDs = notified.ids
            if queue.takesResultsFromNotifications {
                delivered = notified.results
            } else {
                notifiedIDs.formUnion(notified.results.keys)  // read from the row: the sender is unknown
            }
            toRead =
                notified.everything || ContinuousClock.now - lastFullRead >= queue.pollInterval ? nil : notifiedIDs
        }
    }
}

extension TaskStatus {
    /// The error a waiter on this failed task gets.
    var failure: DistributedError {
        let text = error ?? "unknown: no error was recorded"
        guard let colon = text.firstIndex(of: ":") else {
            return .taskFailed(type: "Error", message: text, attempts: attempts)
        }
        let message = text[text.index(after: colon)...].drop { $0 == " " }
        return .taskFailed(type: String(text[..<colon]), message: String(message), attempts: attempts)
    }
}
