import CMultiprocessing
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

enum Shade: UInt8, Codable, Sendable { case light, dark, none }

struct Flagged: Codable, Equatable, Sendable {
    var n: Int
    var ok: Bool
}

/// Puts a result message into `pool`'s result ring from a forked child of the test: any process
/// that maps the ring can (a worker runs the user's code).
private func forge<Input, Output>(
    _ pool: ProcessPool<Input, Output>, _ header: ResultHeader, _ payload: [UInt8] = []
) throws {
    let results = pool.core.channels.results.queue
    let code = try runInChild(timeout: .seconds(20)) {
        payload.withUnsafeBytes { bytes in
            withMessage(header, size: ResultHeader.size, payload: bytes) { _ = putMessage(results, $0) }
        }
    }
    #expect(code == 0)
}

private func value(_ id: UInt64, _ kind: ResultKind, count: Int32 = 1) -> ResultHeader {
    ResultHeader(id: id, kind: kind.rawValue, count: count, worker: 0, pid: 0)
}

/// Expects `body` to throw ``PoolError/coding(_:)``.
private func expectCodingError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    let error = #expect(throws: PoolError.self, sourceLocation: sourceLocation) { try body() }
    guard case .coding? = error else {
        Issue.record("\(String(describing: error)) is not a coding error", sourceLocation: sourceLocation)
        return
    }
}

/// What a process pool's parent does with messages its workers (which run the user's code) put.
@Suite("Pools: what a worker sends")
struct PoolResultTrustTests {
    @Test("a result byte that is no Bool fails that task (and that chunk) with .coding; the pool goes on")
    func invalidBool() throws {
        let gate = Event()
        let pool = try ProcessPool(processes: 1) { (x: Int) -> Bool in
            _ = try? gate.wait(timeout: patience)
            return x == 1
        }
        let single = pool.applyAsync(1)  // task 1: the worker holds it until the gate opens
        let chunk = pool.mapAsync([1, 2, 3], chunkSize: 3)  // task 2
        try forge(pool, value(1, .value), [2])
        try forge(pool, value(2, .values, count: 3), [1, 2, 0])
        // Before the fix the parent loaded byte 2 as a Bool: a value equal to both true and false.
        expectCodingError { _ = try single.get(timeout: patience) }
        expectCodingError { _ = try chunk.get(timeout: patience) }
        gate.set()
        #expect(try pool.applyAsync(1).get(timeout: patience) == true)
        #expect(try pool.mapAsync([1, 2, 3], chunkSize: 3).get(timeout: patience) == [true, false, false])
        pool.close()
        #expect(try pool.join(timeout: patience))
    }

    @Test("a struct's Bool field and an enum's tag out of range fail the task with .coding; valid ones arrive")
    func invalidStructAndEnum() throws {
        let gate = Event()
        let flagged = try ProcessPool(processes: 1) { (x: Int) -> Flagged in
            _ = try? gate.wait(timeout: patience)
            return Flagged(n: x, ok: x > 0)
        }
        let held = flagged.applyAsync(5)
        try forge(
            flagged, value(1, .value),
            withUnsafeBytes(of: 7) { Array($0) } + [3] + [UInt8](repeating: 0, count: MemoryLayout<Flagged>.size - 9))
        expectCodingError { _ = try held.get(timeout: patience) }
        gate.set()
        #expect(try flagged.applyAsync(5).get(timeout: patience) == Flagged(n: 5, ok: true))
        #expect(
            try flagged.mapAsync([0, 2], chunkSize: 2).get(timeout: patience) == [
                Flagged(n: 0, ok: false), Flagged(n: 2, ok: true),
            ])
        flagged.close()
        #expect(try flagged.join(timeout: patience))

        let open = Event()
        let shades = try ProcessPool(processes: 1) { (x: Int) -> Shade in
            _ = try? open.wait(timeout: patience)
            return x == 0 ? .light : .dark
        }
        let pending = shades.applyAsync(0)
        try forge(shades, value(1, .value), [7])
        // Before the fix: a Shade with tag 7, which a switch took for one of its cases.
        expectCodingError { _ = try pending.get(timeout: patience) }
        open.set()
        #expect(try shades.mapAsync([0, 1], chunkSize: 2).get(timeout: patience) == [.light, .dark])
        shades.close()
        #expect(try shades.join(timeout: patience))
    }

    @Test("a result a worker finished before another worker's initializer failed is delivered, not failed")
    func resultsBehindInitializerFailure() throws {
        let first = try Semaphore(value: 1)  // the first initializer to take it succeeds
        let fail = Event()  // then the other one throws
        let inCallback = Event()
        let release = Event()
        let pool = try ProcessPool(
            processes: 2,
            initializer: {
                if first.tryAcquire() { return }
                _ = try? fail.wait(timeout: patience)
                throw Shouted(word: "init")
            }
        ) { (x: Int) in x * 10 }
        // The result thread waits in this callback while the ring fills behind it.
        let blocker = pool.applyAsync(
            0,
            callback: { _ in
                inCallback.set()
                _ = try? release.wait(timeout: patience)
            })
        #expect(try inCallback.wait(timeout: patience))
        fail.set()
        // The failing worker has put its message and exited (the watcher reaped it).
        #expect(eventually { pool.core.workerProcesses.contains { $0.exitCode != nil } })
        let finished = pool.applyAsync(1)  // the other worker runs it: its result goes in behind
        let results = pool.core.channels.results.queue
        // Task 0 (its callback runs with its message in the ring), the failure, the exit notice, the result.
        #expect(eventually { mp_queue_count(results) >= 4 })
        release.set()
        #expect(try blocker.get(timeout: patience) == 0)
        // Before the fix the pool broke and failed it, though its result was in the ring.
        #expect(try finished.get(timeout: patience) == 10)
        let expected = PoolError.initializerFailed(type: String(reflecting: Shouted.self), message: "shouted init")
        #expect(throws: expected) { try pool.applyAsync(2).get(timeout: patience) }
        #expect(try pool.join(timeout: patience))
    }

    @Test("an exit notice a worker forges for a live sibling is ignored: the sibling's task delivers its result")
    func forgedExitNotice() throws {
        let gate = Event()
        let pool = try ProcessPool(processes: 2) { (x: Int) -> Int in
            if x == 0 { _ = try? gate.wait(timeout: patience) }
            return x + 100
        }
        let held = pool.applyAsync(0)  // task 1
        let channels = pool.core.channels
        var index = -1
        #expect(
            eventually {
                index = (0..<2).first { mp_pool_slot(channels.slots + $0) == 1 } ?? -1; return index >= 0
            })
        let pid = Int32(truncatingIfNeeded: mp_pool_slot(channels.ready + index) & ~PoolChannels.initialized)
        let before = pool.core.workerPIDs
        try forge(
            pool, ResultHeader(id: 0, kind: ResultKind.workerExited.rawValue, count: 9, worker: UInt32(index), pid: pid)
        )
        // The other worker's result comes behind the forged notice: once it is here, the notice was read.
        #expect(try pool.applyAsync(1).get(timeout: patience) == 101)
        #expect(!held.isReady)
        #expect(pool.core.workerPIDs.sorted() == before.sorted())  // no replacement for a live worker
        gate.set()
        // Before the fix the task failed with workerDied (the worker was alive) and its result was dropped.
        #expect(try held.get(timeout: patience) == 100)
        pool.close()
        #expect(try pool.join(timeout: patience))
    }
}
