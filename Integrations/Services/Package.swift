// swift-tools-version:6.0
// The library in a server: swift-service-lifecycle services, a swift-log logger and a swift-metrics
// adapter for pools. A package of its own, so that a user of Multiprocessing alone never builds them.
import PackageDescription

let package = Package(
    name: "swift-multiprocessing-services",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "MultiprocessingServices", targets: ["MultiprocessingServices"])
    ],
    dependencies: [
        .package(name: "swift-multiprocessing", path: "../.."),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
    ],
    targets: [
        .target(
            name: "MultiprocessingServices",
            dependencies: [
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "MultiprocessingServicesTests",
            dependencies: [
                "MultiprocessingServices",
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
