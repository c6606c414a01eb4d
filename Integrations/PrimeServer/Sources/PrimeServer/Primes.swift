import Multiprocessing

/// The server's CPU-heavy work: counting the primes below a bound.
enum Primes {
    /// The number of primes below `n`, by trial division over odd divisors: a few milliseconds of
    /// pure CPU for n in the tens of thousands, and no memory to speak of.
    @inline(never)
    static func count(below n: Int) -> Int {
        guard n > 2 else { return 0 }
        var count = 1  // 2
        var candidate = 3
        while candidate < n {
            var divisor = 3
            var prime = true
            while divisor * divisor <= candidate {
                if candidate % divisor == 0 {
                    prime = false
                    break
                }
                divisor += 2
            }
            if prime { count += 1 }
            candidate += 2
        }
        return count
    }

    /// The pool's worker, registered by name so that the forkserver's children can run it.
    static let worker = PoolWorker<Int, Int>("count-primes") { count(below: $0) }

    /// The largest bound a request may ask for: about a second of work, so that one request
    /// cannot hold a worker for long.
    static let largestBound = 5_000_000
}
