import CMultiprocessing

/// The result of a task that runs in a pool, available later (Python's `AsyncResult`).
///
/// Returned by `applyAsync` and `mapAsync` of ``ProcessPool`` and ``ThreadPool``. Wait for it with
/// ``get(timeout:)`` or, from async code, ``value``; poll it with ``isReady``.
///
/// ```swift
/// let handle = pool.applyAsync("散步")
/// let r = try handle.get(timeout: .seconds(2))   // PoolError.timeout if not ready in 2 s
/// handle.isReady; handle.isSuccessful
/// ```
///
/// As in Python, the task's callback runs (on the pool's result thread) before the result is
/// marked ready: once ``get(timeout:)`` returns, the callback has run.
public final class AsyncResult<Value: Sendable>: @unchecked Sendable {
    /// Guards the state below; set ready once the outcome is in and the callback has run. One
    /// allocation beside the handle's own: a pool makes a handle per task.
    private let latch = ReadyLatch.make()

    // Guarded by `latch`.
    /// The task's outcome, written once.
    private var outcome: Result<Value, any Error>?
    /// The latch's flag, as seen under its lock: an async waiter registers or finds it set, never misses it.
    private var ready = false
    /// Async waiters, each resuming its continuation with the outcome.
    private var waiters: [UInt64: () -> Void]?
    private var cancelled: Set<UInt64>?
    private var nextWaiter: UInt64 = 0

    private let callback: (@Sendable (Value) -> Void)?
    private let errorCallback: (@Sendable (any Error) -> Void)?
    let delivery: DeliveryThread

    init(
        delivery: DeliveryThread, callback: (@Sendable (Value) -> Void)? = nil,
        errorCallback: (@Sendable (any Error) -> Void)? = nil
    ) {
        self.delivery = delivery
        self.callback = callback
        self.errorCallback = errorCallback
    }

    /// Whether the task has finished (and its callback has run).
    public var isReady: Bool { latch.isReady }

    /// Whether the task finished without an error; false while it is not ready (check ``isReady``).
    public var isSuccessful: Bool {
        isReady
            && latch.withLock {
                if case .success = outcome { return true }
                return false
            }
    }

    /// Waits up to `timeout` (forever when nil) for the result; returns whether it is ready. A wait
    /// that could never end throws instead: ``PoolError/calledFromCallback`` from a callback,
    /// ``PoolError/otherProcess(owner:)`` in a forked child of the pool's process (a result that
    /// was ready before the fork can still be read there).
    @discardableResult
    public func wait(timeout: Duration? = nil) throws(PoolError) -> Bool {
        // The timeout is checked first: a negative one is an error whether or not the result is in.
        let deadline = try Deadline.after(timeout, PoolError.self)
        if isReady { return true }
        try delivery.checkWaitCanEnd()
        if timeout != .zero && spinUntilReady(before: deadline) { return true }
        return latch.wait(deadline: deadline)
    }

    /// Watches the flag for a few microseconds (never past `deadline`) before sleeping: a result
    /// about to arrive (the usual case when a caller collects many) then costs no futex wake on
    /// either side.
    private func spinUntilReady(before deadline: Int64) -> Bool {
        var spinEnd: Int64 = 0
        for spin in 1... {
            if isReady { return true }
            if spin & 31 == 0 {
                let now = mp_monotonic_ns()
                if spinEnd == 0 {
                    spinEnd = min(now + 20_000, deadline)
                } else if now >= spinEnd {
                    return false
                }
            }
        }
        return false
    }

    /// The task's result, waiting up to `timeout` (forever when nil). Throws the task's error
    /// (for a ``ProcessPool``, a ``PoolError``), or ``PoolError/timeout`` if it is not ready in time.
    public func get(timeout: Duration? = nil) throws -> Value {
        guard try wait(timeout: timeout) else { throw PoolError.timeout }
        return try readyValue()
    }

    /// The outcome of a ready result (written once, before it was marked ready).
    private func readyValue() throws -> Value {
        guard let outcome = latch.withLock({ outcome }) else { preconditionFailure("not ready") }
        return try outcome.get()
    }

    /// The task's result, from async code: suspends (never blocks a thread) until it is ready.
    /// Cancelling the waiting task throws `CancellationError`; the pool's task goes on.
    public var value: Value {
        get async throws {
            if !isReady { try delivery.checkOwnersProcess() }
            let id = latch.withLock {
                nextWaiter += 1
                return nextWaiter
            }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let now = latch.withLock { () -> WaiterStart in
                        if cancelled?.remove(id) != nil { return .cancelled }
                        if ready { return .ready }
                        waiters = waiters ?? [:]
                        waiters![id] = { continuation.resume() }
                        return .wait
                    }
                    switch now {
                    case .wait: break
                    case .ready: continuation.resume()
                    case .cancelled: continuation.resume(throwing: CancellationError())
                    }
                }
            } onCancel: {
                let waiter = latch.withLock { () -> (() -> Void)? in
                    if let w = waiters?.removeValue(forKey: id) { return w }
                    if !ready {
                        cancelled = cancelled ?? []
                        cancelled!.insert(id)
                    }
                    return nil
                }
                waiter?()  // resumes; the ready check below finds no result and throws
            }
            guard isReady else { throw CancellationError() }
            return try readyValue()
        }
    }

    /// Delivers an outcome (unless one came first): runs the callback (or the error callback), then
    /// marks the result ready and wakes every waiter. Called on the pool's result thread (or, for a
    /// task that could not be submitted, on the submitting one).
    func complete(_ outcome: Result<Value, any Error>) {
        let first = latch.withLock {
            guard self.outcome == nil else { return false }
            self.outcome = outcome
            return true
        }
        guard first else { return }
        switch outcome {
        case .success(let value): callback?(value)
        case .failure(let error): errorCallback?(error)
        }
        markReady()
    }

    func complete(value: Value) { complete(.success(value)) }

    func complete(error: any Error) { complete(.failure(error)) }

    private func markReady() {
        let waiting = latch.withLock { () -> [UInt64: () -> Void]? in
            ready = true
            defer { waiters = nil }
            return waiters
        }
        latch.markReady()
        if let waiting { for resume in waiting.values { resume() } }
    }
}

/// What an async waiter found when it registered.
private enum WaiterStart { case wait, ready, cancelled }
