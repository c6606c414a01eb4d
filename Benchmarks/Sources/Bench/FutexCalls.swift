/// Futex system calls per 1 000 contended lock pairs: how often a lock puts a thread to sleep and
/// wakes it, a count that, unlike a time, does not drift with the machine's noise as much.
extension LockSuite {
    /// Rows: impl, and the probe (Probes.swift) whose two pinned threads contend on that lock.
    static let futexProbes = [("engine Lock", "lock-contended"), ("pthread_mutex_t", "pthread-contended")]

    /// strace -f -c -e trace=futex over a probe run of `n` pairs per thread, less a run of none
    /// (the futex calls of starting and joining the threads), per 1 000 pairs of both threads.
    /// Under strace each futex call costs tens of microseconds, so a sleeper sleeps longer than it
    /// would: the figure compares locks with each other, it is not the count of an untraced run.
    func futexCalls() -> [Row] {
        // Pairs per thread, quick or not: the holder mostly takes the lock again before the other
        // thread wakes, so futex calls are rare and a count needs many pairs to be more than a handful.
        let n = 1_000_000
        // A contended figure, and the one that scatters most (who sleeps is the scheduler's call:
        // 0.02 to 0.95 calls per 1 000 pairs over 5 runs of one build): the contended rows' runs.
        // A run under strace lasts about 0.1 s.
        let runs = contendedRuns
        return Self.futexProbes.map { impl, probe in
            var row = Row(
                suite: "lock", caseName: "futex calls per 1 000 pairs, 2 threads contended (strace)", impl: impl,
                metric: "futex calls per 1 000 pairs", unit: "calls", samples: [], higherIsBetter: false)
            guard let base = countSyscalls(probe: probe, iterations: 0, trace: "futex") else {
                row.note = "no strace"
                return row
            }
            for _ in 0..<runs {
                guard let calls = countSyscalls(probe: probe, iterations: n, trace: "futex") else { continue }
                row.samples.append(Double(max(0, calls - base)) * 1000 / Double(2 * n))
            }
            if row.samples.isEmpty { row.note = "strace failed" }
            return row
        }
    }
}
