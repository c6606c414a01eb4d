import Foundation

/// How a task's input and result are encoded in their `bytea` columns. Each row names its format in
/// `payload_version`, so a future format can be read beside rows written by older hosts.
public enum PayloadFormat: Int, Sendable, CaseIterable {
    /// Version 1: the value as JSON (UTF-8), readable from SQL with `convert_from(input, 'UTF8')::jsonb`.
    case json = 1

    /// The format this library writes.
    public static let current = PayloadFormat.json

    func encode<T: Encodable>(_ value: T) throws(DistributedError) -> [UInt8] {
        do {
            return Array(try JSONEncoder().encode(value))
        } catch {
            throw .coding("\(T.self): \(error)")
        }
    }

    func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws(DistributedError) -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(bytes))
        } catch {
            throw .coding("\(T.self): \(error)")
        }
    }

    /// The format a row names, or the error a reader of an unknown one gets.
    static func of(version: Int) throws(DistributedError) -> PayloadFormat {
        guard let format = PayloadFormat(rawValue: version) else { throw .unsupportedPayloadVersion(version) }
        return format
    }
}
