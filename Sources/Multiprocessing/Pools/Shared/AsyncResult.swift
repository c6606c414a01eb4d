import CMultiprocessing
import Synchronization

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
    /// One allocation holds the lock, the ready event and the value: a pool makes a handle per task.
    /// The value sits in raw memory, typed by `Value` alone, so that no field of a type built from
    /// `Value` (an `Optional`, a `Result`) makes the unspecialized code look up generic metadata.
    private let storage: UnsafeMutableRawPointer
    private static var valueOffset: Int {
        let header = MemoryLayout<mp_mutex_t>.stride + MemoryLayout<mp_event_t>.stride
        let alignment = MemoryLayout<Value>.alignment
        return (header + alignment - 1) / alignment * alignment
    }
    private var mutex: UnsafeMutablePointer<mp_mutex_t> { storage.assumingMemoryBound(to: mp_mutex_t.self) }
    /// Set once the outcome is ready (after the callbacks): what blocking waiters sleep on.
    private var readyEvent: UnsafeMutablePointer<mp_event_t> {
        (storage + MemoryLayout<mp_mutex_t>.stride).assumingMemoryBound(to: mp_event_t.self)
    }
    private var valueSlot: UnsafeMutablePointer<Value> {
        (storage + Self.valueOffset).assumingMemoryBound(to: Value.self)
    }

    // Guarded by `mutex`.
    private var state = Outcome.pending
    private var error: (any Error)?
    private var ready = false
    /// Async waiters, each resuming its continuation with the outcome (non-generic closures).
    private var waiters: [UInt64: () -> Void]?
    private var cancelled: Set<UInt64>?
    private var nextWaiter: UInt64 = 0

    private enum Outcome { case pending, value, error }

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
        storage = .allocate(
            byteCount: Self.valueOffset + MemoryLayout<Value>.size, alignment: max(16, MemoryLayout<Value>.alignment))
        mp_mutex_init(mutex, 0)
        mp_event_init(readyEvent, 0)
    }

    deinit {
        if state == .value { valueSlot.deinitialize(count: 1) }
        storage.deallocate()
    }

    @inline(__always)
    private func locked<R>(_ body: () -> R) -> R {
        _ = mp_mutex_lock(mutex, Int64(MP_FOREVER))
        defer { _ = mp_mutex_unlock(mutex) }
        return body()
    }

    /// Whether the task has finished (and its callback has run).
    public var isReady: Bool { mp_event_is_set(readyEvent) != 0 }

    /// Whether the task finished without an error; false while it is not ready (check ``isReady``).
    public var isSuccessful: Bool { isReady && locked { state == .value } }

    /// Waits up to `timeout` (forever when nil) for the result; returns whether it is ready.
    @discardableResult
    public func wait(timeout: Duration? = nil) throws(PoolError) -> Bool {
        if isReady { return true }
        if delivery.isCurrent { throw .calledFromCallback }
        var ns = Int64(MP_FOREVER)
        if let timeout {
            do { ns = try timeoutNanoseconds(timeout) } catch { throw .negativeTimeout(timeout) }
        }
        if ns != 0 && spinUntilReady() { return true }
        return mp_event_wait(readyEvent, ns) == MP_OK
    }

    /// Watches the flag for a few microseconds before sleeping: a result about to arrive (the usual
    /// case when a caller collects many) then costs no futex wake on either side.
    private func spinUntilReady() -> Bool {
        var deadline: Int64 = 0
        for spin in 1... {
            if isReady { return true }
            if spin & 31 == 0 {
                let now = mp_monotonic_ns()
                if deadline == 0 {
                    deadline = now + 20_000
                } else if now >= deadline {
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

    /// The outcome of a ready result (written once, before the ready event was set).
    private func readyValue() throws -> Value {
        if let error = locked({ state == .error ? error : nil }) { throw error }
        return valueSlot.pointee
    }

    /// The task's result, from async code: suspends (never blocks a thread) until it is ready.
    /// Cancelling the waiting task throws `CancellationError`; the pool's task goes on.
    public var value: Value {
        get async throws {
            let id = locked {
                nextWaiter += 1
                return nextWaiter
            }
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                    let now = locked { () -> WaiterStart in
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
                let waiter = locked { () -> (() -> Void)? in
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

    /// Delivers a value (unless an outcome came first): runs the callback, then marks the result
    /// ready and wakes every waiter. Called on the pool's result thread.
    func complete(value: Value) {
        let first = locked {
            guard state == .pending else { return false }
            valueSlot.initialize(to: value)
            state = .value
            return true
        }
        guard first else { return }
        callback?(value)
        markReady()
    }

    /// Delivers an error (unless an outcome came first); see ``complete(value:)``.
    func complete(error: any Error) {
        let first = locked {
            guard state == .pending else { return false }
            self.error = error
            state = .error
            return true
        }
        guard first else { return }
        errorCallback?(error)
        markReady()
    }

    func complete(_ outcome: Result<Value, any Error>) {
        switch outcome {
        case .success(let value): complete(value: value)
        case .failure(let error): complete(error: error)
        }
    }

    private func markReady() {
        let waiting = locked { () -> [UInt64: () -> Void]? in
            ready = true
            defer { waiters = nil }
            return waiters
        }
        mp_event_set(readyEvent)
        if let waiting { for resume in waiting.values { resume() } }
    }
}

/// What an async waiter found when it registered.
private enum WaiterStart { case wait, ready, cancelled }
