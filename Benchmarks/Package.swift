// swift-tools-version:6.0
// `make bench`: a package of its own, so that its dependencies (argument parsing, histograms) stay off
// the graph of every user of the Multiprocessing library, as swift-nio keeps its Benchmarks/.
import PackageDescription

let package = Package(
    name: "swift-multiprocessing-benchmarks",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "multiprocessing-bench", targets: ["MultiprocessingBench"])
    ],
    dependencies: [
        .package(name: "swift-multiprocessing", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // The engine side by side with its peers (built in release).
        .executableTarget(
            name: "MultiprocessingBench",
            dependencies: [
                .product(name: "Multiprocessing", package: "swift-multiprocessing"),
                "CBenchPeers",
                "CxxBenchPeers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Sources/Bench"
        ),
        // Peers that must be C to be fair (pthread calls with no Swift between them); engine_ring.c drives
        // the engine's ring through CMultiprocessing's C API directly.
        .target(
            name: "CBenchPeers",
            dependencies: [.product(name: "CMultiprocessing", package: "swift-multiprocessing")],
            path: "Sources/CBenchPeers",
            linkerSettings: [.linkedLibrary("uring")]
        ),
        // Peers that are C++ libraries (Boost.Interprocess message_queue) behind a C header.
        .target(
            name: "CxxBenchPeers",
            dependencies: ["CBenchPeers"],  // its pinning (affinity.c)
            path: "Sources/CxxBenchPeers",
            linkerSettings: [.linkedLibrary("rt"), .linkedLibrary("pthread")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
