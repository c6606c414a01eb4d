import FoundationEssentials

/// Foundation is imported in this file only: elsewhere `Process` and `Thread` mean ours.
enum FoundationJSON {
    static func encode<T: Encodable>(_ value: T) throws -> [UInt8] { Array(try JSONEncoder().encode(value)) }
    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
        try JSONDecoder().decode(type, from: Data(bytes))
    }
}
