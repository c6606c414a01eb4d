import Hummingbird
import Logging
import Metrics
import Multiprocessing
import MultiprocessingServices
import Prometheus
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// The service: `GET /primes?below=N` counts primes (CPU-heavy, offloaded), `GET /ping` answers at
/// once (the endpoint a pool keeps fast under load), `GET /metrics` shows the pool's counters in
/// Prometheus's text format, `GET /workers` lists the pool's worker pids (the load test's killer
/// reads it).
enum PrimeServer {
    static func run(_ options: ServerOptions) async throws {
        var logger = Logger(label: "prime-server")
        logger.logLevel = Logger.Level(rawValue: options.logLevel) ?? .info

        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let observer = PoolObservers([
            LoggingPoolObserver(logger: logger), MetricsPoolObserver(pool: options.offload.rawValue),
        ])

        let work: Work
        var services: [any Service] = []
        let drain = Duration.seconds(options.drainSeconds)
        switch options.offload {
        case .process:
            let pool = try ProcessPool(processes: options.workers, observer: observer, worker: Primes.worker)
            services.append(PoolService(pool, drainTimeout: drain))
            work = Work(offload: .process, workerPIDs: { pool.workerPIDs }) { try await pool.run($0) }
        case .thread:
            let pool = try ThreadPool(threads: options.workers, observer: observer)
            services.append(PoolService(pool, drainTimeout: drain))
            work = Work(offload: .thread, workerPIDs: { [] }) { n in try await pool.run { Primes.count(below: n) } }
        case .inline:
            work = Work(offload: .inline, workerPIDs: { [] }) { Primes.count(below: $0) }
        case .detached:
            work = Work(offload: .detached, workerPIDs: { [] }) { n in
                await Task.detached { Primes.count(below: n) }.value
            }
        }

        let app = Application(
            router: router(work: work, registry: registry),
            configuration: .init(address: .hostname(options.host, port: options.port), serverName: "prime-server"),
            onServerRunning: { channel in
                // The load test waits for this line (and reads the port when it asked for port 0).
                let line = "prime-server: listening on \(channel.localAddress?.port ?? -1), pid \(getpid())\n"
                _ = line.utf8CString.withUnsafeBufferPointer { write(1, $0.baseAddress, $0.count - 1) }
            },
            logger: logger
        )
        // Shut down in reverse order: the server first (it stops accepting and lets the requests
        // in flight finish), then the pool (it drains what is left, then its workers end).
        services.append(app)
        let group = ServiceGroup(
            configuration: .init(
                services: services.map { .init(service: $0) },
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
        logger.info("prime-server: stopped")
    }

    static func router(work: Work, registry: PrometheusCollectorRegistry) -> Router<BasicRequestContext> {
        let router = Router()
        router.get("ping") { _, _ in "pong\n" }
        router.get("primes") { request, _ -> String in
            guard let n = request.uri.queryParameters.get("below", as: Int.self), (0...Primes.largestBound).contains(n)
            else {
                throw HTTPError(.badRequest, message: "below must be an integer from 0 to \(Primes.largestBound)")
            }
            return "\(try await work.countPrimes(below: n))\n"
        }
        router.get("metrics") { _, _ in registry.emitToString() }
        router.get("workers") { _, _ in work.workerPIDs().map(String.init).joined(separator: " ") + "\n" }
        return router
    }
}

/// The work of one request, wherever the offload puts it, with the pool's failures turned into
/// answers a client can act on.
struct Work: Sendable {
    let offload: Offload
    let workerPIDs: @Sendable () -> [Int32]
    let body: @Sendable (Int) async throws -> Int

    init(
        offload: Offload, workerPIDs: @escaping @Sendable () -> [Int32],
        _ body: @escaping @Sendable (Int) async throws -> Int
    ) {
        self.offload = offload
        self.workerPIDs = workerPIDs
        self.body = body
    }

    func countPrimes(below n: Int) async throws -> Int {
        do {
            return try await body(n)
        } catch PoolError.workerDied(let pid, let reason) {
            // Only this request's task was lost with the worker; the pool has replaced it.
            throw HTTPError(
                .serviceUnavailable,
                message: "the worker process counting these primes (pid \(pid)) \(reason); nothing was counted, retry")
        } catch let error as PoolError {
            switch error {
            case .closed, .terminated:
                throw HTTPError(.serviceUnavailable, message: "the server is shutting down; retry elsewhere")
            default:
                throw HTTPError(.internalServerError, message: "the pool failed: \(error)")
            }
        }
    }
}
