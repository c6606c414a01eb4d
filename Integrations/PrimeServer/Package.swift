// swift-tools-version:6.0
// A real service: a Hummingbird 2 HTTP server that offloads a CPU-heavy endpoint to a forkserver
// ProcessPool, runs in a ServiceGroup (SIGTERM drains), logs pool events with swift-log and shows
// them on /metrics (swift-prometheus). A package of its own: a user of Multiprocessing alone never
// builds Hummingbird.
import PackageDescription

let package = Package(
    name: "multiprocessing-prime-server",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "prime-server", targets: ["PrimeServer"])
    ],
    dependencies: [
        .package(name: "swift-multiprocessing", path: "../.."),
        .package(name: "swift-multiprocessing-services", path: "../Services"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        .executableTarget(
            name: "PrimeServer",
            dependencies: [
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                .product(name: "MultiprocessingServices", package: "swift-multiprocessing-services"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
