import CMultiprocessing
import FoundationEssentials
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A function a spawned child can run, found by `name` in the child.
///
/// Register every target with ``Spawn/bootstrap(_:)`` as the first thing `main` does, in the
/// parent and the child alike (they run the same program), as Python programs guard their entry
/// with `if __name__ == '__main__'`.
///
/// ```swift
/// let worker = SpawnTarget<WorkerArguments>("worker") { args in ... }
/// @main struct App {
///     static func main() throws {
///         Spawn.bootstrap(worker)                 // in a spawned child: runs `worker`, exits
///         let p = Process(spawn: worker, argument: WorkerArguments(lock: Lock(), count: 10))
///         try p.start(); try p.join()
///     }
/// }
/// ```
public struct SpawnTarget<Argument: Codable & Sendable>: Sendable, SpawnEntry {
    public let name: String
    let body: @Sendable (Argument) async throws -> Void

    /// A target named `name` (unique within the program) running `body` in the child.
    public init(_ name: String, _ body: @escaping @Sendable (Argument) async throws -> Void) {
        self.name = name
        self.body = body
    }

    public func runSpawned(argument bytes: [UInt8]) async throws {
        try await body(SpawnCoding.decode(Argument.self, from: bytes))
    }
}

/// A registered spawn target, whatever its argument type.
public protocol SpawnEntry: Sendable {
    var name: String { get }
    /// Decodes the argument and runs the target (called by ``Spawn/bootstrap(_:)``).
    func runSpawned(argument: [UInt8]) async throws
}

/// The spawn start method: the program re-executed with an entry-point selector.
public enum Spawn {
    static let environmentKey = "SWIFT_MULTIPROCESSING_BOOTSTRAP"
    private static let executablePath = Locked("/proc/self/exe")

    /// The program a spawned child runs (Python's `set_executable`); this program by default.
    /// Tests point it at a helper executable that registers the same targets.
    public static var executable: String {
        get { executablePath.withLock { $0 } }
        set { executablePath.withLock { $0 = newValue } }
    }

    /// Call first in `main`. In a spawned child, runs the requested target and exits the process
    /// (status 0, or 1 after printing a thrown error); elsewhere returns at once.
    public static func bootstrap(_ targets: any SpawnEntry...) {
        bootstrap(targets)
    }

    /// Call first in `main`; see ``bootstrap(_:)-(SpawnEntry...)``.
    public static func bootstrap(_ targets: [any SpawnEntry]) {
        guard let value = getenv(environmentKey), let fd = Int32(String(cString: value)) else { return }
        unsetenv(environmentKey)  // our own children are not spawned children of our parent
        let payload: SpawnPayload
        do {
            payload = try SpawnCoding.decode(SpawnPayload.self, from: readAll(fd))
            close(fd)
            if payload.daemon { mp_die_with_parent(payload.parentPID) }
            try RegionRegistry.adopt(payload.regions)
        } catch {
            writeError("multiprocessing spawn bootstrap failed: \(error)\n")
            exit(1)
        }
        CurrentProcess.setSpawned(name: payload.name, parentPID: payload.parentPID)
        guard let target = targets.first(where: { $0.name == payload.target }) else {
            writeError("Process \(payload.name): no spawn target named \"\(payload.target)\" is registered\n")
            exit(1)
        }
        let done = Event()
        let failure = Locked<String?>(nil)
        let argument = payload.argument
        Task {
            do {
                try await target.runSpawned(argument: argument)
            } catch {
                failure.withLock { $0 = "Process \(payload.name): \(error)\n" }
            }
            done.set()
        }
        done.wait()
        if let message = failure.withLock({ $0 }) {
            writeError(message)
            mp_flush_stdio()
            exit(1)
        }
        mp_flush_stdio()
        exit(0)
    }

    /// Parent side: writes the payload to a memfd and spawns the executable with it, keeping open
    /// only the descriptors the argument refers to (its connection ends, and the regions of its
    /// queues, shared memory and primitives): a child must not hold the ends of pipes it was never
    /// given, or their readers would never see the end of the stream.
    static func start(_ request: SpawnRequest, name: String, daemon: Bool) throws(ProcessError) -> Int32 {
        let references = SpawnReferences()
        let regions: [Region]
        let bytes: [UInt8]
        do {
            let argument = try SpawnReferences.$current.withValue(references) { try request.argument() }
            regions = references.regions
            let payload = SpawnPayload(
                target: request.target, argument: argument, name: name, daemon: daemon,
                parentPID: mp_process_id(),
                regions: regions.map { RegionDescriptor(id: $0.id, fd: $0.fd, size: $0.size) })
            bytes = try SpawnCoding.encode(payload)
        } catch {
            throw .argumentEncoding(String(describing: error))
        }
        let fd = mp_memfd_create("multiprocessing-spawn", 0)
        guard fd >= 0 else { throw .system(Errno(rawValue: -fd), function: "memfd_create") }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard written == bytes.count else { throw .system(Errno(rawValue: errno), function: "pwrite") }

        var environment = currentEnvironment().filter { !$0.hasPrefix(environmentKey + "=") }
        environment.append("\(environmentKey)=\(fd)")
        let path = executable
        let keep = regions.map(\.fd) + references.descriptors + [fd]
        return withExtendedLifetime(regions) {
            withCStrings([path]) { argv in
                withCStrings(environment) { envp in
                    keep.withUnsafeBufferPointer { mp_spawn(path, argv, envp, $0.baseAddress, Int32($0.count)) }
                }
            }
        }
    }

    private static func readAll(_ fd: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var offset: off_t = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if n <= 0 { break }
            bytes += buffer[0..<n]
            offset += off_t(n)
        }
        return bytes
    }

    private static func currentEnvironment() -> [String] {
        var result: [String] = []
        var cursor = environ
        while let entry = cursor.pointee {
            result.append(String(cString: entry))
            cursor += 1
        }
        return result
    }
}

/// What an argument being encoded for a spawned child refers to: the regions that its queues,
/// shared memory and primitives live in, and its connection ends' descriptors. Their encodings
/// report here while ``Spawn`` encodes an argument (a task-local, so only that encoding counts),
/// and the child is given exactly these.
final class SpawnReferences: @unchecked Sendable {
    @TaskLocal static var current: SpawnReferences?

    private let found = Locked<(regions: [UInt64: Region], descriptors: Set<Int32>)>(([:], []))

    /// Called by an encoding that names `region` (it stays alive until the spawn is done).
    static func note(_ region: Region) {
        current?.found.withLock { $0.regions[region.id] = region }
    }

    /// Called by an encoding that names the descriptor `fd`.
    static func note(descriptor fd: Int32) {
        current?.found.withLock { _ = $0.descriptors.insert(fd) }
    }

    var regions: [Region] { found.withLock { Array($0.regions.values) } }
    var descriptors: [Int32] { found.withLock { Array($0.descriptors) } }
}

/// What a spawned child reads at bootstrap.
struct SpawnPayload: Codable {
    var target: String
    var argument: [UInt8]
    var name: String
    var daemon: Bool
    var parentPID: Int32
    var regions: [RegionDescriptor]
}

/// The encoding of spawn arguments (rare, small: JSON is plenty).
enum SpawnCoding {
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        Array(try JSONEncoder().encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}

/// Calls `body` with a NULL-terminated C array of the strings.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
