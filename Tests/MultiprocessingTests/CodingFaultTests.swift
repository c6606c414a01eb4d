import CMultiprocessing
import SystemPackage
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

// MARK: Fixtures

/// A value whose `encode(to:)` refuses, before writing anything.
private struct Refuses: Encodable {
    struct Oops: Error {}
    func encode(to encoder: any Encoder) throws { throw Oops() }
}

/// Skips a field it cannot encode, as `try?` code does (JSONEncoder then leaves the key out).
private struct SkipsFailures: Encodable {
    enum Keys: String, CodingKey { case a, b }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try? container.encode(Refuses(), forKey: .a)
        try container.encode(7, forKey: .b)
    }
}

private struct AB: Decodable, Equatable {
    var a: Int?
    var b: Int
}

/// Any key: for containers read by hand.
private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Reads every entry of a keyed container in the reverse of the order they were written, and notes
/// whether the container got a key table by then (what the decoder promises for a large container
/// read out of order).
private struct ReadsBackwards: Decodable {
    var values: [Int]
    var gotKeyTable: Bool

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        values = []
        for key in container.allKeys.reversed() { values.append(try container.decode(Int.self, forKey: key)) }
        gotKeyTable = !((decoder as? BinaryDecoder)?.reader.pointee.tables?.isEmpty ?? true)
    }
}

private func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(BinaryCodingError) -> T {
    try bytes.withUnsafeBytes { raw in
        Result { () throws(BinaryCodingError) in try BinaryCoding.decode(type, from: raw) }
    }
    .get()
}

/// A message of `type` whose body is `body` (a fingerprint, then the bytes).
private func message<T>(_ type: T.Type, _ body: [UInt8]) -> [UInt8] {
    withUnsafeBytes(of: TypeFingerprint.of(type).littleEndian, Array.init) + body
}

/// A keyed container holding `entries` (each already key and value bytes).
private func keyed(_ entries: [UInt8]) -> [UInt8] {
    [BinaryTag.keyed] + withUnsafeBytes(of: UInt32(entries.count).littleEndian, Array.init) + entries
}

/// A struct value of a Dictionary: each is a keyed container, whose key hint may take the slot of
/// the Dictionary's own.
private struct Point: Codable, Equatable {
    var x: Int
}

/// Reads a `[String: Point]` and notes whether its container got a key table.
private struct PointsByName: Decodable {
    var points: [String: Point]
    var gotKeyTable: Bool

    init(from decoder: any Decoder) throws {
        points = try decoder.singleValueContainer().decode([String: Point].self)
        gotKeyTable = !((decoder as? BinaryDecoder)?.reader.pointee.tables?.isEmpty ?? true)
    }
}

/// A superclass that writes its one field only when it has it, and reads it with decodeIfPresent.
private class Annotated: Codable {
    var note: String?
    private enum Keys: CodingKey { case note }
    init() {}
    required init(from decoder: any Decoder) throws {
        note = try decoder.container(keyedBy: Keys.self).decodeIfPresent(String.self, forKey: .note)
    }
    func encode(to encoder: any Encoder) throws {
        guard let note else { return }  // nothing to say: nothing written
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(note, forKey: .note)
    }
}

/// Its subclass, which hands the superclass a superEncoder (the usual pattern).
private final class Leveled: Annotated {
    var level = 3
    private enum Keys: CodingKey { case level }
    override init() { super.init() }
    required init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Keys.self)
        level = try container.decode(Int.self, forKey: .level)
        try super.init(from: container.superDecoder())
    }
    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(level, forKey: .level)
        try super.encode(to: container.superEncoder())
    }
}

// MARK: Tests

@Suite("Coding faults")
struct CodingFaultTests {
    // A nested value whose encode(to:) threw, the error swallowed by its parent (`try?`), left its
    // key with no value behind it: the encoder returned a malformed message without an error, and
    // the receiver read the next entry's key length as the missing value.
    @Test("a swallowed error of a nested value never yields a malformed message")
    func swallowedNestedError() throws {
        let encoded: [UInt8]
        do {
            encoded = try BinaryCoding.encode(SkipsFailures())
        } catch {
            return  // refused: the sender is told, nothing malformed goes out
        }
        let read = Result { () throws(BinaryCodingError) in
            try decode(AB.self, message(AB.self, Array(encoded[4...])))
        }
        #expect(read == .success(AB(a: nil, b: 7)), "encoded \(encoded), which reads as \(read)")
    }

