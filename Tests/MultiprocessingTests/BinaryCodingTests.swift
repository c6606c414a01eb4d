import Testing

@testable import Multiprocessing

// MARK: Fixtures

private struct Message: Codable, Equatable {
    var id: Int
    var seq: Int
    var name: String
    var payload: [UInt8]
    var score: Double
}

private struct Primitives: Codable, Equatable {
    var bool = true, int = Int.min, int8 = Int8.min, int16 = Int16.max, int32 = Int32.min, int64 = Int64.max
    var int128 = Int128.min, uint = UInt.max, uint8 = UInt8.max, uint16 = UInt16.max, uint32 = UInt32.max
    var uint64 = UInt64.max, uint128 = UInt128.max, float = Float.pi, double = -Double.ulpOfOne, string = "ok"
}

private struct Optionals: Codable, Equatable {
    var a: Int?
    var b: String?
    var c: [Int?]
    var d: Int??
}

private indirect enum Shape: Codable, Equatable {
    case circle(radius: Double)
    case rect(width: Int, height: Int)
    case labeled(Int, String)
    case point
    case group([Shape], name: String?)
}

private enum Color: String, Codable { case red, green }

private struct Outer: Codable, Equatable {
    struct Inner: Codable, Equatable {
        var values: [Int]
        var shape: Shape
    }
    var inner: Inner
    var list: [Inner]
    var byName: [String: Inner]
    var byNumber: [Int: String]
    var color: Color
}

private struct Empty: Codable, Equatable {}

/// A subclass that encodes its superclass through `superEncoder()`.
private class Base: Codable {
    var name: String
    init(name: String) { self.name = name }
}

private final class Derived: Base {
    var level: Int
    private enum Keys: CodingKey { case level }

    init(name: String, level: Int) {
        self.level = level
        super.init(name: name)
    }

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

/// A subclass that shares its encoder with its superclass, and one whose superclass writes nothing.
private final class Sharing: Base {
    var extra: [Int] = [1, 2]
    private enum Keys: CodingKey { case extra }
    init() { super.init(name: "shared") }
    required init(from decoder: any Decoder) throws {
        extra = try decoder.container(keyedBy: Keys.self).decode([Int].self, forKey: .extra)
        try super.init(from: decoder)
    }
    override func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        var nested = container.nestedUnkeyedContainer(forKey: .extra)
        for value in extra { try nested.encode(value) }
        try super.encode(to: encoder)
    }
}

/// Bytes written and read the way Foundation's `Data` does.
private struct ByteBag: Codable, Equatable {
    var bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        bytes = []
        bytes.reserveCapacity(container.count ?? 0)
        while !container.isAtEnd { bytes.append(try container.decode(UInt8.self)) }
    }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try bytes.withUnsafeBytes { try container.encode(contentsOf: $0) }
    }
}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(_ string: String) { stringValue = string }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// `count` entries read back in reverse order, with `contains` and `allKeys`.
private struct Reversed: Codable, Equatable {
    var values: [Int]
    init(_ values: [Int]) { self.values = values }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: AnyKey.self)
        for (i, value) in values.enumerated() { try container.encode(value, forKey: AnyKey("k\(i)")) }
    }
    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: AnyKey.self)
        let count = container.allKeys.count
        #expect(container.contains(AnyKey("k0")) == (count > 0))
        #expect(!container.contains(AnyKey("missing")))
        #expect(try container.decodeIfPresent(Int.self, forKey: AnyKey("missing")) == nil)
        values = try (0..<count).reversed().map { try container.decode(Int.self, forKey: AnyKey("k\($0)")) }.reversed()
    }
}

private final class Chain: Codable {
    var next: Chain?
    init(depth: Int) { next = depth > 1 ? Chain(depth: depth - 1) : nil }
    var depth: Int { 1 + (next?.depth ?? 0) }
}

private struct PrivateMessage: Codable, Equatable { var x = 1 }

private struct Failing: Codable {
    struct Oops: Error {}
    init() {}
    init(from decoder: any Decoder) throws { throw Oops() }
    func encode(to encoder: any Encoder) throws { throw Oops() }
}

