// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-multiprocessing",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Multiprocessing", targets: ["Multiprocessing"]),
        .executable(name: "multiprocessing-examples", targets: ["MultiprocessingExamples"]),
        .executable(name: "multiprocessing-bench", targets: ["MultiprocessingBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // Mechanisms: shared memory, futex words, fork/spawn, io_uring. No policy.
        .target(
            name: "CMultiprocessing",
            path: "CSources/CMultiprocessing",
            // Debug builds (the tests') can make a process die at a named point: see mp_fault_arm.
            // sys/, sync/, queue/ and loop/ include the target's internal.h from its root.
            cSettings: [.define("MP_FAULT_INJECTION", .when(configuration: .debug)), .headerSearchPath(".")],
            linkerSettings: [.linkedLibrary("uring")]
        ),
        // The facade users import.
        .target(
            name: "Multiprocessing",
            dependencies: [
                "CMultiprocessing",
                .product(name: "SystemPackage", package: "swift-system"),
            ],
            path: "Sources/Multiprocessing"
        ),
        // The seed's programs, runnable: `swift run multiprocessing-examples <name>`.
        .executableTarget(
            name: "MultiprocessingExamples",
            dependencies: [
                "Multiprocessing",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples"
        ),
        // `make bench`: the engine side by side with its peers (built in release).
        .executableTarget(
            name: "MultiprocessingBench",
            dependencies: [
                "Multiprocessing",
                "CBenchPeers",
                "CxxBenchPeers",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks/Sources/Bench"
        ),
        // Peers that must be C to be fair (pthread calls with no Swift between them).
        .target(
            name: "CBenchPeers", dependencies: ["CMultiprocessing"], path: "Benchmarks/Sources/CBenchPeers",
            linkerSettings: [.linkedLibrary("uring")]),
        // Peers that are C++ libraries (Boost.Interprocess message_queue) behind a C header; the bench's only.
        .target(
            name: "CxxBenchPeers", path: "Benchmarks/Sources/CxxBenchPeers",
            linkerSettings: [.linkedLibrary("rt"), .linkedLibrary("pthread")]),
        // Spawned children of the test suite: the test runner cannot re-exec itself as a child.
        .target(
            name: "MultiprocessingTestTargets",
            dependencies: ["Multiprocessing", "CMultiprocessing"],
            path: "Tests/MultiprocessingTestTargets"
        ),
        .executableTarget(
            name: "MultiprocessingTestHelper",
            dependencies: ["Multiprocessing", "MultiprocessingTestTargets"],
            path: "Tests/MultiprocessingTestHelper"
        ),
        // `make fuzz`: libFuzzer over the decoder and a queue's ring; a seeded smoke run otherwise.
        .executableTarget(
            name: "MultiprocessingFuzz",
            dependencies: ["Multiprocessing", "CMultiprocessing"],
            path: "Tests/MultiprocessingFuzz"
        ),
        .testTarget(
            name: "MultiprocessingTests",
            dependencies: ["Multiprocessing", "MultiprocessingTestTargets", "MultiprocessingTestHelper"],
            path: "Tests/MultiprocessingTests"
        ),
    ],
    swiftLanguageModes: [.v6]
)
