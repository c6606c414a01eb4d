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

/// A value shared between test threads under the library's own Lock: ThreadSanitizer sees its
/// atomics, where it cannot see Synchronization.Mutex's futex (and reports its users as racing).
final class Guarded<Value>: @unchecked Sendable {
    private let lock = Lock()
    private var value: Value
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        try! lock.acquire()
        defer { try! lock.release() }
        return try body(&value)
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

/// Whether this test process runs under ThreadSanitizer (its runtime is linked in).
let runningUnderThreadSanitizer = dlsym(nil, "__tsan_init") != nil

/// Whether this test process runs under ThreadSanitizer or AddressSanitizer.
let runningUnderSanitizer = runningUnderThreadSanitizer || dlsym(nil, "__asan_init") != nil

/// Whether a test may rewind the system's next pid (/proc/sys/kernel/ns_last_pid) to force a pid's
/// reuse: as root, and only when no other test runs beside it (`MP_TEST_PID_REWIND=1`, which
/// `make test` sets in a run of those tests alone after the parallel suite, and the sanitizers'
/// one-at-a-time runs set too). A rewind hands recycled pids to every process and thread that
/// starts meanwhile: in the parallel suite a pool's maxTasksPerChild test saw one pid in two of
/// its workers.
let pidRewindAllowed =
    access("/proc/sys/kernel/ns_last_pid", W_OK) == 0 && getenv("MP_TEST_PID_REWIND").map { String(cString: $0) } == "1"

let pidRewindComment: Comment =
    "rewinds the system's next pid: runs as root with MP_TEST_PID_REWIND=1, alone (make test runs it so)"

/// Runs `body` in a forked child and returns its exit code. A child still running after `timeout`
/// is killed (its code is then -SIGKILL), so a hang fails the test instead of hanging the suite.
func runInChild(timeout: Duration, _ body: @escaping () throws -> Void) throws -> Int32? {
    let p = Process(target: body)
    try p.start()
    if try !p.join(timeout: timeout) {
        try p.kill()
        try p.join()
    }
    return p.exitCode
}

/// Polls `condition` every millisecond for up to `timeout`; returns whether it came true.
func eventually(timeout: Duration = .seconds(20), _ condition: () throws -> Bool) rethrows -> Bool {
    let end = ContinuousClock.now + timeout
    while ContinuousClock.now < end {
        if try condition() { return true }
        usleep(1000)
    }
    return try condition()
}

/// CPU time (user + system) the process `pid` has used, in clock ticks, from /proc/<pid>/stat.
func cpuTicks(_ pid: Int32) -> Int {
    guard let f = fopen("/proc/\(pid)/stat", "r") else { return 0 }
    defer { fclose(f) }
    var buffer = [CChar](repeating: 0, count: 1024)
    guard fgets(&buffer, 1024, f) != nil else { return 0 }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    guard let paren = line.lastIndex(of: ")") else { return 0 }
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let fields = line[line.index(after: paren)...].split(separator: " ")
    guard fields.count > 13, let user = Int(fields[11]), let system = Int(fields[12]) else { return 0 }
    return user + system
}

/// Runs here, once, what a forked closure child of a queue test runs: a put and a get with and
/// without a timeout (and a task done), and a look at shared counters. A child forked beside the
/// parallel suite's threads must find the generic code it calls already instantiated: a Swift
/// runtime lock another thread held at the fork is held forever in the child (the fork hazard).
func warmForForkedChildren(_ queue: Queue<Int>) throws {
    try queue.put(-9)
    try queue.put(-9, timeout: .seconds(5))
    _ = try queue.get()
    _ = try queue.get(timeout: .seconds(5))
    if let joinable = queue as? JoinableQueue<Int> {
        try joinable.taskDone()
        try joinable.taskDone()
    }
    let counters = try SharedCounters()
    counters[0] += 1
    _ = eventually(timeout: .zero) { counters[0] == 1 }
}
