/// What a child started by spawn or by the forkserver is told: which target to run, with which
/// argument, and the shared regions it was given.
struct ChildPayload: Equatable {
    var target: String
    var argument: [UInt8]
    var name: String
    var daemon: Bool
    /// Spawn: a daemon asks for SIGKILL when its parent dies. The forkserver's children do not: the
    /// server kills its daemon children when the client dies (see forkserver.c).
    var dieWithParent: Bool
    var parentPID: Int32
    var regions: [RegionDescriptor]
    /// The write end of the program's resource tracker, kept open for the child, so that named
    /// regions it creates are cleaned up with the program's (nil: none could be started).
    var tracker: Int32?
}

/// What the program started again finds at bootstrap: a child to run, or a forkserver to be.
enum BootstrapPayload: Equatable {
    case child(ChildPayload)
    case forkServer(ForkServerSetup)
}

/// The payload's bytes: a fixed layout written and read field by field, not `Codable`.
///
/// Every child decodes one on its way to its first line, and a forkserver's child pays for each
/// page of code and data it touches for the first time (about 1 µs a page fault here): the
/// generic decoder touched some 50 pages for this payload (80 µs), these few functions touch a
/// handful. The bytes come from another process, so every read is bounds-checked and every field
/// validated; anything else throws ``BinaryCodingError``.
///
///     UInt64 magic "mp-boot1", UInt8 kind
///     kind 1, a child: string target, bytes argument, string name, UInt8 flags (1 daemon,
///       2 dieWithParent, 4 tracker present; no other bit), Int32 parentPID, Int32 tracker,
///       UInt32 region count, each region UInt64 id, Int32 fd, UInt64 size
///     kind 2, a forkserver: Int32 socket, Int32 client, UInt8 flags (1 the client added
///       LD_BIND_NOW to the server's environment; no other bit)
///     (a string or bytes is UInt32 n then n bytes; integers little-endian; nothing may follow)
extension BootstrapPayload {
    static let magic: UInt64 = 0x3174_6f6f_622d_706d  // "mp-boot1" read little-endian

    private enum Kind: UInt8 {
        case child = 1
        case forkServer = 2
    }

    private enum Flag {
        static let daemon: UInt8 = 1
        static let dieWithParent: UInt8 = 2
        static let tracker: UInt8 = 4
        static let all: UInt8 = 7
    }

    /// The payload's bytes.
    func encoded() -> [UInt8] {
        var out = PayloadWriter()
        out.append(Self.magic)
        switch self {
        case .child(let child):
            out.append(Kind.child.rawValue)
            out.append(bytes: Array(child.target.utf8))
            out.append(bytes: child.argument)
            out.append(bytes: Array(child.name.utf8))
            var flags: UInt8 = 0
            if child.daemon { flags |= Flag.daemon }
            if child.dieWithParent { flags |= Flag.dieWithParent }
            if child.tracker != nil { flags |= Flag.tracker }
            out.append(flags)
            out.append(child.parentPID)
            out.append(child.tracker ?? -1)
            out.append(UInt32(child.regions.count))
            for region in child.regions {
                out.append(region.id)
                out.append(region.fd)
                out.append(UInt64(region.size))
            }
        case .forkServer(let setup):
            out.append(Kind.forkServer.rawValue)
            out.append(setup.socket)
            out.append(setup.client)
            out.append(setup.addedBindNow ? UInt8(1) : 0)
        }
        return out.bytes
    }

