import CBenchPeers
import Dispatch
import Foundation
import Multiprocessing
import Synchronization

/// The lock suite: uncontended acquire+release, two threads contended, two processes contended,
/// the system calls an uncontended pair makes (which must be zero) and the futex calls of
/// contended pairs.
struct LockSuite {
    let quick: Bool
    let runs: Int

    var uncontendedIterations: Int { quick ? 200_000 : 5_000_000 }
    var contendedIterations: Int { quick ? 50_000 : 1_000_000 }
    /// Contended figures scatter most (who wins the lock is the scheduler's call): more runs.
    var contendedRuns: Int { quick ? runs : max(runs, 15) }

    func run(python: PythonPeers) throws -> [Row] {
        var rows: [Row] = []
        rows += try uncontended(python: python).run(runs: runs)
        rows += try threadsContended(python: python).run(runs: contendedRuns)
        rows += try processesContended(python: python).run(runs: contendedRuns)
        rows += try syscalls()
        rows += futexCalls()
        return rows
    }

    private func uncontended(python: PythonPeers) throws -> Contest {
        let n = uncontendedIterations
        var contest = Contest(
            suite: "lock", caseName: "uncontended acquire+release", metric: "time per pair", unit: "ns",
            higherIsBetter: false)
        let lock = Lock()
        contest.add("engine Lock") {
            nsPerOp(n) { n in for _ in 0..<n { try! lock.acquire(); try! lock.release() } }
        }
        let rlock = RLock()
        contest.add("engine RLock") {
            nsPerOp(n) { n in for _ in 0..<n { try! rlock.acquire(); try! rlock.release() } }
        }
        let semaphore = try Semaphore(value: 1)
        contest.add("engine Semaphore") {
            nsPerOp(n) { n in for _ in 0..<n { semaphore.acquire(); try! semaphore.release() } }
        }
        let pthreadMemory = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        let pthread = bench_pthread_mutex_init(pthreadMemory, 0)
        contest.add("pthread_mutex_t") {
            nsPerOp(n) { n in for _ in 0..<n { bench_pthread_mutex_lock(pthread); bench_pthread_mutex_unlock(pthread) }
            }
        }
        let mutex = Mutex(0)
        contest.add("Synchronization.Mutex") {
            nsPerOp(n) { n in for _ in 0..<n { mutex.withLock { $0 &+= 1 } } }
        }
        let nslock = NSLock()
        contest.add("NSLock") {
            nsPerOp(n) { n in for _ in 0..<n { nslock.lock(); nslock.unlock() } }
        }
        let dispatch = DispatchSemaphore(value: 1)
        contest.add("DispatchSemaphore") {
            nsPerOp(n) { n in for _ in 0..<n { dispatch.wait(); dispatch.signal() } }
        }
        let pn = quick ? 100_000 : 1_000_000
        contest.add("Python threading.Lock") { try python.measure("lock-uncontended", ["threading", String(pn)]) }
        contest.add("Python multiprocessing.Lock") {
            try python.measure("lock-uncontended", ["multiprocessing", String(pn)])
        }
        return contest
    }

