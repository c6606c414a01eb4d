import Testing

@testable import Multiprocessing

struct LoopTimedOut: Error {}

/// Runs `body` on `loop` (a fresh one by default, shut down afterwards) and awaits it; a body still
/// running after `limit` fails the test instead of hanging it (it is cancelled and left behind, with
/// its loop). The test awaits rather than blocks: a blocked test would hold one of the few threads
/// of Swift's cooperative pool (two on a 2-core machine), which unstructured tasks and other tests
/// need. Not a task group: leaving a group waits for all its children, a hung body's included.
func onLoop<T: Sendable>(
    _ loop: EventLoop? = nil, limit: Duration = runningUnderSanitizer ? .seconds(300) : .seconds(60),
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let loop = try loop ?? EventLoop(name: "test-loop")
    let task = Task(executorPreference: loop) { try await body() }
    let value = try await value(of: task, within: limit)
    loop.shutdown()
    return value
}

/// Awaits `task`; one still running after `limit` fails the test instead of hanging it (it is
/// cancelled and left behind). See `onLoop`.
func value<T: Sendable, Failure: Error>(
    of task: Task<T, Failure>, within limit: Duration = runningUnderSanitizer ? .seconds(300) : .seconds(60)
) async throws -> T {
    typealias Outcome = Result<T, Failure>?
    let finished = await withCheckedContinuation { (outcome: CheckedContinuation<Outcome, Never>) in
        let pending = Locked(true)  // the first to finish resumes, once
        let resume = { @Sendable (result: Outcome) in
            let first = pending.withLock { (isPending: inout Bool) -> Bool in
                defer { isPending = false }
                return isPending
            }
            if first { outcome.resume(returning: result) }
        }
        let timer = Task {
            try? await Task.sleep(for: limit)
            resume(nil)
        }
        Task {
            resume(await task.result)
            timer.cancel()  // after: its sleep, cut short, would otherwise report a time-out first
        }
    }
    guard let finished else {
        task.cancel()
        Issue.record("the task did not finish within \(limit)")
        throw LoopTimedOut()
    }
    return try finished.get()
}

/// A path for a scratch file of this test process.
func scratchPath(_ name: String) -> String {
    "/tmp/multiprocessing-test-\(Process.current.pid ?? 0)-\(name)"
}
