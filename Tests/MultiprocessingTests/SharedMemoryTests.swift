import Multiprocessing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("SharedMemory")
struct SharedMemoryTests {
    static func uniqueName(_ tag: String) -> String {
        "mp-test-\(getpid())-\(tag)-\(UInt32.random(in: 0...UInt32.max))"
    }

    @Test("anonymous region: shared with a forked child")
    func anonymous() throws {
        let m = try SharedMemory(size: 4096)
        #expect(m.name == nil)
        #expect(m.size == 4096)
        let child = Process { m.buffer.storeBytes(of: 42, toByteOffset: 100, as: UInt32.self) }
        try child.start()
        try child.join()
        #expect(m.buffer.load(fromByteOffset: 100, as: UInt32.self) == 42)
    }

    @Test("named region: create, attach, data shared, creator unlinks")
    func named() throws {
        let name = Self.uniqueName("named")
        do {
            let created = try SharedMemory(create: name, size: 1000)
            #expect(created.size == 1000)
            created.buffer.storeBytes(of: 0xDEAD_BEEF, as: UInt32.self)
            let attached = try SharedMemory(attach: name)
            #expect(attached.size == 1000)
            #expect(attached.buffer.load(as: UInt32.self) == 0xDEAD_BEEF)
            #expect(throws: SharedMemoryError.alreadyExists(name)) { try SharedMemory(create: name, size: 10) }
            #expect(access("/dev/shm/\(name)", F_OK) == 0)
        }
        // Both objects are gone: the creator unlinked the name.
        #expect(access("/dev/shm/\(name)", F_OK) != 0)
        #expect(throws: SharedMemoryError.notFound(name)) { try SharedMemory(attach: name) }
    }

    @Test("explicit unlink, then attach fails; a second unlink does nothing")
    func unlink() throws {
        let name = Self.uniqueName("unlink")
        let m = try SharedMemory(create: name, size: 64)
        try m.unlink()
        try m.unlink()
        #expect(throws: SharedMemoryError.notFound(name)) { try SharedMemory(attach: name) }
        m.buffer.storeBytes(of: 1, as: UInt8.self)  // still mapped
    }

    @Test("attaching what is not ours, too small, or of another version is a typed error")
    func foreignRegions() throws {
        func makeRaw(_ name: String, bytes: [UInt8]) {
            let fd = shm_open("/" + name, O_CREAT | O_RDWR | O_EXCL, 0o600)
            precondition(fd >= 0)
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        let foreign = Self.uniqueName("foreign")
        makeRaw(foreign, bytes: [UInt8](repeating: 7, count: 4096))
        defer { shm_unlink("/" + foreign) }
        #expect(throws: SharedMemoryError.notOurs(foreign)) { try SharedMemory(attach: foreign) }

        let tiny = Self.uniqueName("tiny")
        makeRaw(tiny, bytes: [1, 2, 3])
        defer { shm_unlink("/" + tiny) }
        #expect(throws: SharedMemoryError.tooSmall(name: tiny, size: 3)) { try SharedMemory(attach: tiny) }

        // A header of ours with version 99.
        let versioned = Self.uniqueName("version")
        var header = [UInt8](repeating: 0, count: 128)
        withUnsafeBytes(of: UInt64(0x3150_4d54_4649_5753).littleEndian) { header.replaceSubrange(0..<8, with: $0) }
        withUnsafeBytes(of: UInt32(99).littleEndian) { header.replaceSubrange(8..<12, with: $0) }
        withUnsafeBytes(of: UInt32(64).littleEndian) { header.replaceSubrange(12..<16, with: $0) }
        makeRaw(versioned, bytes: header)
        defer { shm_unlink("/" + versioned) }
        #expect(throws: SharedMemoryError.versionMismatch(name: versioned, found: 99, expected: 1)) {
            try SharedMemory(attach: versioned)
        }

        // Our header claiming more payload than the object has.
        let lying = Self.uniqueName("lying")
        withUnsafeBytes(of: UInt32(1).littleEndian) { header.replaceSubrange(8..<12, with: $0) }
        withUnsafeBytes(of: UInt64(1 << 20).littleEndian) { header.replaceSubrange(16..<24, with: $0) }
        makeRaw(lying, bytes: header)
        defer { shm_unlink("/" + lying) }
        #expect(throws: SharedMemoryError.tooSmall(name: lying, size: 128)) { try SharedMemory(attach: lying) }
    }

    @Test("bad input: names and sizes")
    func badInput() throws {
        #expect(throws: SharedMemoryError.invalidSize(0)) { try SharedMemory(size: 0) }
        #expect(throws: SharedMemoryError.invalidSize(-1)) { try SharedMemory(size: -1) }
        #expect(throws: SharedMemoryError.invalidName("a/b")) { try SharedMemory(create: "a/b", size: 8) }
        #expect(throws: SharedMemoryError.invalidName("")) { try SharedMemory(attach: "") }
        let long = String(repeating: "x", count: 300)
        #expect(throws: SharedMemoryError.invalidName(long)) { try SharedMemory(create: long, size: 8) }
        let name = Self.uniqueName("size")
        #expect(throws: SharedMemoryError.invalidSize(0)) { try SharedMemory(create: name, size: 0) }
        #expect(access("/dev/shm/\(name)", F_OK) != 0)
    }

    @Test("a handle of an object from nowhere is a typed error, not a crash")
    func unknownHandle() throws {
        let bogus = #"{"region":12345,"slot":3,"generation":0,"kind":1}"#
        #expect(throws: SharedMemoryError.unknownRegion(12345)) {
            _ = try JSONDecoderShim.decode(Lock.self, from: bogus)
        }
        let lock = Lock()
        let encoded = try JSONDecoderShim.encode(lock)
        let again = try JSONDecoderShim.decode(Lock.self, from: encoded)
        try again.acquire()
        #expect(lock.isLocked)
        try lock.release()
        // The handle names a Lock: decoding it as an Event is refused.
        #expect(throws: SharedMemoryError.staleHandle) { _ = try JSONDecoderShim.decode(Event.self, from: encoded) }
    }

    @Test("a forked child that drops its copy of a named region leaves the name to the creator")
    func childDoesNotUnlink() throws {
        let name = Self.uniqueName("child")
        let box = MemoryBox(try SharedMemory(create: name, size: 64))
        let code = try runInChild(timeout: .seconds(20)) { box.memory = nil }  // the child's copy goes
        #expect(code == 0)
        #expect(access("/dev/shm/\(name)", F_OK) == 0)
        #expect(try SharedMemory(attach: name).size == 64)
        box.memory = nil  // the creator's goes: it unlinks
        #expect(access("/dev/shm/\(name)", F_OK) != 0)
    }
}

/// Holds a region so that a forked child can drop the only reference in its copy.
final class MemoryBox: @unchecked Sendable {
    var memory: SharedMemory?
    init(_ memory: SharedMemory) { self.memory = memory }
}
