import Foundation
import Logging
import PostgresNIO

/// `command --key value ...`, no more: the host is driven by scripts.
struct Arguments {
    let command: String
    private var values: [String: String] = [:]

    init(_ arguments: ArraySlice<String>) {
        command = arguments.first ?? ""
        var rest = arguments.dropFirst()
        while let key = rest.popFirst(), key.hasPrefix("--") {
            values[String(key.dropFirst(2))] = rest.popFirst() ?? ""
        }
    }

    func string(_ key: String, _ fallback: String) -> String { values[key] ?? fallback }
    func int(_ key: String, _ fallback: Int) -> Int { values[key].flatMap(Int.init) ?? fallback }
    func ints(_ key: String, _ fallback: [Int]) -> [Int] {
        values[key].map { $0.split(separator: ",").compactMap { Int($0) } } ?? fallback
    }
    func has(_ key: String) -> Bool { values[key] != nil }

    /// The client the options describe: a unix socket folder, or a host and port.
    func client(connections: Int = 8) -> PostgresClient {
        let user = string("user", "postgres")
        let database = string("database", "postgres")
        var configuration: PostgresClient.Configuration
        if has("socket") {
            let port = int("port", 5432)
            configuration = .init(
                unixSocketPath: "\(string("socket", "/tmp"))/.s.PGSQL.\(port)", username: user, password: nil,
                database: database)
        } else {
            configuration = .init(
                host: string("host", "127.0.0.1"), port: int("port", 5432), username: user, password: nil,
                database: database, tls: .disable)
        }
        configuration.options.maximumConnections = connections
        // A dead route must not hold a connection for TCP's quarter of an hour.
        configuration.options.connectTimeout = .seconds(3)
        return PostgresClient(configuration: configuration, backgroundLogger: Logger(label: "mp.distributed.client"))
    }
}
