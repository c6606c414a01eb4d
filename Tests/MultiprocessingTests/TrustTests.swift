import CMultiprocessing
import MultiprocessingTestTargets
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// What another process can do to this one through what they share: a region's descriptor, the
/// bootstrap's environment variable, a named region's file (see <doc:NamedSharedMemory>).
@Suite("Trust boundaries")
struct TrustTests {
    init() { useTestHelper() }

    @Test("an anonymous region cannot be shrunk or grown, here or in a forked child")
    func regionsAreSealed() throws {
        let region = try Region.anonymous(size: 8192, label: "trust-test")
        errno = 0
        #expect(ftruncate(region.fd, 0) == -1 && errno == EPERM)
        #expect(ftruncate(region.fd, 1 << 20) == -1 && errno == EPERM)
        #expect(mp_fd_size(region.fd) == 8192)
        let fd = region.fd
        #expect(try runInChild(timeout: .seconds(30)) { if ftruncate(fd, 0) == 0 { exit(3) } } == 0)
        region.base.storeBytes(of: 42, toByteOffset: 8184, as: UInt64.self)  // the last word is still there
        #expect(region.base.load(fromByteOffset: 8184, as: UInt64.self) == 42)
    }

    @Test("a child maps only sealed regions of at least their stated size; anything else is a typed error")
    func adoptedRegionsAreChecked() throws {
        var ends: [Int32] = [-1, -1]
        #expect(pipe(&ends) == 0)
        defer { ends.forEach { _ = close($0) } }
        let unsealed = unsealedFile()
        #expect(ftruncate(unsealed, 8192) == 0)
        defer { close(unsealed) }
        let small = mp_memfd_create("trust-small", 4096)
        #expect(small >= 0)
        defer { close(small) }
        for (fd, size) in [(ends[0], 4096), (unsealed, 4096), (small, 8192), (small, 0), (-1, 4096)] {
            let descriptor = RegionDescriptor(id: RegionRegistry.newID(), fd: fd, size: size)
            #expect(throws: SharedMemoryError.invalidDescriptor(fd)) { try RegionRegistry.adopt([descriptor]) }
        }
        let good = RegionDescriptor(id: RegionRegistry.newID(), fd: dup(small), size: 4096)
        try RegionRegistry.adopt([good])
        #expect(RegionRegistry.lookup(good.id)?.size == 4096)
    }

    @Test("a spawned child runs only a payload its parent made (a sealed memfd), whatever the environment says")
    func bootstrapRefusesForgedPayloads() throws {
        let job = ReportJob(memory: try SharedMemory(size: 64), daemon: false)
        let request = TargetRequest(target: TestTargets.report.name) { try SpawnCoding.encode(job) }
        let launch = try ChildLaunch(request, name: "forged", daemon: false, spawned: true)
        let bytes = try #require(Spawn.readPayload(launch.payload))
        let others = Array(launch.descriptors.dropLast())  // the payload's descriptor comes last
        // The same bytes, in an unsealed shared-memory file and in a plain file: refused before
        // anything runs.
        let unsealed = unsealedFile()
        var path = Array("/tmp/mp-forged-XXXXXX".utf8CString)
        let plain = mkstemp(&path)
        path.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer {
            close(unsealed)
            close(plain)
        }
        for fd in [unsealed, plain] {
            #expect(bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == bytes.count)
            let pid = try Spawn.start(payload: fd, keeping: others + [fd])
            #expect(try exitCode(of: pid) == 1)
            #expect(job[3] == 0)
        }
        #expect(Spawn.readPayload(unsealed) == nil && Spawn.readPayload(plain) == nil)
        // The parent's own payload runs: the refusals above were not for another reason.
        let pid = try Spawn.start(payload: launch.payload, keeping: launch.descriptors)
        #expect(try exitCode(of: pid) == 0)
        #expect(job[3] == 1)
    }

    @Test("attach refuses a named region another user owns or may open, unless asked")
    func attachChecksOwnerAndMode() throws {
        let name = "mp-trust-\(getpid())"
        let created = try SharedMemory(create: name, size: 64)
        defer { try? created.unlink() }
        #expect(try SharedMemory(attach: name).size == 64)
        let fd = shm_open("/" + name, O_RDWR, 0)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(fchmod(fd, 0o666) == 0)
        #expect(throws: SharedMemoryError.untrusted(name)) { try SharedMemory(attach: name) }
        #expect(try SharedMemory(attach: name, allowingOtherOwners: true).size == 64)
        #expect(fchmod(fd, 0o600) == 0)
        if geteuid() == 0 {  // as root the test can give the file away
            #expect(fchown(fd, 65534, gid_t(bitPattern: -1)) == 0)
            #expect(throws: SharedMemoryError.untrusted(name)) { try SharedMemory(attach: name) }
            #expect(fchown(fd, 0, gid_t(bitPattern: -1)) == 0)
        }
        #expect(try SharedMemory(attach: name).size == 64)
    }

    @Test("a ring above 4 GiB is refused before anything is made")
    func capacityIsBounded() {
        for capacity in [1 << 40, (1 << 32) + 1, Int.max] {
            #expect(throws: QueueError.invalidCapacity(capacity)) { try Queue<Int>(capacity: capacity) }
        }
    }
}

/// A shared-memory file that is not sealed (its name already unlinked).
private func unsealedFile() -> Int32 {
    let name = "/mp-trust-unsealed-\(getpid())-\(mp_monotonic_ns())"
    let fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0o600)
    shm_unlink(name)
    return fd
}

/// Waits up to 30 s for the child `pid` and returns its exit code (-signal if killed); a child
/// still running then is killed, and the test fails on its code.
private func exitCode(of pid: Int32) throws -> Int32 {
    let deadline = mp_monotonic_ns() + 30_000_000_000
    var status: Int32 = 0
    while waitpid(pid, &status, WNOHANG) == 0 {
        if mp_monotonic_ns() > deadline {
            kill(pid, SIGKILL)
            waitpid(pid, &status, 0)
            break
        }
        usleep(1000)
    }
    let signal = status & 0x7f
    return signal == 0 ? (status >> 8) & 0xff : -signal
}
