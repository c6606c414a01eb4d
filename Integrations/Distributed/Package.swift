// swift-tools-version:6.0
import PackageDescription

// The distributed pool: a package of its own, so that a user of Multiprocessing alone never resolves
// or builds postgres-nio, swift-service-lifecycle or swift-log.
let package = Package(
    name: "multiprocessing-distributed",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "MultiprocessingDistributed", targets: ["MultiprocessingDistributed"]),
        // A worker host (and the submitter, checker and benchmark the multi-host test drives).
        .executable(name: "distributed-worker", targets: ["DistributedWorkerHost"]),
    ],
    dependencies: [
        .package(name: "swift-multiprocessing", path: "../.."),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
    ],
    targets: [
        .target(
            name: "MultiprocessingDistributed",
            dependencies: [
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The pool workers the worker host registers, shared with the tests (which point
        // Spawn.executable at the host, whose main bootstraps them).
        .target(
            name: "DistributedDemoWorkers",
            dependencies: [.product(name: "Multiprocessing", package: "swift-multiprocessing")]
        ),
        .executableTarget(
            name: "DistributedWorkerHost",
            dependencies: [
                "MultiprocessingDistributed",
                "DistributedDemoWorkers",
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "MultiprocessingDistributedTests",
            dependencies: [
                "MultiprocessingDistributed",
                "DistributedDemoWorkers",
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
