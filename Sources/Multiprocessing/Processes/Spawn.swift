import CMultiprocessing
import SystemPackage

#if canImport(Glibc)
    import Glibc
#endif

/// A function a child process can run, found by `name` in the child: run by the forkserver
/// (the default) or by spawn.
///
/// Register every target with ``Spawn/bootstrap(_:)-(SpawnEntry...)`` as the first thing `main`
/// does, in the parent and the child alike (they run the same program), as Python programs guard
/// their entry with `if __name__ == '__main__'`.
///
/// ```swift
/// struct WorkerArguments: Codable, Sendable { var lock: Lock; var count: Int }
/// let worker = SpawnTarget<WorkerArguments>("worker") { args in
///     for _ in 0..<args.count { try args.lock.withLock { print("working") } }
/// }
/// @main struct App {
///     static func main() throws {
///         Spawn.bootstrap(worker)                 // in a child or the forkserver: never returns
///         let p = Process(target: worker, argument: WorkerArguments(lock: Lock(), count: 10))
///         try p.start(); try p.join()
///     }
/// }
/// ```
public struct SpawnTarget<Argument: Codable & Sendable>: Sendable, SpawnEntry {
    /// The name the child looks the target up by: unique within the program, the same in the
    /// parent and the child.
    public let name: String
    let body: @Sendable (Argument) async throws -> Void

    /// A target named `name` (unique within the program) running `body` in the child.
    public init(_ name: String, _ body: @escaping @Sendable (Argument) async throws -> Void) {
        self.name = name
        self.body = body
    }

    /// Decodes `bytes` as the target's `Argument` and runs its body in the child (called by
    /// ``Spawn/bootstrap(_:)-(SpawnEntry...)``, not by user code).
    public func runSpawned(argument bytes: [UInt8]) async throws {
        try await body(SpawnCoding.decode(Argument.self, from: bytes))
    }
}

extension SpawnTarget: ChildPreparing {
    func prepareChildren() {
        _ = TypeFingerprint.of(Argument.self)
    }
}

/// An entry that does, once in the forkserver, the one-time work each of its children would
/// otherwise repeat (see ``Fork/prepareServer(for:)``).
protocol ChildPreparing {
    func prepareChildren()
}

/// A registered entry point of a child process, whatever its argument type.
public protocol SpawnEntry: Sendable {
    /// The entry's name, unique within the program: the child finds its entry by it.
    var name: String { get }
    /// Decodes the argument and runs the target (called by ``Spawn/bootstrap(_:)-(SpawnEntry...)``).
    func runSpawned(argument: [UInt8]) async throws
}

/// The program's entry for the spawn and forkserver start methods: the program is started again
/// with a selector in its environment, and `bootstrap` recognises it.
public enum Spawn {
    static let environmentKey = "SWIFT_MULTIPROCESSING_BOOTSTRAP"
    private static let executablePath = Locked("/proc/self/exe")

    /// The program that spawned children and the forkserver run (Python's `set_executable`); this
    /// program by default. Tests point it at a helper executable that registers the same targets.
    public static var executable: String {
        get { executablePath.withLock { $0 } }
        set { executablePath.withLock { $0 = newValue } }
    }

    /// Call first in `main`. In a spawned child, runs the requested target and exits the process
    /// (status 0, or 1 after printing a thrown error); in the forkserver, serves fork requests until
    /// the program ends, each child running the target it was asked for; elsewhere returns at once.
    ///
    /// Call it before the program starts any thread or task: the forkserver forks the program's
    /// image as it is at this call, and refuses to serve (the start method then fails with
    /// ``ProcessError/forkServerFailed(_:)``) if another thread already runs.
    public static func bootstrap(_ targets: any SpawnEntry...) {
        bootstrap(targets)
    }

    /// Call first in `main`; see ``bootstrap(_:)-(SpawnEntry...)``.
    public static func bootstrap(_ targets: [any SpawnEntry]) {
        guard let value = getenv(environmentKey) else { return }
        let text = String(cString: value)
        // Refused like a descriptor that holds no payload: ignored, it would stay set, and every
        // start of this program's would fail as if it had not bootstrapped.
        guard let fd = Int32(text) else {
            writeError("multiprocessing bootstrap refused: \(environmentKey)=\"\(text)\" is not a descriptor number\n")
            exit(1)
        }
        unsetenv(environmentKey)  // our own children are not started by our parent
        guard let bytes = readPayload(fd) else {
            writeError(
                "multiprocessing bootstrap refused: descriptor \(fd) is not a payload a parent process made "
                    + "(a sealed memfd)\n")
            exit(1)
        }
        closeDescriptor(fd)
        let payload: BootstrapPayload
        do {
            payload = try BootstrapPayload(decoding: bytes)
        } catch {
            writeError("multiprocessing bootstrap failed: \(error)\n")
            exit(1)
        }
        switch payload {
        case .child(let child): runChild(child, targets: targets, forked: false)
        case .forkServer(let setup): ForkServer.serve(setup, targets: targets)
        }
    }

