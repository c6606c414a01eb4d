import CMultiprocessing

/// Runs blocking `body` on a helper thread and suspends until it returns (Python's
/// `asyncio.to_thread`): the event loop keeps running other coroutines meanwhile.
///
/// A task cancelled before `body` starts (also while it waits for a free helper thread) throws
/// `CancellationError`, and `body` does not run; once started, `body` runs to its end (a thread
/// cannot be interrupted), as in Python. Helper threads are made on demand, up to 64 at once (more
/// calls wait for one to be free), and leave after 30 s idle.
public func toThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try Task.checkCancellation()
    return try await BlockingPool.shared.runCancellable(body)
}

/// The helper threads behind ``toThread(_:)``: a FIFO of closures, a private semaphore counting
/// them, and threads made while the queue holds more closures than idle threads can take.
final class BlockingPool: @unchecked Sendable {
    static let shared = BlockingPool(limit: 64)

    private struct State {
        /// The process whose threads these are: a forked child inherits the counts, not the
        /// threads, and starts afresh (an idle thread of its parent's would otherwise be counted
        /// on to run its job, which then never ran).
        var pid: Int32 = 0
        var queue = FIFO<@Sendable () -> Void>()
        var idle = 0
        var threads = 0
    }

    private let limit: Int
    private let state = Locked(State())
    /// A permit per queued closure.
    private let ready = LocalSemaphore()
    private static let idleNanoseconds: Int64 = 30_000_000_000

    init(limit: Int) {
        self.limit = limit
    }

    /// Runs `body` on a helper thread; no cancellation (for work that must finish, like handing
    /// back a queue's lock).
    func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        defer { Handoff.resumed() }
        return try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<T, any Error>) in
            submit {
                let result = Result { try body() }
                Handoff.resume { c.resume(with: result) }
            }
        }
    }

    /// Runs `body` on a helper thread unless the task is cancelled before a thread takes it: a
    /// call queued behind busy threads then throws `CancellationError` at once, and its job finds
    /// nothing to do when its turn comes. Whichever of the job's start and the cancellation comes
    /// first (under `claim`'s lock) takes the continuation, and resumes it.
    func runCancellable<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        typealias Claim = (continuation: UnsafeContinuation<T, any Error>?, cancelled: Bool)
        let claim = Locked<Claim>((nil, false))
        defer { Handoff.resumed() }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (c: UnsafeContinuation<T, any Error>) in
                let queued = claim.withLock { k -> Bool in
                    if k.cancelled { return false }
                    k.continuation = c
                    return true
                }
                guard queued else { return Handoff.resume { c.resume(throwing: CancellationError()) } }
                submit {
                    guard
                        let c = claim.withLock({ k in
                            defer { k.continuation = nil }; return k.continuation
                        })
                    else {
                        return  // cancelled while queued
                    }
                    let result = Result { try body() }
                    Handoff.resume { c.resume(with: result) }
                }
            }
        } onCancel: {
            let c = claim.withLock { k in
                defer { (k.continuation, k.cancelled) = (nil, true) }
                return k.continuation
            }
            if let c { Handoff.resume { c.resume(throwing: CancellationError()) } }
        }
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        let spawn = state.withLock { s -> Bool in
            // The parent's queued jobs are its own (their continuations are awaited there).
            if s.pid != mp_process_id() { s = State(pid: mp_process_id()) }
            s.queue.append(job)
            guard s.queue.count > s.idle, s.threads < limit else { return false }
            s.threads += 1
            return true
        }
        ready.release()
        guard spawn else { return }
        let thread = Thread(name: "to_thread") { [self] in worker() }
        if (try? thread.start()) == nil {
            state.withLock { $0.threads -= 1 }  // the queued job waits for a running thread
        }
    }

    private func worker() {
        while true {
            state.withLock { $0.idle += 1 }
            let woken = ready.acquire(deadline: Deadline.after(nanoseconds: BlockingPool.idleNanoseconds))
            let job = state.withLock { s -> (@Sendable () -> Void)? in
                s.idle -= 1
                let job = s.queue.popFirst()
                if job == nil && !woken { s.threads -= 1 }
                return job
            }
            if let job {
                job()
            } else if !woken {
                return  // idle for 30 s
            }
        }
    }
}
