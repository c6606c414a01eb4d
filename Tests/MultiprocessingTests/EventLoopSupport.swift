import Testing

@testable import Multiprocessing

struct LoopTimedOut: Error {}

/// Runs `body` on `loop` (a fresh one by default, shut down afterwards) and awaits it; a body still
/// running after `limit` fails the test instead of hanging it. The test awaits rather than blocks:
/// a blocked test would hold one of the few threads of Swift's cooperative pool (two on a 2-core
/// machine), which unstructured tasks and other tests need.
func onLoop<T: Sendable>(
    _ loop: EventLoop? = nil, limit: Duration = .seconds(60), _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let loop = try loop ?? EventLoop(name: "test-loop")
    let task = Task(executorPreference: loop) { try await body() }
    let finished = try await withThrowingTaskGroup(of: Result<T, any Error>?.self) { group in
        group.addTask { await task.result }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
    guard let finished else {
        Issue.record("the body did not finish within \(limit)")
        throw LoopTimedOut()
    }
    loop.shutdown()
    return try finished.get()
}

/// A path for a scratch file of this test process.
func scratchPath(_ name: String) -> String {
    "/tmp/multiprocessing-test-\(Process.current.pid ?? 0)-\(name)"
}
