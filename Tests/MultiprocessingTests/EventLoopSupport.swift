import Testing

@testable import Multiprocessing

/// The outcome of a body run on a loop, handed back to the test's thread.
final class Outcome<T: Sendable>: @unchecked Sendable {
    let value = Locked<Result<T, any Error>?>(nil)
}

struct LoopTimedOut: Error {}

/// Runs `body` on `loop` (a fresh one by default, shut down afterwards), blocking the test until
/// it returns; a body still running after `limit` fails the test instead of hanging it.
func onLoop<T: Sendable>(
    _ loop: EventLoop? = nil, limit: Duration = .seconds(60), _ body: @escaping @Sendable () async throws -> T
) throws -> T {
    let loop = try loop ?? EventLoop(name: "test-loop")
    let outcome = Outcome<T>()
    let done = Event()
    Task(executorPreference: loop) {
        let result: Result<T, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        outcome.value.withLock { $0 = result }
        done.set()
    }
    guard try done.wait(timeout: limit) else {
        Issue.record("the body did not finish within \(limit)")
        throw LoopTimedOut()
    }
    loop.shutdown()
    return try outcome.value.withLock { $0! }.get()
}

/// A path for a scratch file of this test process.
func scratchPath(_ name: String) -> String {
    "/tmp/multiprocessing-test-\(Process.current.pid ?? 0)-\(name)"
}

/// Polls `condition` every millisecond (blocking), up to `limit`; returns whether it came true.
func eventually(_ limit: Duration = .seconds(30), _ condition: () -> Bool) -> Bool {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < limit {
        if condition() { return true }
        try? sleep(for: .milliseconds(1))
    }
    return condition()
}
