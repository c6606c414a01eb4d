import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// JSON round trips for handles without importing Foundation's Process/Thread into the tests.
enum JSONDecoderShim {
    static func encode<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try FoundationJSON.encode(value), as: UTF8.self)
    }
    static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try FoundationJSON.decode(type, Array(text.utf8))
    }
}