    // allKeys stopped at the first malformed entry and said nothing: a Dictionary read from a
    // garbled message silently lost its entries from there on.
    @Test("a keyed container with a malformed entry throws; a Dictionary does not lose entries silently")
    func malformedEntryInDictionary() throws {
        let good = [1, UInt8(ascii: "a"), BinaryTag.signed + 1, 1]
        let bad = [1, UInt8(ascii: "b"), 0xEE]  // an unknown tag
        let bytes = message([String: Int].self, keyed(good + bad))
        let read = Result { () throws(BinaryCodingError) in try decode([String: Int].self, bytes) }
        #expect(throws: BinaryCodingError.self, "read as \(read)") { try read.get() }
        // The same entries, readable, read whole.
        let fine = message([String: Int].self, keyed(good + [1, UInt8(ascii: "b"), BinaryTag.signed + 1, 2]))
        #expect(try decode([String: Int].self, fine) == ["a": 1, "b": 2])
    }

    // "A container whose scan passes many entries gets a key table, so that reading a large one out
    // of order stays linear": only a scan that did NOT find its key built one. A large container
    // read out of order (or a large Dictionary whose keyed values evict its hint, one in sixteen on
    // average) was scanned from the start on every read: quadratic in the entries.
    @Test("a large keyed container read out of order gets its key table")
    func outOfOrderReadsBuildTable() throws {
        let count = 4_000
        var entries: [UInt8] = []
        for index in 0..<count {
            let key = Array("k\(index)".utf8)
            entries += [UInt8(key.count)] + key + [BinaryTag.unsigned + 2, UInt8(index & 0xff), UInt8(index >> 8)]
        }
        let bytes = message(ReadsBackwards.self, keyed(entries))
        let clock = ContinuousClock()
        var read: ReadsBackwards?
        let elapsed = try clock.measure { read = try decode(ReadsBackwards.self, bytes) }
        print("CodingFaultTests: \(count) entries read backwards in \(elapsed)")
        #expect(read?.values == Array((0..<count).reversed()))
        #expect(read?.gotKeyTable == true)

        // The common case: a Dictionary of structs, read in order, whose hint the structs' own
        // containers take now and then. Without a table each such read scans from the start: a
        // [String: Point] of 100 000 entries (1.7 MB) took 159 s to decode (0.4 s with the table).
        let points = Dictionary(uniqueKeysWithValues: (0..<5_000).map { ("p\($0)", Point(x: $0)) })
        var body = try BinaryCoding.encode(points)
        body.removeFirst(4)
        let byName = try decode(PointsByName.self, message(PointsByName.self, body))
        #expect(byName.points == points)
        #expect(byName.gotKeyTable)
    }

    // A superclass that wrote nothing through superEncoder() was stored as nil, where a value that
    // writes nothing anywhere else is stored as an empty container (as JSONEncoder's `{}`): its
    // init(from:), asking for its container, failed, so the object did not round-trip.
    @Test("a superclass that writes nothing through superEncoder reads back")
    func emptySuperclass() throws {
        let value = Leveled()
        let json = try FoundationJSON.decode(Leveled.self, FoundationJSON.encode(value))
        #expect(json.level == 3 && json.note == nil)
        let binary = Result { () throws(BinaryCodingError) in try decode(Leveled.self, BinaryCoding.encode(value)) }
        #expect(binary.map { $0.level } == .success(3), "read as \(binary)")
        value.note = "n"
        #expect(try decode(Leveled.self, BinaryCoding.encode(value)).note == "n")
    }

