/// Errors of the binary encoding of the messages that queues and pipes carry.
public enum BinaryCodingError: Error, Equatable, Sendable {
    /// The bytes hold another type than the one asked for (a message of another type, or a value
    /// of another kind inside a message).
    case typeMismatch(expected: String, found: String)
    /// The input ended before the value did.
    case truncated
    /// The input is malformed in another way, or a type's own `init(from:)` refused it.
    case invalidData(String)
    /// The value cannot be encoded: its `encode(to:)` threw, misused its containers, or it is too
    /// large or too deeply nested.
    case unsupported(String)
    /// The encoding outgrew the limit its caller set (a queue's ``Queue/maxMessageSize``): the
    /// encoder stopped when it saw that, at `atLeast` bytes, without holding the whole message.
    case tooLarge(atLeast: Int, limit: Int)
}

/// A compact, self-describing binary form of any `Codable` value, for messages that cross process
/// boundaries (JSON text would be several times larger and slower).
///
/// A message is a 4-byte type fingerprint (so that reading it as another top-level type fails
/// with ``BinaryCodingError/typeMismatch(expected:found:)`` up front) followed by one value. Each
/// value starts with a tag byte; integers are little-endian and only as long as they need to be:
///
///     0x00 nil              0x01 false           0x02 true
///     0x03 Float  (4 bytes)                      0x04 Double (8 bytes)
///     0x05 String: varint n, n bytes of UTF-8    0x06 bytes ([UInt8]): varint n, n bytes
///     0x07 byte run: varint n, n bytes; n `UInt8` elements of an unkeyed container (`Data`)
///     0x08 unkeyed: UInt32 content size, UInt32 element count, elements
///     0x09 keyed: UInt32 content size, then entries (varint n, n bytes of key, value)
///     0x10 + n (n = 0...16): signed integer, n bytes of two's complement (0x10 is 0)
///     0x30 + n (n = 0...16): unsigned integer, n bytes
///
/// Containers carry their size so that any value is skipped in constant time: keyed containers
/// are read in any order, in a single pass when read in the order they were written (what
/// synthesized `Codable` does). Integer keys are stored as their `stringValue`. Every read is
/// bounds-checked: malformed input throws, it never crashes or reads outside the buffer.
///
/// `Optional.some(nil)` is stored as nil, as with JSON. `codingPath` is always empty and
/// `userInfo` empty: tracking them would cost an allocation per value on the hot path.
enum BinaryCoding {
    /// How deeply values may nest (as `JSONDecoder`): a deeper message would overflow the stack of
    /// the recursive `init(from:)` calls that read it, so neither side accepts one.
    static let maximumDepth = 512

    /// `[UInt8].self`, for the fast path of byte arrays: naming a generic type's metadata looks it
    /// up in the runtime's cache each time, which costs more than the comparison it serves.
    static let byteArrayType = ObjectIdentifier([UInt8].self)
}

/// The tag byte that starts every encoded value; see ``BinaryCoding``.
enum BinaryTag {
    static let null: UInt8 = 0x00
    static let `false`: UInt8 = 0x01
    static let `true`: UInt8 = 0x02
    static let float: UInt8 = 0x03
    static let double: UInt8 = 0x04
    static let string: UInt8 = 0x05
    static let bytes: UInt8 = 0x06
    static let byteRun: UInt8 = 0x07
    static let unkeyed: UInt8 = 0x08
    static let keyed: UInt8 = 0x09
    /// Plus the number of bytes that follow (0...16).
    static let signed: UInt8 = 0x10
    /// Plus the number of bytes that follow (0...16).
    static let unsigned: UInt8 = 0x30

    /// Tag and content size.
    static let keyedHeaderSize = 5
    /// Tag, content size and element count.
    static let unkeyedHeaderSize = 9

    /// What a tag stands for, for error messages.
    static func describe(_ tag: UInt8) -> String {
        switch tag {
        case null: "nil"
        case `false`, `true`: "Bool"
        case float: "Float"
        case double: "Double"
        case string: "String"
        case bytes: "bytes"
        case byteRun: "a run of bytes"
        case unkeyed: "an unkeyed container"
        case keyed: "a keyed container"
        case signed...(signed + 16): "a signed integer"
        case unsigned...(unsigned + 16): "an unsigned integer"
        default: "an unknown tag 0x\(String(tag, radix: 16))"
        }
    }
}
