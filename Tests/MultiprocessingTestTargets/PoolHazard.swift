// The fork-hazard stress program: pool lifecycles beside threads that keep the Swift runtime's
// locks busy. It runs in a spawned child (a program of its own), so its busy threads cannot reach
// the test runner's other tests, whose closure processes fork on the runner's threads.
import Multiprocessing
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Two generic wrappers: a chain of `depth` of them, picked by the bits of a counter, is a type the
/// runtime has not seen yet, so its metadata must be made (under the runtime's locks).
struct NestA<T> { var value: T? }
struct NestB<T> { var value: T? }

/// Makes the metadata of a type no thread has used before, with the metadata of an array, a
/// dictionary and a tuple of it, and looks up a conformance of it (all first-time work that takes
/// a Swift runtime lock). The chain's outermost wrapper is picked by the counter's lowest bit, so
/// consecutive counters share all inner levels (found again without a lock) and each call makes
/// only a handful of new records: memory grows slowly enough for thousands of lifecycles. Returns
/// something derived from it so the work cannot be dropped.
@inline(never)
func makeFreshMetadata<T>(_ type: T.Type, bits: UInt64, depth: Int) -> Int {
    if depth == 0 {
        let array = [T]()
        let dictionary = [Int: T]()
        let conforms = T.self is any CustomStringConvertible.Type
        return array.count + dictionary.count + MemoryLayout<(T, Int)>.size + (conforms ? 1 : 0)
    }
    return bits >> (depth - 1) & 1 == 0
        ? makeFreshMetadata(NestA<T>.self, bits: bits, depth: depth - 1)
        : makeFreshMetadata(NestB<T>.self, bits: bits, depth: depth - 1)
}

/// Threads that keep making new generic metadata and allocating until stopped: at any moment one
/// of them may hold a Swift runtime lock, as the threads of a busy program do.
public final class BusyThreads: @unchecked Sendable {
    private let stopping = Atomic<Bool>(false)
    private let running = Atomic<Int>(0)
    /// New types made so far (each with its array, dictionary and tuple metadata).
    public let made = Atomic<Int>(0)

    public init(count: Int) throws {
        for t in 0..<count {
            running.add(1, ordering: .relaxed)
            try Thread(name: "busy-\(t)") { [self] in
                // Each thread has its own 2^21 types (the chain's 24 bits: 3 for the thread). It
                // goes round a window of 1 024 of them, finding them again (lookups that take some
                // of the runtime's locks too), and moves the window on by 4 new types each round:
                // metadata is never freed, and this keeps memory to a few MB a second.
                var first = UInt64(t & 7) << 21
                var i: UInt64 = 0
                var sink = 0
                while !stopping.load(ordering: .relaxed) {
                    let n = first + i % 1024
                    sink &+= makeFreshMetadata(Int.self, bits: n, depth: 24)
                    i &+= 1
                    if i % 1024 == 0 {
                        first += 4
                        made.add(4, ordering: .relaxed)
                    }
                    let bytes = [UInt8](repeating: UInt8(truncatingIfNeeded: n), count: Int(n % 4096) + 1)
                    sink &+= Int(bytes[bytes.count - 1])
                }
                if sink == 42 { print("") }
                running.add(-1, ordering: .releasing)
            }.start()
        }
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        while running.load(ordering: .acquiring) > 0 { usleep(1000) }
    }
}

/// What the stress program is asked to do, and where it reports: slot 0 lifecycles done, 1 watchdog
/// replacements, 2 lifecycles that failed (a wrong result, a timeout, an error), 3 new types the busy
/// threads made, 4 zygotes killed and forked again (closure pools; not a failure).
public struct PoolHazardJob: Codable, Sendable {
    public enum Kind: String, Codable, CaseIterable, Sendable {
        case closure, forkserver
    }
    public var kind: Kind
    public var lifecycles: Int
    public var report: SharedMemory
    public init(kind: Kind, lifecycles: Int, report: SharedMemory) {
        self.kind = kind
        self.lifecycles = lifecycles
        self.report = report
    }
    public subscript(i: Int) -> Int {
        get { report.buffer.baseAddress!.assumingMemoryBound(to: Int.self)[i] }
        nonmutating set { report.buffer.baseAddress!.assumingMemoryBound(to: Int.self)[i] = newValue }
    }
}

public enum PoolHazard {
    /// One pool's life: made, `map` over 100 items with chunk sizes nil, 1 and 7, `applyAsync` with
    /// callbacks, closed and joined. Every wait has a deadline. Returns the watchdog's replacements
    /// and the zygote's restarts, or throws on a wrong result or a timeout.
    static func lifecycle(_ kind: PoolHazardJob.Kind) throws -> (replacements: Int, zygoteRestarts: Int) {
        let pool: ProcessPool<Int, Int> =
            switch kind {
            case .closure: try ProcessPool(processes: 2) { $0 &* 2 }
            case .forkserver: try ProcessPool(processes: 2, worker: TestTargets.twice)
            }
        defer { pool.terminate() }
        let expected: [Int] = (0..<100).map { $0 &* 2 }
        for chunkSize in [nil, 1, 7] {
            let out = try pool.mapAsync(Array(0..<100), chunkSize: chunkSize).get(timeout: .seconds(60))
            guard out == expected else { throw PoolHazardFailure.wrongResult }
        }
        let seen = Atomic<Int>(0)
        let handles = (0..<10).map { i in
            pool.applyAsync(i, callback: { if $0 == i &* 2 { seen.add(1, ordering: .relaxed) } })
        }
        for (i, h) in handles.enumerated() where try h.get(timeout: .seconds(60)) != i &* 2 {
            throw PoolHazardFailure.wrongResult
        }
        guard seen.load(ordering: .relaxed) == 10 else { throw PoolHazardFailure.missingCallback }
        pool.close()
        guard try pool.join(timeout: .seconds(60)) else { throw PoolHazardFailure.joinTimedOut }
        return (pool.watchdogReplacements, pool.zygoteRestarts)
    }

    /// The stress program's entry: 8 busy threads, then the lifecycles.
    public static let target = SpawnTarget<PoolHazardJob>("poolHazard") { job in
        let busy = try BusyThreads(count: 8)
        defer {
            busy.stop()
            job[3] = busy.made.load(ordering: .relaxed)
        }
        let start = ContinuousClock.now
        for _ in 0..<job.lifecycles {
            do {
                let (replacements, restarts) = try lifecycle(job.kind)
                job[1] += replacements
                job[4] += restarts
            } catch {
                job[2] += 1
                print("pool hazard (\(job.kind)): \(error)")
            }
            job[0] += 1
        }
        print(
            "pool hazard (\(job.kind)): \(job[0]) lifecycles in \(ContinuousClock.now - start), \(job[2]) failed, "
                + "\(job[1]) watchdog replacements, \(job[4]) zygote restarts, "
                + "\(busy.made.load(ordering: .relaxed)) new types made beside them")
    }
}

enum PoolHazardFailure: Error {
    case wrongResult, missingCallback, joinTimedOut
}
