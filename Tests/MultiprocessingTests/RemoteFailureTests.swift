import Testing

@testable import Multiprocessing

/// A worker's error as the parent reads it: the bytes and the type name come from another process,
/// so whatever they say, the parent gets the original error or a PoolError, never a crash.
@Suite("Task errors across processes")
struct RemoteFailureTests {
    @Test("a Codable error round-trips; a garbled name, a foreign type or bad bytes fall back to taskFailed")
    func fallbacks() throws {
        let original = Refusal(word: "!x", code: 2)
        let sent = RemoteFailure(original)
        #expect(sent.mangledType != nil && sent.encoded != nil)
        #expect(sent.error as? Refusal == original)

        let plain = PoolError.taskFailed(type: sent.type, message: sent.message)
        var garbled = sent
        garbled.mangledType = "$$not a mangled name"
        #expect(garbled.error as? PoolError == plain)
        var notAnError = sent
        notAnError.mangledType = _mangledTypeName(Int.self)  // resolves, but is not an Error
        #expect(notAnError.error as? PoolError == plain)
        var otherType = sent
        otherType.mangledType = _mangledTypeName(OtherTaskError.self)  // another Codable error
        #expect(_typeByName(otherType.mangledType!) != nil)  // it resolves here...
        #expect(otherType.error as? PoolError == plain)  // ...and the fingerprint refuses Refusal's bytes
        for bytes in [[], [0xFF], Array(sent.encoded!.dropLast())] as [[UInt8]] {
            var bad = sent
            bad.encoded = bytes
            #expect(bad.error as? PoolError == plain)
        }
        // A non-Codable error travels as its type and description only.
        let shouted = RemoteFailure(Shouted(word: "no"))
        #expect(shouted.encoded == nil)
        #expect(
            shouted.error as? PoolError == .taskFailed(type: String(reflecting: Shouted.self), message: "shouted no"))
    }
}

/// Another Codable error type, for a name that resolves to the wrong type.
struct OtherTaskError: Error, Codable { var word: String }
