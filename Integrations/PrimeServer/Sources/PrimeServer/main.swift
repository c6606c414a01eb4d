import Multiprocessing

// The pool's workers are this program, forked by its forkserver: register them before anything
// else runs (no thread, no task yet), so that a worker never inherits a busy thread's locks.
Spawn.bootstrap(Primes.worker)
try await PrimeServer.run(ServerOptions(CommandLine.arguments.dropFirst()))
