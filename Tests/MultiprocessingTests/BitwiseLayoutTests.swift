import Testing

@testable import Multiprocessing

/// Which types a pool copies as bytes (and checks), and which it codes.
@Suite("Pools: bitwise layouts")
struct BitwiseLayoutTests {
    struct Point: Codable { var x: Double, y: Double }
    struct Mixed: Codable { var n: Int32, flag: Bool, inner: Inner }
    struct Inner: Codable { var on: Bool, count: UInt8 }
    struct WithEnum: Codable { var n: Int, shade: Shade }

    @Test(
        "numbers and structs of them are plain; Bools are checked; enums, optionals and other standard types are coded")
    func layouts() {
        #expect(BitwiseLayout.of(Int.self) == .plain)
        #expect(BitwiseLayout.of(Double.self) == .plain)
        #expect(BitwiseLayout.of(UInt8.self) == .plain)
        #expect(BitwiseLayout.of(Point.self) == .plain)
        #expect(BitwiseLayout.of(Bool.self) == .checked)
        #expect(BitwiseLayout.booleans(of: Bool.self) == [0])
        #expect(BitwiseLayout.of(Mixed.self) == .checked)
        #expect(BitwiseLayout.booleans(of: Mixed.self) == [4, 5])
        #expect(BitwiseLayout.of(Flagged.self) == .checked)
        for type in [Shade.self, Int?.self, WithEnum.self, Range<Int>.self, Unicode.Scalar.self, String.self]
            as [Any.Type]
        {
            #expect(layout(of: type) == .coded, "\(type)")
        }
    }

    private func layout(of type: Any.Type) -> BitwiseLayout {
        func open<T>(_ t: T.Type) -> BitwiseLayout { BitwiseLayout.of(t) }
        return _openExistential(type, do: open)
    }
}