    /// Two threads pinned apart, each doing `n` acquire, increment, release: total pairs per second.
    /// The increments are counted, as in the processes' case: a lock that let both threads in at
    /// once would lose some, and would otherwise report a fast figure.
    private func threadsContended(python: PythonPeers) throws -> Contest {
        let n = contendedIterations
        var contest = Contest(
            suite: "lock", caseName: "2 threads contended", metric: "throughput", unit: "pairs/s",
            higherIsBetter: true)
        let counter = Counter()
        func twoThreads(_ body: @escaping @Sendable () -> Void) throws -> Double {
            counter.value = 0
            let start = now()
            try onTwoPinnedThreads { _ in body() }
            let elapsed = Double(now() - start) / 1e9
            guard counter.value == 2 * n else { throw BenchError.peer("lost increments: \(counter.value)") }
            return Double(2 * n) / elapsed
        }
        let lock = Lock()
        contest.add("engine Lock") {
            try twoThreads { for _ in 0..<n { try! lock.acquire(); counter.value &+= 1; try! lock.release() } }
        }
        let pthreadMemory = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        let pthread = PointerBox(pointer: bench_pthread_mutex_init(pthreadMemory, 0))
        contest.add("pthread_mutex_t") {
            try twoThreads {
                for _ in 0..<n {
                    bench_pthread_mutex_lock(pthread.pointer)
                    counter.value &+= 1
                    bench_pthread_mutex_unlock(pthread.pointer)
                }
            }
        }
        let mutex = Mutex(())
        contest.add("Synchronization.Mutex") {
            try twoThreads { for _ in 0..<n { mutex.withLock { _ in counter.value &+= 1 } } }
        }
        let nslock = NSLock()
        contest.add("NSLock") {
            try twoThreads { for _ in 0..<n { nslock.lock(); counter.value &+= 1; nslock.unlock() } }
        }
        let pn = quick ? 20_000 : 200_000
        contest.add("Python threading.Lock") { try python.measure("lock-threads", [String(pn)]) }
        return contest
    }

    /// Two forked processes pinned apart, each doing `n` acquire, increment, release on a lock in
    /// shared memory.
    private func processesContended(python: PythonPeers) throws -> Contest {
        let n = contendedIterations
        var contest = Contest(
            suite: "lock", caseName: "2 processes contended", metric: "throughput", unit: "pairs/s",
            higherIsBetter: true)
        let memory = try SharedMemory(size: 128)
        let counter = memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self)
        func twoProcesses(_ body: @escaping () -> Void) throws -> Double {
            counter.pointee = 0
            let start = now()
            let children = (0..<2).map { side in Multiprocessing.Process { pinned(to: side) { body() } } }
            for c in children { try c.start() }
            for c in children { try c.join() }
            let elapsed = Double(now() - start) / 1e9
            // The closures hold raw pointers into `memory`: keep it mapped until the children finish.
            withExtendedLifetime(memory) {}
            try expectClean(children)
            guard counter.pointee == 2 * n else { throw BenchError.peer("lost increments: \(counter.pointee)") }
            return Double(2 * n) / elapsed
        }
        let lock = Lock()
        contest.add("engine Lock") {
            try twoProcesses { for _ in 0..<n { try! lock.acquire(); counter.pointee &+= 1; try! lock.release() } }
        }
        let pthread = bench_pthread_mutex_init(memory.buffer.baseAddress! + 64, 1)
        contest.add("pthread_mutex_t (process-shared)") {
            try twoProcesses {
                for _ in 0..<n {
                    bench_pthread_mutex_lock(pthread)
                    counter.pointee &+= 1
                    bench_pthread_mutex_unlock(pthread)
                }
            }
        }
        let pn = quick ? 10_000 : 100_000
        contest.add("Python multiprocessing.Lock") { try python.measure("lock-processes", [String(pn)]) }
        return contest
    }

    /// System calls per uncontended acquire+release, counted by strace over a run of this program
    /// that does 1 and then 1 + `n` pairs (one-time costs such as caching the pid cancel out): the
    /// difference divided by n.
    private func syscalls() throws -> [Row] {
        let n = 1_000_000
        guard let base = countSyscalls(probe: "lock", iterations: 1),
            let loaded = countSyscalls(probe: "lock", iterations: 1 + n)
        else {
            return [
                Row(
                    suite: "lock", caseName: "uncontended syscalls", impl: "engine Lock", metric: "syscalls per pair",
                    unit: "calls", samples: [], higherIsBetter: false, note: "strace unavailable")
            ]
        }
        let perPair = Double(max(0, loaded - base)) / Double(n)
        return [
            Row(
                suite: "lock", caseName: "uncontended syscalls", impl: "engine Lock", metric: "syscalls per pair",
                unit: "calls", samples: [perPair], higherIsBetter: false,
                note: perPair == 0 ? "target 0: met" : "target 0: MISSED")
        ]
    }
}

final class Counter: @unchecked Sendable { var value = 0 }

struct PointerBox: @unchecked Sendable { let pointer: UnsafeMutableRawPointer }