/// Misused containers: a write to a nested container after its parent moved on (which one pass
/// cannot lay out), or two containers of different kinds for one value.
private struct Misuse: Encodable {
    var interleaved: Bool
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: AnyKey.self)
        if interleaved {
            var nested = container.nestedContainer(keyedBy: AnyKey.self, forKey: AnyKey("a"))
            try container.encode(1, forKey: AnyKey("b"))
            try nested.encode(2, forKey: AnyKey("c"))
        } else {
            var unkeyed = encoder.unkeyedContainer()
            try unkeyed.encode(1)
        }
    }
}

/// SplitMix64: reproducible random input.
private struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

// MARK: Helpers

private func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(BinaryCodingError) -> T {
    try bytes.withUnsafeBytes { raw in
        Result { () throws(BinaryCodingError) in try BinaryCoding.decode(type, from: raw) }
    }
    .get()
}

private func roundTrip<T: Codable>(_ value: T) throws -> T { try decode(T.self, BinaryCoding.encode(value)) }

/// `bytes` with the fingerprint of `type`, to read a message's body as another type.
private func relabel<T>(_ bytes: [UInt8], as type: T.Type) -> [UInt8] {
    guard bytes.count >= 4 else { return bytes }
    var bytes = bytes
    withUnsafeBytes(of: TypeFingerprint.of(type).littleEndian) { bytes.replaceSubrange(0..<4, with: $0) }
    return bytes
}

/// Decodes and accepts any outcome but a crash; returns whether it threw.
@discardableResult
private func survives<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) -> Bool {
    do {
        _ = try decode(type, bytes)
        return false
    } catch {
        return true
    }
}

private let sampleOuter = Outer(
    inner: .init(values: [1, -2, 300], shape: .circle(radius: 2.5)),
    list: [.init(values: [], shape: .point), .init(values: [Int.max], shape: .labeled(7, "seven"))],
    byName: ["a": .init(values: [1], shape: .group([.rect(width: 1, height: 2), .point], name: nil))],
    byNumber: [-1: "minus one", 0: "zero", 42: "答え"], color: .green)

// MARK: Tests

@Suite("BinaryCoding")
struct BinaryCodingTests {
    @Test("primitives round-trip at their limits, at top level and in containers")
    func primitives() throws {
        #expect(try roundTrip(Primitives()) == Primitives())
        let limits = Primitives(
            bool: false, int: .max, int8: .max, int16: .min, int32: .max, int64: .min, int128: .max, uint: 0,
            uint8: 0, uint16: 1, uint32: 0, uint64: 0, uint128: 0, float: -.infinity, double: .infinity, string: "")
        #expect(try roundTrip(limits) == limits)
        for value in [0, 1, -1, 127, 128, -128, -129, 255, 256, .max, .min, 1 << 40] {
            #expect(try roundTrip(value) == value)
        }
        #expect(try roundTrip(UInt64.max) == .max)
        for value in [Int128.min + 1, Int128(Int64.min) - 1, -1, Int128(UInt64.max) << 60] {
            #expect(try roundTrip(value) == value)
        }
        for value in [UInt128(UInt64.max) + 1, UInt128.max - 1] { #expect(try roundTrip(value) == value) }
        #expect(try roundTrip([Int8.min, 0, .max]) == [.min, 0, .max])
        #expect(try roundTrip([true, false]) == [true, false])
        #expect(try roundTrip(Double.nan).isNaN)
        #expect(try roundTrip(Float.nan).isNaN)
        #expect(
            try roundTrip([Double.infinity, -.infinity, -0.0, .leastNonzeroMagnitude]).map(\.bitPattern)
                == [Double.infinity, -.infinity, -0.0, .leastNonzeroMagnitude].map(\.bitPattern))
        let text = "任务1 ✓ émoji 🇨🇭👩‍👩‍👧 \0 nul, and a long tail " + String(repeating: "€", count: 100)
        #expect(try roundTrip(text) == text)
        #expect(try roundTrip([text, "", "a"]) == [text, "", "a"])
    }