    /// Whether this program was started as a child or forkserver and has not bootstrapped: it then
    /// must not start children of its own (they would start it again, without end).
    static var bootstrapPending: Bool { getenv(environmentKey) != nil }

    /// The metadata ``runChild(_:targets:)`` makes, made ahead in the forkserver.
    static let childMetadata: [Any.Type] = [Locked<String?>.self, TaskPriority?.self, Task<Void, Never>.self]

    /// Runs the target a child was started for, then exits the process: as a program does when it
    /// was spawned, as a forked child does (``Fork/exitChild(_:)``) when the forkserver `forked` it.
    static func runChild(_ payload: ChildPayload, targets: [any SpawnEntry], forked: Bool) -> Never {
        func end(_ code: Int32) -> Never {
            if forked { Fork.exitChild(code) }
            mp_flush_stdio()
            exit(code)
        }
        if payload.dieWithParent { mp_die_with_parent(payload.parentPID) }
        if let tracker = payload.tracker { ResourceTracker.adopt(descriptor: tracker) }
        do {
            try RegionRegistry.adopt(payload.regions)
        } catch {
            writeError("Process \(payload.name): its shared memory could not be mapped: \(error)\n")
            end(1)
        }
        CurrentProcess.setStarted(name: payload.name, daemon: payload.daemon, parentPID: payload.parentPID)
        guard let target = targets.first(where: { $0.name == payload.target }) else {
            writeError("Process \(payload.name): no spawn target named \"\(payload.target)\" is registered\n")
            end(1)
        }
        // A process-private event: a shared ``Event`` would map an arena into every child. The
        // task starts on this thread and runs here until it first suspends: a target that never
        // does (most) runs without starting the concurrency runtime's threads at all.
        let done = LocalEvent()
        let failure = Locked<String?>(nil)
        let argument = payload.argument
        Task.immediate {
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
            end(1)
        }
        end(0)
    }

    /// Parent side of the spawn start method: the executable started with `payload` (a memfd
    /// holding a ``BootstrapPayload``), keeping open only `descriptors` (under the same numbers),
    /// with this process's environment and the `adding` entries ("NAME=value").
    static func start(
        payload: Int32, keeping descriptors: [Int32], executable path: String = executable, adding: [String] = []
    ) throws(ProcessError) -> Int32 {
        let pid = withCStrings([path]) { argv in
            withEnvironment(adding: ["\(environmentKey)=\(payload)"] + adding) { envp in
                descriptors.withUnsafeBufferPointer { mp_spawn(path, argv, envp, $0.baseAddress, Int32($0.count)) }
            }
        }
        guard pid > 0 else { throw .system(Errno(rawValue: -pid), function: "posix_spawn") }
        return pid
    }

    /// The largest bootstrap payload a child reads.
    static let maximumPayload = 1 << 30

