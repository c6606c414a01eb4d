// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-multiprocessing",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Multiprocessing", targets: ["Multiprocessing"]),
        // The C engine, vended for the benchmark package (Benchmarks/) alone: its C peers drive the ring
        // through mp_* with no Swift between them. Users import Multiprocessing.
        .library(name: "CMultiprocessing", targets: ["CMultiprocessing"]),
        .executable(name: "multiprocessing-examples", targets: ["MultiprocessingExamples"]),
    ],
    // Only what the library needs: the benchmark's dependencies live in Benchmarks/Package.swift.
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        // `make docs` only: a plugin no target uses, so SwiftPM does not resolve it for the library's users.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
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
            path: "Sources/Multiprocessing",
            // `import Builtin` in LoopOperation.swift alone: a loop operation's continuation without
            // the executor hop that both library forms cost a nonisolated caller (see `suspendForLoop`).
            swiftSettings: [.enableExperimentalFeature("BuiltinModule")]
        ),
        // The seed's programs, runnable: `swift run multiprocessing-examples <name>`.
        .executableTarget(
            name: "MultiprocessingExamples",
            dependencies: ["Multiprocessing"],
            path: "Examples"
        ),
        // Spawned children of the test suite: the test runner cannot re-exec itself as a child.
        .target(
            name: "MultiprocessingTestTargets",
            dependencies: ["Multiprocessing", "CMultiprocessing"],
            path: "Tests/MultiprocessingTestTargets"
        ),
        .executableTarget(
            name: "MultiprocessingTestHelper",
            dependencies: ["Multiprocessing", "CMultiprocessing", "MultiprocessingTestTargets"],
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
