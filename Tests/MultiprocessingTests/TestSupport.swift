import Multiprocessing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Integers in shared memory that forked and spawned children can write and the test can read.
final class SharedCounters: @unchecked Sendable {
    let memory: SharedMemory
    init(count: Int = 8) throws { memory = try SharedMemory(size: count * MemoryLayout<Int>.stride) }
    subscript(i: Int) -> Int {
        get { memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self)[i] }
        set { memory.buffer.baseAddress!.assumingMemoryBound(to: Int.self)[i] = newValue }
    }
}

/// Points spawn at the helper executable that sits next to the test bundle.
func useTestHelper() {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    precondition(n > 0)
    let exe = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var dir = exe
    while let last = dir.last, last != "/" { dir.removeLast() }
    Spawn.executable = dir + "MultiprocessingTestHelper"
}

/// Whether a process with this pid exists at all (a zombie counts).
func processExists(_ pid: Int32) -> Bool {
    access("/proc/\(pid)", F_OK) == 0
}

/// Runs `body` in a forked child and returns the child's exit code.
func runInChild(_ body: @escaping () throws -> Void) throws -> Int32? {
    let p = Process(target: body)
    try p.start()
    try p.join()
    return p.exitCode
}

/// Whether this test process runs under ThreadSanitizer (its runtime is linked in).
let runningUnderThreadSanitizer = dlsym(nil, "__tsan_init") != nil