    @Test("optionals: nil and present, in structs, arrays and at top level")
    func optionals() throws {
        let present = Optionals(a: 1, b: "b", c: [1, nil, 3], d: .some(.some(4)))
        let absent = Optionals(a: nil, b: nil, c: [nil], d: .none)
        #expect(try roundTrip(present) == present)
        #expect(try roundTrip(absent) == absent)
        #expect(try roundTrip(Int?.none) == nil)
        #expect(try roundTrip(Int?.some(5)) == 5)
        #expect(try roundTrip(Int??.some(.some(6))) == .some(.some(6)))
        // As with JSON, `.some(nil)` is stored as nil.
        #expect(try roundTrip(Int??.some(.none)) == .none)
        #expect(try roundTrip(Optionals(a: nil, b: nil, c: [], d: .some(.none))).d == .none)
    }

    @Test("enums, nested structs, arrays, dictionaries with String and Int keys, raw values")
    func composites() throws {
        #expect(try roundTrip(sampleOuter) == sampleOuter)
        let shapes: [Shape] = [.point, .circle(radius: -1), .group([.group([], name: "inner")], name: "outer")]
        #expect(try roundTrip(shapes) == shapes)
        #expect(try roundTrip([[1, 2], [], [3]]) == [[1, 2], [], [3]])
        #expect(try roundTrip(["x": [1], "y": []]) == ["x": [1], "y": []])
        #expect(try roundTrip([Int.min: "min", Int.max: "max"]) == [.min: "min", .max: "max"])
        #expect(try roundTrip([Color.red, .green]) == [.red, .green])
    }

    @Test("classes: through superEncoder, and sharing one encoder with the superclass")
    func classes() throws {
        let derived = try roundTrip(Derived(name: "base part", level: 3))
        #expect(derived.name == "base part" && derived.level == 3)
        let shared = try roundTrip(Sharing())
        #expect(shared.name == "shared" && shared.extra == [1, 2])
    }

    @Test("empty containers and values")
    func empties() throws {
        #expect(try roundTrip(Empty()) == Empty())
        #expect(try BinaryCoding.encode(Empty()).count == 4 + BinaryTag.keyedHeaderSize)
        #expect(try roundTrip([Int]()) == [])
        #expect(try roundTrip([String: Int]()) == [:])
        #expect(try roundTrip([UInt8]()) == [])
        #expect(try roundTrip(ByteBag([])) == ByteBag([]))
        #expect(try roundTrip([Empty(), Empty()]) == [Empty(), Empty()])
    }

    @Test("byte arrays are one blob; Data-style runs of bytes read as [UInt8] and back")
    func bytes() throws {
        let blob = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(try BinaryCoding.encode(blob).count == 4 + 1 + 2 + 1000)
        #expect(try roundTrip(blob) == blob)
        let bag = ByteBag(blob)
        #expect(try BinaryCoding.encode(bag).count == 4 + BinaryTag.unkeyedHeaderSize + 1 + 2 + 1000)
        #expect(try roundTrip(bag) == bag)
        #expect(try decode(ByteBag.self, relabel(BinaryCoding.encode(blob), as: ByteBag.self)) == bag)
        #expect(try decode([UInt8].self, relabel(BinaryCoding.encode(bag), as: [UInt8].self)) == blob)
    }

    @Test("large arrays: a million elements")
    func large() throws {
        let ints = (0..<1_000_000).map { $0 &* 2_654_435_761 }
        #expect(try roundTrip(ints) == ints)
        let bytes = ints.map { UInt8(truncatingIfNeeded: $0) }
        #expect(try roundTrip(bytes) == bytes)
        let reversed = Reversed(Array(0..<5000))  // read out of order: the key table
        #expect(try roundTrip(reversed) == reversed)
    }

