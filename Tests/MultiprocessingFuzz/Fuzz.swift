// A libFuzzer target over the two places that read bytes another process wrote: the binary decoder
// (a message's bytes, a spawned child's payload) and a queue's ring (its header and records).
//
// `make fuzz` builds it with -sanitize=fuzzer,address (FUZZING defined) and lets libFuzzer drive
// it; in an ordinary build it is a plain program that feeds it seeded random inputs, so that it
// keeps compiling and running with the rest of the package.
import CMultiprocessing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// Types with every shape the decoder knows: keyed, unkeyed, nested, optional, enums with payloads.
indirect enum Shape: Codable {
    case circle(radius: Double)
    case rect(width: Int, height: Int)
    case labeled(Int8, String)
    case group([Shape], name: String?)
}

struct Record: Codable {
    var id: UInt64
    var name: String
    var tags: [String: [Int?]]
    var shape: Shape
    var bytes: [UInt8]
    var ratio: Float?
}

/// One input: its first byte picks what it exercises, the rest is the bytes.
func fuzzOne(_ input: UnsafeRawBufferPointer) {
    guard let selector = input.first else { return }
    let body = UnsafeRawBufferPointer(rebasing: input.dropFirst())
    switch selector % 4 {
    case 0: decode(Record.self, body)
    case 1: decode([Shape].self, body)
    case 2:
        _ = try? BootstrapPayload(decoding: withUnsafeBytes(of: BootstrapPayload.magic.littleEndian, Array.init) + body)
    default: fuzzRing(body)
    }
}

/// Decodes `body` as `type`, under the right fingerprint (random bytes would almost never match).
func decode<T: Decodable>(_ type: T.Type, _ body: UnsafeRawBufferPointer) {
    var bytes = withUnsafeBytes(of: TypeFingerprint.of(type).littleEndian, Array.init)
    bytes += body
    _ = try? bytes.withUnsafeBytes { try BinaryCoding.decode(type, from: $0) }
}

/// A fresh queue whose header positions and ring bytes come from the input, then gets (and a put)
/// with a deadline in the past: each must return a value or a typed error, touching nothing outside.
/// Twice: an encoded queue and a `Queue<Int>`, whose gets copy 8-byte records where they lie and
/// whose puts take the straight path inline in Swift (mp_queue_straight.h).
let ringQueue = try! Queue<[UInt8]>(capacity: 4096)
let intRingQueue = try! Queue<Int>(capacity: 4096)

func fuzzRing(_ body: UnsafeRawBufferPointer) {
    garble(ringQueue, body)
    for _ in 0..<4 { _ = try? ringQueue.get(timeout: .zero) }
    _ = try? ringQueue.put([1, 2, 3], timeout: .zero)
    garble(intRingQueue, body)
    for _ in 0..<4 { _ = try? intRingQueue.get(timeout: .zero) }
    _ = try? intRingQueue.put(7, timeout: .zero)
}

/// Sets `queue`'s positions (the input's first 16 bytes) and ring bytes (the rest) as a peer could.
func garble<Element>(_ queue: Queue<Element>, _ body: UnsafeRawBufferPointer) {
    let header = queue.channel.header
    let ring = UnsafeMutableRawPointer(header) + Int(MP_QUEUE_HEADER_SIZE)
    ring.initializeMemory(as: UInt8.self, repeating: 0, count: 4096)
    let positions = min(body.count, 16)
    var head: UInt64 = 0
    var tail: UInt64 = 0
    withUnsafeMutableBytes(of: &head) {
        $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: body[0..<min(positions, 8)]))
    }
    if positions > 8 {
        withUnsafeMutableBytes(of: &tail) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: body[8..<positions])) }
    }
    let records = UnsafeRawBufferPointer(rebasing: body[positions...].prefix(4096))
    if let base = records.baseAddress { ring.copyMemory(from: base, byteCount: records.count) }
    header.pointee.head = head
    header.pointee.tail = tail
    header.pointee.tail_cache = tail
    header.pointee.head_cache = head
    queue.channel.queue.pointee.corrupted = 0  // each input starts from a queue that trusts
}

#if FUZZING
    /// libFuzzer's entry point (its own `main` may reference it).
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        fuzzOne(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }

    /// libFuzzer's driver, called from our own `main` (SwiftPM names an executable's entry point
    /// itself, so libFuzzer's `main` is not the one that runs).
    @_silgen_name("LLVMFuzzerRunDriver")
    func runFuzzerDriver(
        _ argc: UnsafeMutablePointer<CInt>,
        _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    @main
    struct FuzzDriver {
        static func main() {
            var argc = CommandLine.argc
            var argv = CommandLine.unsafeArgv
            exit(runFuzzerDriver(&argc, &argv, fuzzerTestOneInput))
        }
    }
#else
    @main
    struct FuzzSmoke {
        /// Seeded random inputs (a few thousand by default; the first argument says how many).
        static func main() {
            let count = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 5000
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15
            func next() -> UInt64 {  // splitmix64
                state &+= 0x9E37_79B9_7F4A_7C15
                var z = state
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                return z ^ (z >> 31)
            }
            for _ in 0..<count {
                let length = Int(next() % 300)
                let input = (0..<length).map { _ in UInt8(truncatingIfNeeded: next()) }
                input.withUnsafeBytes(fuzzOne)
            }
            print("fuzz smoke: \(count) inputs, no crash")
        }
    }
#endif
