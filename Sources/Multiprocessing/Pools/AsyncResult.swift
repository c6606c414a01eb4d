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
    /// One allocation for the lock and the ready event: a pool makes one handle per task.
    private let sync: UnsafeMutableRawPointer
    private var mutex: UnsafeMutablePointer<mp_mutex_t> { sync.assumingMemoryBound(to: mp_mutex_t.self) }
    /// Set once the outcome is ready (after the callbacks): what blocking waiters sleep on.
    private var readyEvent: UnsafeMutablePointer<mp_event_t> {
        (sync + MemoryLayout<mp_mutex_t>.stride).assumingMemoryBound(to: mp_event_t.self)
    }
    // Guarded by `mutex`.
    private var outcome: Result<Value, any Error>?
    private var ready = false
    private var waiters: [UInt64: CheckedContinuation<Value, any Error>]?
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
        sync = .allocate(byteCount: MemoryLayout<mp_mutex_t>.stride + MemoryLayout<mp_event_t>.stride, alignment: 16)
        mp_mutex_init(mutex, 0)
        mp_event_init(readyEvent, 0)
    }

    deinit { sync.deallocate() }

    @inline(__always)
    private func locked<R>(_ body: () -> R) -> R {
        _ = mp_mutex_lock(mutex, Int64(MP_FOREVER))
        defer { _ = mp_mutex_unlock(mutex) }
        return body()
    }

    /// Whether the task has finished (and its callback has run).
    public var isReady: Bool { mp_event_is_set(readyEvent) != 0 }

    /// Whether the task finished without an error; false while it is not ready (check ``isReady``).
    public var isSuccessful: Bool {
        guard isReady else { return false }
        return locked {
            if case .success = outcome { return true }
            return false
        }
    }

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
        return try locked { outcome! }.get()
    }

    /// The task's result, from async code: suspends (never blocks a thread) until it is ready.
    /// Cancelling the waiting task throws `CancellationError`; the pool's task goes on.
    public var value: Value {
        get async throws {
            let id = locked {
                nextWaiter += 1
                return nextWaiter
            }
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Value, any Error>) in
                    let now = locked { () -> Result<Value, any Error>? in
                        if cancelled?.remove(id) != nil { return .failure(CancellationError()) }
                        if ready { return outcome! }
                        waiters = waiters ?? [:]
                        waiters![id] = continuation
                        return nil
                    }
                    if let now { continuation.resume(with: now) }
                }
            } onCancel: {
                let waiter = locked { () -> CheckedContinuation<Value, any Error>? in
                    if let c = waiters?.removeValue(forKey: id) { return c }
                    if !ready {
                        cancelled = cancelled ?? []
                        cancelled!.insert(id)
                    }
                    return nil
                }
                waiter?.resume(throwing: CancellationError())
            }
        }
    }

    /// Delivers the outcome (the first one wins): runs the callback, then marks the result ready
    /// and wakes every waiter. Called on the pool's result thread.
    @discardableResult
    func complete(_ outcome: Result<Value, any Error>) -> Bool {
        let first = locked {
            if self.outcome != nil { return false }
            self.outcome = outcome
            return true
        }
        guard first else { return false }
        switch outcome {
        case .success(let value): callback?(value)
        case .failure(let error): errorCallback?(error)
        }
        let waiting = locked { () -> [UInt64: CheckedContinuation<Value, any Error>]? in
            ready = true
            defer { waiters = nil }
            return waiters
        }
        mp_event_set(readyEvent)
        if let waiting { for waiter in waiting.values { waiter.resume(with: outcome) } }
        return true
    }
}

/// The thread that delivers a pool's results and runs its callbacks: a blocking wait on it could
/// never end, so waits check for it.
final class DeliveryThread: Sendable {
    private let tid = Atomic<Int32>(0)

    /// Called by the result thread when it starts.
    func adoptCurrent() { tid.store(mp_thread_id(), ordering: .relaxed) }

    var isCurrent: Bool { tid.load(ordering: .relaxed) == mp_thread_id() }
}