    @Test("keyed containers read in any order; compact next to JSON")
    func keyedAccess() throws {
        #expect(try roundTrip(Reversed([3, 1, 4, 1, 5])) == Reversed([3, 1, 4, 1, 5]))
        #expect(try roundTrip(Reversed([])) == Reversed([]))
        let message = Message(id: 1, seq: 2, name: "worker-1", payload: Array(repeating: 9, count: 32), score: 0.5)
        let binary = try BinaryCoding.encode(message)
        #expect(try decode(Message.self, binary) == message)
        #expect(binary.count < (try FoundationJSON.encode(message)).count)
    }

    @Test("a message read as another type throws typeMismatch")
    func wrongType() throws {
        let outer = try BinaryCoding.encode(sampleOuter)
        for attempt in [
            { _ = try decode(String.self, outer) }, { _ = try decode([Int].self, outer) },
            { _ = try decode(Message.self, outer) }, { _ = try decode(Outer.Inner.self, outer) },
            { _ = try decode(Outer.self, BinaryCoding.encode("text")) },
        ] as [() throws -> Void] {
            let error = #expect(throws: BinaryCodingError.self) { try attempt() }
            guard case .typeMismatch = error else { Issue.record("\(String(describing: error))"); continue }
        }
        // Past the fingerprint, the body still refuses to be misread.
        let one = try BinaryCoding.encode([1])
        for attempt in [
            { _ = try decode(Message.self, relabel(outer, as: Message.self)) },
            { _ = try decode(String.self, relabel(outer, as: String.self)) },
            { _ = try decode([Int].self, relabel(outer, as: [Int].self)) },
            { _ = try decode(Outer.self, relabel(one, as: Outer.self)) },
            { _ = try decode([String].self, relabel(one, as: [String].self)) },
            { _ = try decode(UInt8.self, relabel(BinaryCoding.encode(300), as: UInt8.self)) },
            { _ = try decode(UInt.self, relabel(BinaryCoding.encode(-1), as: UInt.self)) },
        ] as [() throws -> Void] {
            #expect(throws: BinaryCodingError.self) { try attempt() }
        }
        #expect(try decode(Double.self, relabel(BinaryCoding.encode(Float(1.5)), as: Double.self)) == 1.5)
    }