    /// Reads a payload another process wrote, refusing anything but exactly one well-formed one.
    init(decoding input: UnsafeRawBufferPointer) throws(BinaryCodingError) {
        var reader = PayloadReader(input)
        guard try reader.read(UInt64.self) == Self.magic else {
            throw .invalidData("not a bootstrap payload (its first 8 bytes are not \"mp-boot1\")")
        }
        switch Kind(rawValue: try reader.read(UInt8.self)) {
        case .child:
            let target = try reader.string()
            let argument = try reader.bytes()
            let name = try reader.string()
            let flags = try reader.read(UInt8.self)
            guard flags & ~Flag.all == 0 else { throw .invalidData("bootstrap payload: unknown flags \(flags)") }
            let parentPID = try reader.read(Int32.self)
            let tracker = try reader.read(Int32.self)
            let regionCount = Int(try reader.read(UInt32.self))
            // Each region takes 20 bytes: a count the input cannot hold is refused before any allocation.
            guard regionCount <= reader.remaining / 20 else { throw .truncated }
            var regions: [RegionDescriptor] = []
            regions.reserveCapacity(regionCount)
            for _ in 0..<regionCount {
                let id = try reader.read(UInt64.self)
                let fd = try reader.read(Int32.self)
                guard let size = Int(exactly: try reader.read(UInt64.self)) else {
                    throw .invalidData("bootstrap payload: a region size above Int.max")
                }
                regions.append(RegionDescriptor(id: id, fd: fd, size: size))
            }
            self = .child(
                ChildPayload(
                    target: target, argument: argument, name: name, daemon: flags & Flag.daemon != 0,
                    dieWithParent: flags & Flag.dieWithParent != 0, parentPID: parentPID, regions: regions,
                    tracker: flags & Flag.tracker != 0 ? tracker : nil))
        case .forkServer:
            let socket = try reader.read(Int32.self)
            let client = try reader.read(Int32.self)
            let flags = try reader.read(UInt8.self)
            guard flags & ~1 == 0 else { throw .invalidData("bootstrap payload: unknown forkserver flags \(flags)") }
            self = .forkServer(ForkServerSetup(socket: socket, client: client, addedBindNow: flags & 1 != 0))
        case nil:
            throw .invalidData("bootstrap payload: unknown kind")
        }
        guard reader.remaining == 0 else {
            throw .invalidData("bootstrap payload: \(reader.remaining) bytes after its end")
        }
    }

    /// Reads the payload in `bytes`; see ``init(decoding:)``.
    init(decoding bytes: [UInt8]) throws(BinaryCodingError) {
        let decoded = bytes.withUnsafeBytes { buffer in
            Result { () throws(BinaryCodingError) in try Self(decoding: buffer) }
        }
        self = try decoded.get()
    }
}

/// Appends little-endian fields to the payload being written.
private struct PayloadWriter {
    var bytes: [UInt8] = []

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append(bytes field: [UInt8]) {
        append(UInt32(field.count))
        bytes.append(contentsOf: field)
    }
}

/// Reads the payload's fields in order, each bounds-checked against the input's end.
private struct PayloadReader {
    let input: UnsafeRawBufferPointer
    var offset = 0

    init(_ input: UnsafeRawBufferPointer) { self.input = input }

    var remaining: Int { input.count - offset }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(BinaryCodingError) -> T {
        guard remaining >= MemoryLayout<T>.size else { throw .truncated }
        defer { offset += MemoryLayout<T>.size }
        return T(littleEndian: input.loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    /// A length-prefixed run of bytes.
    mutating func bytes() throws(BinaryCodingError) -> [UInt8] {
        let count = Int(try read(UInt32.self))
        guard count <= remaining else { throw .truncated }
        defer { offset += count }
        return Array(UnsafeRawBufferPointer(rebasing: input[offset..<offset + count]))
    }

    /// A length-prefixed run of UTF-8.
    mutating func string() throws(BinaryCodingError) -> String {
        let count = Int(try read(UInt32.self))
        guard count <= remaining else { throw .truncated }
        defer { offset += count }
        let utf8 = UnsafeRawBufferPointer(rebasing: input[offset..<offset + count]).assumingMemoryBound(to: UInt8.self)
        guard let string = String(validating: utf8, as: UTF8.self) else {
            throw .invalidData("bootstrap payload: a string that is not UTF-8")
        }
        return string
    }
}
