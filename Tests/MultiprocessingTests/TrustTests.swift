import CMultiprocessing
import MultiprocessingTestTargets
import Synchronization
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

    @Test("a bootstrap payload reads back as written; every truncation, stray byte and bad field is a typed error")
    func bootstrapPayloadIsValidated() throws {
        let child = ChildPayload(
            target: "täget", argument: [0, 1, 255], name: "child-1", daemon: true, dieWithParent: false,
            parentPID: 4242, regions: [RegionDescriptor(id: 7, fd: 9, size: 1 << 20)], tracker: 5)
        var bare = child
        (bare.regions, bare.tracker, bare.argument, bare.name) = ([], nil, [], "")
        let server = BootstrapPayload.forkServer(ForkServerSetup(socket: 3, client: 99, addedBindNow: true))
        let plainServer = BootstrapPayload.forkServer(ForkServerSetup(socket: 3, client: 99, addedBindNow: false))
        for payload in [BootstrapPayload.child(child), .child(bare), server, plainServer] {
            let bytes = payload.encoded()
            #expect(try BootstrapPayload(decoding: bytes) == payload)
            for length in 0..<bytes.count {  // every proper prefix: refused, never read past
                #expect(throws: BinaryCodingError.self) { try BootstrapPayload(decoding: Array(bytes[..<length])) }
            }
            #expect(throws: BinaryCodingError.self) { try BootstrapPayload(decoding: bytes + [0]) }
        }
        let good = BootstrapPayload.child(child).encoded()
        func altered(_ offset: Int, _ value: UInt8) -> [UInt8] {
            var bytes = good
            bytes[offset] = value
            return bytes
        }
        let flags = 8 + 1 + (4 + 6) + (4 + 3) + (4 + 7)  // magic, kind, target, argument, name
        let regionCount = flags + 1 + 4 + 4
        for (bytes, what) in [
            (altered(0, 0), "magic"), (altered(8, 3), "kind"), (altered(8 + 1 + 4, 0xFF), "UTF-8"),
            (altered(flags, 8), "flags"), (altered(regionCount + 3, 0x7F), "a region count the input cannot hold"),
            (altered(regionCount + 4 + 12 + 7, 0x80), "a region size above Int.max"),
        ] {
            #expect(throws: BinaryCodingError.self, "\(what)") { try BootstrapPayload(decoding: bytes) }
        }
        #expect(throws: BinaryCodingError.truncated) { try BootstrapPayload(decoding: altered(8 + 1 + 3, 0x40)) }
        var serverFlags = server.encoded()
        serverFlags[8 + 1 + 4 + 4] = 2  // a forkserver flag nobody defined
        #expect(throws: BinaryCodingError.self) { try BootstrapPayload(decoding: serverFlags) }
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

    @Test("an arena's free-list head written by another process is checked before it is used")
    func arenaIndexesAreChecked() throws {
        let (arena, slot) = Arenas.allocate(kind: .lock)
        arena.free(slot)
        let header = arena.region.base.assumingMemoryBound(to: mp_arena_header_t.self)
        header.pointee.free_head = 0xFFFF_FFF0  // far outside the region
        let (again, fresh) = Arenas.allocate(kind: .lock)
        #expect(again === arena && fresh.index > 0 && Int(fresh.index) < arena.region.size / Arena.slotSize)
        #expect(header.pointee.free_head == 0)
        let lock = Lock()  // the primitives go on working
        try lock.acquire()
        try lock.release()
        again.free(fresh)
    }

    @Test("an arena's free-list head that names a live slot (a garbled or cyclic list) never hands it out again")
    func arenaFreeListOnALiveSlot() throws {
        let (arena, live) = Arenas.allocate(kind: .lock)
        let header = arena.region.base.assumingMemoryBound(to: mp_arena_header_t.self)
        header.pointee.free_head = live.index  // another process's write: the live slot as free
        let (again, fresh) = Arenas.allocate(kind: .semaphore)
        #expect(!(again === arena && fresh.index == live.index))  // before: the same slot, two objects
        #expect(arena.validate(index: live.index, generation: live.generation, kind: .lock))
        again.free(fresh)
        arena.free(live)
    }

    @Test("a message over maxMessageSize is refused while it is encoded, never held whole; the queue is intact")
    func messageSizeIsBoundedWhileEncoding() throws {
        let q = try Queue<Elements>(maxMessageSize: 4096)
        try q.put(Elements(count: 100))
        // A million elements: the encoder stops within one entry of the limit.
        Elements.encoded.store(0, ordering: .relaxed)
        let error = #expect(throws: QueueError.self) { try q.put(Elements(count: 1_000_000)) }
        guard case .messageTooLarge(let size, let limit) = error else {
            Issue.record("expected messageTooLarge, got \(String(describing: error))")
            return
        }
        #expect(size > 4096 && size < 4096 + 64)
        #expect(limit == 4096)
        let encoded = Elements.encoded.load(ordering: .relaxed)
        #expect(encoded > 4096 / 9 && encoded <= 4096)  // elements of 1–9 bytes, none past the limit
        // A long string or byte run is refused before it is copied: the size reported is the one
        // it would have reached.
        let text = try Queue<String>(maxMessageSize: 4096)
        #expect(throws: QueueError.messageTooLarge(size: 4 + 1 + 3 + 100_000, limit: 4096)) {
            try text.put(String(repeating: "x", count: 100_000))
        }
        let bytes = try Queue<[UInt8]>(maxMessageSize: 4096)
        #expect(throws: QueueError.messageTooLarge(size: 4 + 1 + 3 + 100_000, limit: 4096)) {
            try bytes.put([UInt8](repeating: 1, count: 100_000))
        }
        try bytes.put([UInt8](repeating: 2, count: 4089))  // exactly the limit: fingerprint, tag, 2-byte length
        #expect(throws: QueueError.messageTooLarge(size: 4097, limit: 4096)) {
            try bytes.put([UInt8](repeating: 2, count: 4090))
        }
        #expect(try q.get(timeout: .seconds(5)).count == 100)
        #expect(try bytes.get(timeout: .seconds(5)).count == 4089)
        #expect(q.count == 0 && bytes.count == 0 && text.count == 0)
    }

    @Test("a handle naming another of the process's regions (a lock arena, a shared memory) is refused")
    func forgedRegionIDs() throws {
        let lock = Lock()
        let memory = try SharedMemory(size: 4096)
        let arenaID = lock.object.arena.region.id
        // A SharedMemory's encoding, its id swapped for the arena's: it would alias the locks' words.
        let forged = #"{"region":\#(arenaID)}"#
        #expect(throws: SharedMemoryError.staleHandle) {
            _ = try JSONDecoderShim.decode(SharedMemory.self, from: forged)
        }
        // A lock's handle naming the shared memory, whose bytes any peer may write: here a fake arena
        // with a lock in slot 1.
        let base = memory.buffer.baseAddress!
        base.assumingMemoryBound(to: mp_arena_header_t.self).pointee.magic = MP_ARENA_MAGIC
        (base + Arena.slotSize).assumingMemoryBound(to: mp_arena_slot_t.self).pointee.kind = SharedKind.lock.rawValue
        let handle = #"{"region":\#(memory.region.id),"slot":1,"generation":0,"kind":1}"#
        #expect(throws: SharedMemoryError.unknownRegion(memory.region.id)) {
            _ = try JSONDecoderShim.decode(Lock.self, from: handle)
        }
        // In a spawned child the regions are adopted (no label of their own): the same refusals.
        let adoptedArena = RegionRegistry.newID()
        let adoptedMemory = RegionRegistry.newID()
        try RegionRegistry.adopt([
            RegionDescriptor(
                id: adoptedArena, fd: dup(lock.object.arena.region.fd), size: lock.object.arena.region.size),
            RegionDescriptor(id: adoptedMemory, fd: dup(memory.region.fd), size: memory.region.size),
        ])
        #expect(throws: SharedMemoryError.staleHandle) {
            _ = try JSONDecoderShim.decode(SharedMemory.self, from: #"{"region":\#(adoptedArena)}"#)
        }
        let genuine = try JSONDecoderShim.decode(SharedMemory.self, from: #"{"region":\#(adoptedMemory)}"#)
        memory.buffer[4000] = 42
        #expect(genuine.buffer[4000] == 42)
        let encodedLock = try JSONDecoderShim.encode(lock)
        #expect(try JSONDecoderShim.decode(Lock.self, from: encodedLock).object.payload == lock.object.payload)
    }
}

/// A value that encodes `count` integers one at a time and counts them as it goes (its unused
/// string keeps it from being `BitwiseCopyable`, so that a queue encodes it rather than copying it).
private struct Elements: Codable {
    static let encoded = Atomic<Int>(0)
    let count: Int
    var unused = ""

    init(count: Int) { self.count = count }

    init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        var count = 0
        while !container.isAtEnd {
            _ = try container.decode(Int.self)
            count += 1
        }
        self.count = count
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        for i in 0..<count {
            try container.encode(i)
            Elements.encoded.add(1, ordering: .relaxed)
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