    @Test("every truncation throws truncated; trailing bytes throw")
    func truncation() throws {
        let samples = [
            try BinaryCoding.encode(sampleOuter), try BinaryCoding.encode([1, 2, 3]), try BinaryCoding.encode("héllo"),
            try BinaryCoding.encode(Int64.min), try BinaryCoding.encode(ByteBag([1, 2, 3])),
        ]
        for bytes in samples {
            for length in 0..<bytes.count {
                #expect(throws: BinaryCodingError.truncated) {
                    try decode(Outer.self, relabel(Array(bytes.prefix(length)), as: Outer.self))
                }
            }
        }
        #expect(throws: BinaryCodingError.self) { try decode(Int.self, BinaryCoding.encode(1) + [0]) }
    }

    @Test("random bytes, flipped bits and lying headers never crash")
    func fuzz() throws {
        var random = SeededRandom(state: 42)
        let outer = try BinaryCoding.encode(sampleOuter)
        for index in outer.indices.dropFirst(4) {
            for bit in 0..<8 {
                var flipped = outer
                flipped[index] ^= 1 << bit
                survives(Outer.self, flipped)
            }
        }
        for _ in 0..<20_000 {
            let noise = (0..<Int.random(in: 0...48, using: &random)).map { _ in
                UInt8.random(in: 0...255, using: &random)
            }
            #expect(survives(Outer.self, noise))  // no fingerprint matches by chance here
            survives(Outer.self, relabel([0, 0, 0, 0] + noise, as: Outer.self))
            survives(Shape.self, relabel([0, 0, 0, 0] + noise, as: Shape.self))
            survives([String: [Int?]].self, relabel([0, 0, 0, 0] + noise, as: [String: [Int?]].self))
            survives(ByteBag.self, relabel([0, 0, 0, 0] + noise, as: ByteBag.self))
        }
        // An unkeyed container claiming four billion elements.
        let lying: [UInt8] = [0, 0, 0, 0, BinaryTag.unkeyed, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, BinaryTag.null]
        #expect(throws: BinaryCodingError.self) { try decode(ByteBag.self, relabel(lying, as: ByteBag.self)) }
    }

    @Test("nesting deeper than the limit throws instead of overflowing the stack")
    func depth() throws {
        #expect(try roundTrip(Chain(depth: 400)).depth == 400)
        #expect(throws: BinaryCodingError.self) { try BinaryCoding.encode(Chain(depth: 600)) }
        // A hand-made chain 100,000 deep: { "next": { "next": ... {} } }
        let depth = 100_000
        var bytes: [UInt8] = [0, 0, 0, 0]
        for level in stride(from: depth, to: 0, by: -1) {
            let size = UInt32(10 * level)
            bytes += [BinaryTag.keyed] + withUnsafeBytes(of: size.littleEndian, Array.init) + [4] + Array("next".utf8)
        }
        bytes += [BinaryTag.keyed, 0, 0, 0, 0]
        #expect(throws: BinaryCodingError.self) { try decode(Chain.self, relabel(bytes, as: Chain.self)) }
    }

    @Test("errors of a type's own coding, and misused containers, become BinaryCodingError")
    func failures() throws {
        var buffer: [UInt8] = [1, 2, 3]
        let error = #expect(throws: BinaryCodingError.self) { try BinaryCoding.encode(Failing(), into: &buffer) }
        #expect(error == .unsupported(String(describing: Failing.Oops())))
        #expect(buffer == [1, 2, 3])  // left as it was
        let failing = try BinaryCoding.encode(Empty())
        #expect(throws: BinaryCodingError.self) { try decode(Failing.self, relabel(failing, as: Failing.self)) }
        #expect(throws: BinaryCodingError.self) { try BinaryCoding.encode(Misuse(interleaved: true)) }
        #expect(throws: BinaryCodingError.self) { try BinaryCoding.encode(Misuse(interleaved: false)) }
        try BinaryCoding.encode(5, into: &buffer)
        #expect(try decode(Int.self, Array(buffer.dropFirst(3))) == 5)  // appended
    }

    @Test("fingerprints: cached, equal to a fresh computation, without load addresses")
    func fingerprints() async throws {
        #expect(try roundTrip(PrivateMessage()) == PrivateMessage())
        let name = TypeFingerprint.portableName(PrivateMessage.self)
        #expect(name.contains("(unknown context)") && !name.contains("$"))
        func types() -> [any Codable.Type] {
            [
                Int.self, String.self, [Int].self, [[Int]].self, [String: Int].self, Int?.self, Message.self,
                Outer.self, Shape.self, Empty.self, [Shape].self, [UInt8].self, ByteBag.self, Chain.self, Float.self,
            ]
        }
        await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 {
                group.addTask { types().allSatisfy { TypeFingerprint.of($0) == TypeFingerprint.compute($0) } }
            }
            for await consistent in group { #expect(consistent) }
        }
        #expect(Set(types().map { TypeFingerprint.of($0) }).count == types().count)
    }

    @Test("speed: encode + decode of a small message (printed, not asserted)")
    func speed() throws {
        #if DEBUG
            let iterations = 100_000
            let build = "debug"
        #else
            let iterations = 1_000_000
            let build = "release"
        #endif
        let message = Message(id: 7, seq: 0, name: "worker-1", payload: Array(repeating: 0xab, count: 32), score: 0.25)
        var buffer: [UInt8] = []
        var check = 0
        let clock = ContinuousClock()
        let elapsed = try clock.measure {
            for seq in 0..<iterations {
                var m = message
                m.seq = seq
                buffer.removeAll(keepingCapacity: true)
                try BinaryCoding.encode(m, into: &buffer)
                check &+= try decode(Message.self, buffer).seq
            }
        }
        #expect(check == (0..<iterations).reduce(0, &+))
        let nanoseconds = Double(elapsed.components.attoseconds) / 1e9 + Double(elapsed.components.seconds) * 1e9
        print(
            "BinaryCoding (\(build)): \(buffer.count)-byte message, \(Int(nanoseconds) / iterations) ns per encode + decode"
        )
    }
}
