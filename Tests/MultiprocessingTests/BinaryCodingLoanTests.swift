import Foundation
import Testing

@testable import Multiprocessing

// Keyed containers are lent, one per key type (LentContainer): these values ask for a container
// of a type whose loan is out (nested values of one type, other threads), or reuse one after a
// sibling or a failed value returned it.

/// A tree: each node's container is asked for while its parent's of the same key type is out.
private struct Node: Codable, Equatable {
    var value: Int
    var name: String
    var children: [Node]
}

/// Two values of one type side by side, then a field read after both: the parent's container
/// must still read the parent's entries.
private struct Pair: Codable, Equatable {
    var first: Leaf
    var second: Leaf
    var after: String
}

private struct Leaf: Codable, Equatable {
    var x: Int
    var y: [UInt8]
}

/// Reads its keys out of order and asks for a second container of the same key type from its
/// decoder (both are valid until `init(from:)` returns).
private struct TwoViews: Codable, Equatable {
    var a: Int
    var b: String
    private enum CodingKeys: String, CodingKey { case a, b }

    init(a: Int, b: String) { (self.a, self.b) = (a, b) }

    init(from decoder: any Decoder) throws {
        let first = try decoder.container(keyedBy: CodingKeys.self)
        let second = try decoder.container(keyedBy: CodingKeys.self)
        b = try second.decode(String.self, forKey: .b)
        a = try first.decode(Int.self, forKey: .a)
        #expect(try second.decode(Int.self, forKey: .a) == a)
    }
}

private func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws(BinaryCodingError) -> T {
    try bytes.withUnsafeBytes { raw in
        Result { () throws(BinaryCodingError) in try BinaryCoding.decode(type, from: raw) }
    }
    .get()
}

private func roundTrip<T: Codable>(_ value: T) throws -> T { try decode(T.self, BinaryCoding.encode(value)) }

@Suite("BinaryCoding lent containers")
struct BinaryCodingLoanTests {
    @Test("a value nested in one of its own type, siblings of one type, two containers of one value")
    func nesting() throws {
        let tree = Node(
            value: 1, name: "root",
            children: [
                Node(value: 2, name: "a", children: [Node(value: 4, name: "a.a", children: [])]),
                Node(value: 3, name: "b", children: []),
            ])
        #expect(try roundTrip(tree) == tree)
        let pair = Pair(first: Leaf(x: 1, y: [1, 2]), second: Leaf(x: -2, y: []), after: "after")
        #expect(try roundTrip(pair) == pair)
        #expect(try roundTrip([pair, pair]) == [pair, pair])
        #expect(try roundTrip(TwoViews(a: 5, b: "five")) == TwoViews(a: 5, b: "five"))
    }

    @Test("a value that failed returns its container: the next message of that type reads")
    func afterFailure() throws {
        let pair = Pair(first: Leaf(x: 1, y: [1]), second: Leaf(x: 2, y: [2]), after: "z")
        var bytes = try BinaryCoding.encode(pair)
        let good = bytes
        bytes.removeLast(3)
        #expect(throws: BinaryCodingError.self) { try decode(Pair.self, bytes) }
        #expect(try decode(Pair.self, good) == pair)
        #expect(try roundTrip(pair) == pair)
    }

    @Test("threads coding one type at once each read their own message")
    func threads() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for i in 0..<2_000 {
                        let node = Node(
                            value: task * 10_000 + i, name: "t\(task)",
                            children: [Node(value: i, name: "c", children: [])])
                        let back = try roundTrip(node)
                        guard back == node else { throw BinaryCodingError.invalidData("got \(back) for \(node)") }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
