/// How a queue turns its elements into bytes and back.
///
/// A message's bytes sit in shared memory that any process holding the queue can write: a get
/// makes an element of them only if they are one (see ``BitwiseLayout``). Numbers, and structs of
/// numbers, are copied as they are; structs with `Bool`s are copied and each `Bool` checked; any
/// other `Codable` element (enums and optionals too, whose unknown tags a copy cannot see) goes
/// through ``BinaryCoding``, which checks what it decodes. A `BitwiseCopyable` element that is not
/// `Codable` is copied: an enum without payloads has its tag checked, anything else a copy cannot
/// check (an optional, an enum with payloads) is copied unchecked (see <doc:TrustBoundaries>). The
/// choice is made by the queue's initializer and travels with the queue's handle, so both ends agree.
struct ElementCodec<Element> {
    enum Kind: UInt8, Codable, Sendable {
        /// Copied as they are, and a get loads them where they lie: every bit pattern of the
        /// element's size is a value (or none can be checked). The straight paths and lanes.
        case bitwise = 1
        case binary = 2
        /// Copied as they are, but a get checks them first (``decode``): the `Bool`s of a struct,
        /// the tag of an enum without payloads. Through the queue's encoded paths (no lanes).
        case checked = 3
    }

    let kind: Kind
    /// Calls `body` with the element's bytes; throws ``QueueError/messageTooLarge(size:limit:)``
    /// without calling it when they would be more than the limit (an encoding stops as soon as it
    /// outgrows the limit, so a message over it is never encoded whole).
    let withBytes: (Element, _ limit: Int, (UnsafeRawBufferPointer) -> Void) throws(QueueError) -> Void
    /// Rebuilds an element from a message's bytes; throws ``QueueError/decodingFailed(_:)`` when
    /// they are not one.
    let decode: (UnsafeRawBufferPointer) throws(QueueError) -> Element

    /// A fixed-size element's codec: its bytes copied (and its `Bool`s checked), or, for one whose
    /// bytes a copy cannot check (an enum, an optional, another standard type) that is `Codable`
    /// at run time, the binary coding.
    static func bitwise() -> ElementCodec where Element: BitwiseCopyable {
        let layout = BitwiseLayout.of(Element.self)
        if layout == .coded, let coded = ElementCodecs.make(Element.self, .binary) { return coded }
        return copying(layout) { $0.loadUnaligned(as: Element.self) }
    }

    /// The codec of a `BitwiseCopyable & Codable` element: copied when a copy can check its bytes,
    /// else coded.
    static func fixedSize() -> ElementCodec where Element: BitwiseCopyable & Codable {
        BitwiseLayout.of(Element.self) == .coded ? .binary() : .bitwise()
    }

    /// The bitwise kind for a type of `layout`: `load` makes the element of bytes of its size,
    /// once its `Bool`s, or its tag for an enum without payloads (looked up here, once), are checked.
    static func copying(_ layout: BitwiseLayout, load: @escaping (UnsafeRawBufferPointer) -> Element) -> ElementCodec {
        let booleans = layout == .checked ? BitwiseLayout.booleans(of: Element.self) : []
        // Nil for any other type a copy cannot check: copied unchecked (see <doc:TrustBoundaries>).
        let cases = layout == .coded ? BitwiseLayout.caseCount(ofTagOnlyEnum: Element.self) : nil
        return ElementCodec(
            kind: booleans.isEmpty && cases == nil ? .bitwise : .checked,
            withBytes: { value, limit, body throws(QueueError) in
                let size = MemoryLayout<Element>.size
                if size > limit { throw .messageTooLarge(size: size, limit: limit) }
                withUnsafeBytes(of: value) { body($0) }
            },
            decode: { bytes throws(QueueError) in
                guard bytes.count == MemoryLayout<Element>.size else {
                    throw .decodingFailed("a message of \(bytes.count) bytes is not a \(Element.self)")
                }
                do throws(BitwiseLayout.NotAValue) {
                    try BitwiseLayout.check(bytes, count: 1, stride: 0, booleans: booleans, of: Element.self)
                } catch {
                    throw .decodingFailed(error.description)
                }
                if let cases {
                    // Little-endian, as every platform the library runs on.
                    let tag = bytes.reversed().reduce(0) { $0 << 8 | Int($1) }
                    if tag >= cases {
                        throw .decodingFailed("tag \(tag) is no case of \(Element.self) (\(cases) cases)")
                    }
                }
                return load(bytes)
            })
    }

    static func binary() -> ElementCodec where Element: Codable {
        ElementCodec(
            kind: .binary,
            withBytes: { value, limit, body throws(QueueError) in
                do throws(BinaryCodingError) { try BinaryCoding.withEncoding(of: value, limit: limit, body) } catch {
                    if case .tooLarge(let size, let limit) = error { throw .messageTooLarge(size: size, limit: limit) }
                    throw .encodingFailed(String(describing: error))
                }
            },
            decode: { bytes throws(QueueError) in
                do { return try BinaryCoding.decode(Element.self, from: bytes) } catch {
                    throw .decodingFailed(String(describing: error))
                }
            })
    }
}
