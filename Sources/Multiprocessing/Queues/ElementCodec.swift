/// How a queue turns its elements into bytes and back.
///
/// Fixed-size `BitwiseCopyable` elements are copied as they are (no encoding); any other
/// `Codable` element goes through ``BinaryCoding``. The choice is made by the queue's initializer
/// (the most constrained one wins) and travels with the queue's handle, so both ends agree.
struct ElementCodec<Element> {
    enum Kind: UInt8, Codable, Sendable {
        case bitwise = 1
        case binary = 2
    }

    let kind: Kind
    /// Calls `body` with the element's bytes; throws ``QueueError/messageTooLarge(size:limit:)``
    /// without calling it when they would be more than the limit (an encoding stops as soon as it
    /// outgrows the limit, so a message over it is never encoded whole).
    let withBytes: (Element, _ limit: Int, (UnsafeRawBufferPointer) -> Void) throws(QueueError) -> Void
    /// Rebuilds an element from a message's bytes.
    let decode: (UnsafeRawBufferPointer) throws(QueueError) -> Element

    static func bitwise() -> ElementCodec where Element: BitwiseCopyable {
        ElementCodec(
            kind: .bitwise,
            withBytes: { value, limit, body throws(QueueError) in
                let size = MemoryLayout<Element>.size
                if size > limit { throw .messageTooLarge(size: size, limit: limit) }
                withUnsafeBytes(of: value) { body($0) }
            },
            decode: { bytes throws(QueueError) in
                guard bytes.count == MemoryLayout<Element>.size else {
                    throw .decodingFailed("a message of \(bytes.count) bytes is not a \(Element.self)")
                }
                return bytes.loadUnaligned(as: Element.self)
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