    /// Reads the whole payload behind `fd`, in one read of its size (a child pays for every page it
    /// touches: no zeroed 64 KiB buffer). Nil unless `fd` is what a parent made
    /// (``ChildLaunch/memfd(holding:)``: a memfd sealed against every change) and at most
    /// ``maximumPayload`` bytes: the environment variable that names it can be set by anyone, and
    /// the bytes are then trusted as much as the parent that wrote them.
    static func readPayload(_ fd: Int32) -> [UInt8]? {
        let checked = mp_memfd_check(fd, 0, 1)
        guard checked > 0, checked <= maximumPayload else { return nil }
        let size = Int(checked)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = 0
            while count < size {
                let n = (try? systemCall { pread(fd, buffer.baseAddress! + count, size - count, off_t(count)) }) ?? 0
                if n == 0 { break }  // shorter than it said: what was read is decoded, and checked there
                count += n
            }
        }
    }

    /// Calls `body` with a NULL-terminated copy of this process's environment, but for the
    /// bootstrap variable, followed by the `adding` entries. Copied as bytes, not Strings: an entry
    /// that is not UTF-8 (a Latin-1 path) reaches the child as it is, not repaired.
    private static func withEnvironment<R>(
        adding: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R
    ) -> R {
        let prefix = environmentKey + "="
        var pointers: [UnsafeMutablePointer<CChar>?] = []
        var cursor = environ
        while let entry = cursor.pointee {
            if strncmp(entry, prefix, prefix.utf8.count) != 0 { pointers.append(strdup(entry)) }
            cursor += 1
        }
        pointers += adding.map { strdup($0) }
        pointers.append(nil)
        defer { for p in pointers { free(p) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}

/// A ``ChildLaunch`` held by reference, for a batch of them (``Process/startAll(_:)``).
final class PreparedLaunch {
    let launch: ChildLaunch
    init(_ launch: consuming ChildLaunch) { self.launch = launch }
    var descriptors: [Int32] { launch.descriptors }
}

/// A registered target and its argument, encoded when the child starts.
struct TargetRequest {
    var target: String
    var argument: () throws -> [UInt8]
}

/// A child's start, prepared in the parent: its payload in a memfd, and every descriptor it must
/// be given (the payload's, its argument's regions', and the connection ends the argument names),
/// which the child gets under the same numbers. The payload's descriptor is closed when this goes.
struct ChildLaunch: ~Copyable {
    /// The memfd holding the encoded ``BootstrapPayload``.
    let payload: Int32
    /// Kept alive until the child has its own mappings of them.
    let regions: [Region]
    /// Every descriptor the child keeps, the payload's last.
    let descriptors: [Int32]

    /// Encodes `request` for a child named `name`: a child of the spawn start method when
    /// `dieWithParent` may apply, else of the forkserver.
    init(_ request: TargetRequest, name: String, daemon: Bool, spawned: Bool) throws(ProcessError) {
        let references = SpawnReferences()
        let argument: [UInt8]
        do {
            argument = try SpawnReferences.$current.withValue(references) { try request.argument() }
        } catch {
            throw .argumentEncoding(String(describing: error))
        }
        // The payload stores lengths as UInt32, and a child reads at most `maximumPayload` bytes.
        guard argument.count <= Spawn.maximumPayload else {
            throw .argumentEncoding(
                "\(argument.count) bytes: a child's argument may take at most \(Spawn.maximumPayload)")
        }
        let regions = references.regions
        let tracker = ResourceTracker.inheritableDescriptor
        let child = ChildPayload(
            target: request.target, argument: argument, name: name, daemon: daemon,
            dieWithParent: spawned && daemon, parentPID: mp_process_id(),
            regions: regions.map { RegionDescriptor(id: $0.id, fd: $0.fd, size: $0.size) }, tracker: tracker)
        let bytes = BootstrapPayload.child(child).encoded()
        // The whole payload, its header, name and regions with the argument, is what the child reads.
        guard bytes.count <= Spawn.maximumPayload else {
            throw .argumentEncoding(
                "a payload of \(bytes.count) bytes: a child's may take at most \(Spawn.maximumPayload)")
        }
        let fd = try ChildLaunch.memfd(holding: bytes)
        payload = fd
        self.regions = regions
        descriptors = regions.map(\.fd) + references.descriptors + (tracker.map { [$0] } ?? []) + [fd]
    }

    /// A memfd (close-on-exec) holding `bytes` from offset 0, sealed against every change: a child
    /// reads only such a payload (``Spawn/readPayload(_:)``).
    static func memfd(holding bytes: [UInt8]) throws(ProcessError) -> Int32 {
        let fd = bytes.withUnsafeBytes {
            mp_memfd_create_sealed("multiprocessing-bootstrap", $0.baseAddress, UInt64($0.count))
        }
        guard fd >= 0 else { throw .system(Errno(rawValue: -fd), function: "memfd_create") }
        return fd
    }

    deinit { closeDescriptor(payload) }
}

/// What an argument being encoded for a child refers to: the regions that its queues, shared
/// memory and primitives live in, and its connection ends' descriptors. Their encodings report
/// here while ``ChildLaunch`` encodes an argument (a task-local, so only that encoding counts),
/// and the child is given exactly these.
final class SpawnReferences: @unchecked Sendable {
    @TaskLocal static var current: SpawnReferences?

    private let found = Locked<(regions: [UInt64: Region], descriptors: Set<Int32>)>(([:], []))

    /// Called by an encoding that names `region` (it stays alive until the child has started).
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

/// The encoding of child arguments: the library's binary coding, whose type
/// fingerprint also refuses an argument of another type (decoding it is on every child's start path).
enum SpawnCoding {
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        try BinaryCoding.encode(value)
    }

    static func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try bytes.withUnsafeBytes { buffer throws -> T in try BinaryCoding.decode(type, from: buffer) }
    }
}

/// Calls `body` with a NULL-terminated C array of the strings.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
