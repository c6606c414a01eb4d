import CBenchPeers
import Dispatch
import Foundation
import Multiprocessing

/// The children of the sync-vs-async suite: one implementation, `n` concurrent tasks, then prints
/// "wall_ns peak_rss_kib baseline_rss_kib" (the peak before the tasks started) and exits.
func runSyncVsAsyncChild(_ probe: String, n: Int, port: Int) throws {
    raiseDescriptorLimit()
    let baseline = peakRSSKiB()
    let start = now()
    switch probe {
    case "sva-threads-sleep": try threads(n) { try Multiprocessing.sleep(for: .milliseconds(10)) }
    case "sva-threads-tcp": try threads(n) { try roundTrip(port) }
    case "sva-tasks-sleep":
        try tasks(n) { try await Task.sleep(for: .milliseconds(10)) }
    case "sva-tasks-tcp":
        // Swift has no asynchronous socket of its own: a task makes blocking calls, which hold one
        // of the cooperative pool's threads (one per core) for the whole round trip.
        try tasks(n) { try roundTrip(port) }
    case "sva-eventloop-sleep":
        try EventLoop.run {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<n { group.addTask { try await sleep(for: .milliseconds(10)) } }
                try await group.waitForAll()
            }
        }
    case "sva-eventloop-tcp":
        try EventLoop.run {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<n { group.addTask { try await asyncRoundTrip(port) } }
                try await group.waitForAll()
            }
        }
    default: throw BenchError.peer("unknown probe \(probe)")
    }
    print("\(now() - start) \(Int(peakRSSKiB())) \(Int(baseline))")
}

private func roundTrip(_ port: Int) throws {
    let rc = bench_tcp_round_trip(Int32(port), 64)
    guard rc == 0 else { throw BenchError.peer("round trip: errno \(-rc)") }
}

/// The same round trip as `bench_tcp_round_trip` (64 bytes there and back) on the loop's sockets.
private func asyncRoundTrip(_ port: Int) async throws {
    let connection = try await TCPConnection.connect(host: "127.0.0.1", port: UInt16(port))
    let message = [UInt8](repeating: 7, count: 64)
    try await connection.send(message)
    guard try await connection.receive(exactly: message.count) == message else {
        throw BenchError.peer("echo differs")
    }
    try await connection.close()
}

private func threads(_ n: Int, _ body: @escaping @Sendable () throws -> Void) throws {
    let failures = Counter()
    let lock = Lock()
    let all = (0..<n).map { _ in
        Multiprocessing.Thread {
            do { try body() } catch { try? lock.withLock { failures.value += 1 } }
        }
    }
    for t in all { try t.start() }
    for t in all { _ = try t.join() }
    guard failures.value == 0 else { throw BenchError.peer("\(failures.value) of \(n) threads failed") }
}

private func tasks(_ n: Int, _ body: @escaping @Sendable () async throws -> Void) throws {
    let failed = blockingAwait {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<n { group.addTask { try await body() } }
                try await group.waitForAll()
            }
            return nil as String?
        } catch { return "\(error)" }
    }
    if let failed { throw BenchError.peer("tasks failed: \(failed)") }
}

private func raiseDescriptorLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
