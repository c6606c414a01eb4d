/// How one side of a pool turns its values into bytes and back: numbers, and structs of numbers and
/// `Bool`s, are copied as they are (a chunk of a million `Int`s is one copy), any other `Codable`
/// value goes through ``BinaryCoding`` (see ``BitwiseLayout``: the bytes come from a worker).
struct ValueCodec<Value: Codable>: Sendable {
    let layout: BitwiseLayout
    var bitwise: Bool { layout != .coded }

    // Inlined: the parent makes one per result, and an Int's costs one comparison more than before.
    @inline(__always)
    init() { layout = BitwiseLayout.of(Value.self) }

    /// Calls `body` with the bytes of `value`.
    func withBytes(of value: Value, _ body: (UnsafeRawBufferPointer) -> Void) throws(PoolError) {
        if bitwise {
            withUnsafeBytes(of: value) { body($0) }
            return
        }
        do { try BinaryCoding.withEncoding(of: value, body) } catch { throw .coding(String(describing: error)) }
    }

    /// Calls `body` with the bytes of `values`.
    func withBytes(of values: ArraySlice<Value>, _ body: (UnsafeRawBufferPointer) -> Void) throws(PoolError) {
        if bitwise {
            values.withUnsafeBytes { body($0) }
            return
        }
        do { try BinaryCoding.withEncoding(of: Array(values), body) } catch {
            throw .coding(String(describing: error))
        }
    }

    func decode(_ bytes: UnsafeRawBufferPointer) throws(PoolError) -> Value {
        if bitwise {
            guard bytes.count == MemoryLayout<Value>.size else {
                throw .coding("\(bytes.count) bytes are not a \(Value.self)")
            }
            if layout == .checked {
                do { try BitwiseLayout.check(bytes, count: 1, stride: 0, of: Value.self) } catch {
                    throw .coding(error.description)
                }
            }
            // A trivial type: the bytes are the value. A plain load, not a temporary allocation,
            // whose generic Result metadata a forked worker might have to instantiate (see withMessage).
            return bytes.loadUnaligned(as: Value.self)
        }
        do { return try BinaryCoding.decode(Value.self, from: bytes) } catch {
            throw .coding(String(describing: error))
        }
    }

    func decode(_ bytes: UnsafeRawBufferPointer, count: Int) throws(PoolError) -> [Value] {
        if bitwise {
            let stride = MemoryLayout<Value>.stride
            guard count >= 0, bytes.count == count * stride else {
                throw .coding("\(bytes.count) bytes are not \(count) × \(Value.self)")
            }
            if layout == .checked {
                do { try BitwiseLayout.check(bytes, count: count, stride: stride, of: Value.self) } catch {
                    throw .coding(error.description)
                }
            }
            return [Value](unsafeUninitializedCapacity: count) { buffer, initialized in
                if count > 0 {
                    UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(
                        from: bytes.baseAddress!, byteCount: bytes.count)
                }
                initialized = count
            }
        }
        let values: [Value]
        do { values = try BinaryCoding.decode([Value].self, from: bytes) } catch {
            throw .coding(String(describing: error))
        }
        guard values.count == count else { throw .coding("\(values.count) values where \(count) were sent") }
        return values
    }
}
