import DistributedDemoWorkers
import Foundation
import Multiprocessing

// The pool workers' processes are this program, forked by its forkserver: register them first.
Spawn.bootstrap(DemoWorkers.all)

let arguments = Arguments(CommandLine.arguments.dropFirst())
do {
    switch arguments.command {
    case "serve": try await serve(arguments)
    case "submit": try await submit(arguments)
    case "migrate": try await migrate(arguments)
    case "bench": try await bench(arguments)
    default:
        print(
            """
            usage: distributed-worker serve|submit|migrate|bench [options]
              connection: --host H --port P --user U --database D (or --socket DIR for a unix socket)
              serve:  --queue Q --processes N --name NAME --lease-ms MS
              submit: --queue Q --worker square|slow-square --count N --sleep-ms MS --wait-seconds S --start K
              bench:  --processes 1,2,4 --tasks N --latency-samples N --json FILE
            """)
        exit(2)
    }
} catch {
    print("distributed-worker: \(error)")
    exit(1)
}
