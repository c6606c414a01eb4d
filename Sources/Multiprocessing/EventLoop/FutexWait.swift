import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// How a wait on a futex word ended. Every outcome but `cancelled` and `shutDown` means "look
/// again": the primitives re-check their state after any wake-up, as the blocking paths do.
enum WaitOutcome: Equatable {
    case woken, changed, timedOut, cancelled, shutDown
}

extension EventLoop {
    /// Tests bind this to await shared primitives on helper threads even where the ring has futex
    /// waits (the fallback for kernels before 6.7). Task-local: it holds for the binding test's
    /// tasks (and those they start), not for the tests that run beside it.
    @TaskLocal static var futexFallback = false

    /// Suspends until the word `w` names no longer holds `w.expected`, a waker wakes it, or
    /// `deadline` (or the owner check `w.check_at`) passes: IORING_OP_FUTEX_WAIT, so one loop
    /// thread serves any number of waiters, and a waker in another process wakes them.
    nonisolated(nonsending) func waitOnWord(_ w: mp_async_wait_t, until deadline: Int64, cancellable: Bool = true) async
        -> WaitOutcome
    {
        let limit = w.check_at != 0 ? min(deadline, w.check_at) : deadline
        if cancellable && Task.isCancelled { return .cancelled }
        if !supportsFutexWait || EventLoop.futexFallback {
            return await blockingWait(w, until: limit, cancellable: cancellable)
        }
        let entry = LoopOperation.Entry.futexWait(
            word: w.word!, expected: w.expected, shared: Int32(w.shared), deadline: limit)
        var result: Int32
        let cancelRequested: Bool
        if inEventLoop {
            // In a slot: only this task's cancellation handler names the wait (see `LoopSlot`).
            result = await awaitInSlot(entry, cancellable: cancellable)
            // The loop's cancel-all may have ended it before this task's own cancel request did.
            if result == LoopOperation.shutDownResult && cancellable && Task.isCancelled { result = -ECANCELED }
            cancelRequested = cancellable && result == -ECANCELED && Task.isCancelled
        } else {
            let op = LoopOperation(entry)
            result = await op.submitAndWait(on: self, cancellable: cancellable)
            cancelRequested = op.cancelRequested
        }
        switch result {
        case 0: return .woken
        case -EAGAIN: return .changed
        case LoopOperation.shutDownResult: return .shutDown
        case -ECANCELED: return cancelRequested ? .cancelled : .timedOut  // else the linked deadline
        default: return await blockingWait(w, until: limit, cancellable: cancellable)  // refused: say -EINVAL
        }
    }

    /// The fallback: a blocking futex wait on a helper thread, in slices of at most 10 ms so that
    /// a cancellation, or the loop's shutdown, is seen within one. Correct, not scalable (a thread
    /// per waiter).
    nonisolated(nonsending) private func blockingWait(_ w: mp_async_wait_t, until limit: Int64, cancellable: Bool) async
        -> WaitOutcome
    {
        // The loop's cancel-all ends its ring waits with `shutDown`; nothing else would end this one.
        if hasStopped {
            await Task.yield()  // not at once: see `awaitInSlot`
            return .shutDown
        }
        let slice = min(limit, Deadline.after(nanoseconds: 10_000_000))
        let wait = UnsafeSendable(w)
        let rc =
            (try? await BlockingPool.shared.run {
                withUnsafePointer(to: wait.value) { mp_async_wait_blocking($0, slice) }
            }) ?? 0
        if rc != ETIMEDOUT { return .woken }
        if cancellable && Task.isCancelled { return .cancelled }
        if hasStopped { return .shutDown }
        return slice >= limit ? .timedOut : .changed
    }
}

extension WaitOutcome {
    /// The error that ends a wait, if any.
    var error: (any Error)? {
        switch self {
        case .cancelled: CancellationError()
        case .shutDown: EventLoopError.shutDown
        default: nil
        }
    }
}