    // The blocking acquire checks the holder once before a short timeout gives up ("a dead holder
    // never makes them fail for good"); the awaited one scheduled its first check 20 ms ahead and
    // gave up first, so an `acquire(timeout:)` under 20 ms never took a dead holder's lock.
    @Test("an awaited acquire with a short timeout takes over from a dead holder")
    func awaitedShortTimeoutDeadHolder() async throws {
        let lock = Lock()
        let holder = Process {
            try lock.acquire()
            _exit(0)  // dies holding it
        }
        try holder.start()
        #expect(try holder.join(timeout: .seconds(30)))
        let dead = holder.pid!
        // The blocking form: taken over at once.
        let blocking = Lock()
        let blockingHolder = Process {
            try blocking.acquire()
            _exit(0)
        }
        try blockingHolder.start()
        #expect(try blockingHolder.join(timeout: .seconds(30)))
        #expect(throws: SyncError.ownerDied(owner: blockingHolder.pid!)) {
            try blocking.acquire(timeout: .milliseconds(2))
        }
        try blocking.release()
        try await onLoop {
            var outcomes: [String] = []
            for _ in 0..<5 {
                do {
                    let got = try await lock.acquire(timeout: .milliseconds(2))
                    outcomes.append("\(got)")
                    if got { try lock.release() }
                } catch let error as SyncError {
                    outcomes.append("\(error)")
                    #expect(error == .ownerDied(owner: dead))
                    try lock.release()
                    break
                }
            }
            #expect(outcomes.last == "\(SyncError.ownerDied(owner: dead))", "outcomes: \(outcomes)")
        }
    }

    // The path went to the kernel as a C string: a NUL inside it cut it short, so
    // `File.open("/dir/a\0b", options: [.create, .truncate])` made (or emptied) "/dir/a". Python
    // raises ValueError ("embedded null byte"), as SharedMemory's names here refuse one.
    @Test("a path with a NUL inside is refused, not cut short")
    func pathWithNul() async throws {
        let path = scratchPath("nul-path")
        unlink(path)
        defer { unlink(path) }
        _ = try await onLoop {
            await #expect(throws: IOError.self) {
                let file = try await File.open(path + "\0ignored", .writeOnly, options: [.create, .truncate])
                try await file.close()
            }
        }
        #expect(access(path, F_OK) != 0, "\(path) was created")
    }

    // read(upTo:) allocated its whole `count` before reading: `read(upTo: .max)`, the way to say
    // "all of it" (Python's read() of a file), crashed the process (a forked child here).
    @Test("read(upTo:) with a count far past the file's size reads the file")
    func readUpToHugeCount() async throws {
        let path = scratchPath("huge-count")
        defer { unlink(path) }
        let content = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try await onLoop {
            let out = try await File.open(path, .writeOnly, options: [.create, .truncate])
            try await out.write(content)
            try await out.close()
        }
        let reader = Process {
            let ok = try EventLoop.run { () async throws -> Bool in
                let file = try await File.open(path)
                let all = try await file.read(upTo: .max)
                let more = try await file.read(upTo: 1 << 40)
                let part = try await file.read(upTo: 1 << 40, at: 199_990)
                try await file.close()
                return all == content && more.isEmpty && part == Array(content[199_990...])
            }
            _exit(ok ? 0 : 3)
        }
        try reader.start()
        #expect(try reader.join(timeout: .seconds(60)))
        #expect(reader.exitCode == 0)
    }

    // read(into:at:) passed a negative offset on: -1 read at the file's position instead of
    // failing as read(upTo:at:) does.
    @Test("read(into:at:) refuses a negative offset")
    func readIntoNegativeOffset() async throws {
        let path = scratchPath("negative-offset")
        defer { unlink(path) }
        try await onLoop {
            let out = try await File.open(path, .writeOnly, options: [.create, .truncate])
            try await out.write([1, 2, 3])
            try await out.close()
            let file = try await File.open(path)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 3, alignment: 1)
            defer { buffer.deallocate() }
            await #expect(throws: IOError.invalidArgument("offset -1")) { try await file.read(into: buffer, at: -1) }
            #expect(try await file.read(into: buffer, at: 1) == 2)
            try await file.close()
        }
    }
}
