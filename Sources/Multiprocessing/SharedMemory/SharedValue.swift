import CMultiprocessing

/// A type that can live in shared memory as its bytes: fixed-size, trivially copyable, and such that
/// **every bit pattern is a valid value** — integers, floating-point numbers, and structs or tuples
/// made only of them. Another process can write any bytes into shared memory (see
/// <doc:TrustBoundaries>), so a type with invalid patterns (`Bool`, an enum, a pointer, a class
/// reference) must not conform: reading one that a peer garbled would be undefined behaviour.
/// For a flag, use `UInt8` (or an ``Event``).
public protocol SharedScalar: BitwiseCopyable, Sendable {}

extension Int: SharedScalar {}
extension Int8: SharedScalar {}
extension Int16: SharedScalar {}
extension Int32: SharedScalar {}
extension Int64: SharedScalar {}
extension UInt: SharedScalar {}
extension UInt8: SharedScalar {}
extension UInt16: SharedScalar {}
extension UInt32: SharedScalar {}
extension UInt64: SharedScalar {}
extension Float: SharedScalar {}
extension Double: SharedScalar {}

/// A value in shared memory with a lock of its own (Python's `multiprocessing.Value`).
///
/// Forked children share it as they inherit it; forkserver and spawned children receive it as an
/// argument (it is `Codable`). Each read or write of ``value`` takes the lock; a read-modify-write
/// must hold it throughout, with ``withLock(_:)`` (Python's `with v.get_lock(): v.value += 1`):
///
/// ```swift
/// let total = try SharedValue(0)
/// let children = (0..<4).map { _ in
///     Process { for _ in 0..<1000 { total.withLock { $0 += 1 } } }
/// }
/// for c in children { try c.start() }
/// for c in children { try c.join() }
/// print(total.value)  // 4000
/// ```
///
/// A holder killed in the middle of an update leaves the value as far as it got (the lock passes on,
/// as a dead ``RLock`` owner's does): every bit pattern of a ``SharedScalar`` is a value, so it is
/// never undefined, only possibly stale.
public final class SharedValue<Value: SharedScalar>: @unchecked Sendable, Codable {
    /// The lock that guards the value (Python's `get_lock()`): reentrant, shared by every handle.
    public let lock: RLock
    private let storage: SharedStorage<Value>

    /// A new shared value holding `initial`.
    public init(_ initial: Value) throws(SharedMemoryError) {
        storage = try SharedStorage(count: 1)
        lock = RLock()
        storage.base.initialize(to: initial)
    }

    /// The value, read or written under the lock.
    public var value: Value {
        get { withLock { $0 } }
        set { withLock { $0 = newValue } }
    }

    /// Runs `body` on the value with the lock held: the way to update it from several processes.
    public func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        try storage.locked(lock) { (base) throws(E) -> R in try body(&base.pointee) }
    }

    private enum CodingKeys: String, CodingKey { case storage, lock }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(storage, forKey: .storage)
        try c.encode(lock, forKey: .lock)
    }

    /// Resolves a value handed over by another process; throws if it holds another type.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        storage = try c.decode(SharedStorage<Value>.self, forKey: .storage)
        guard storage.count == 1 else {
            throw DecodingError.dataCorruptedError(
                forKey: .storage, in: c, debugDescription: "a SharedValue holds one element")
        }
        lock = try c.decode(RLock.self, forKey: .lock)
    }
}

/// A fixed-length array in shared memory with a lock of its own (Python's `multiprocessing.Array`).
///
/// Each subscript read or write takes the lock; ``withLock(_:)`` holds it over many elements.
/// Shared with children as ``SharedValue`` is (inherited by forked ones, `Codable` for the others).
///
/// ```swift
/// let squares = try SharedArray(repeating: 0, count: 8)
/// let workers = (0..<8).map { i in Process { squares[i] = i * i } }
/// ```
public final class SharedArray<Element: SharedScalar>: @unchecked Sendable, Codable {
    /// The lock that guards the elements (Python's `get_lock()`): reentrant, shared by every handle.
    public let lock: RLock
    private let storage: SharedStorage<Element>

    /// A new shared array of `count` copies of `value`. Throws ``SharedMemoryError/invalidSize(_:)``
    /// for a negative count (or one whose bytes overflow).
    public init(repeating value: Element, count: Int) throws(SharedMemoryError) {
        storage = try SharedStorage(count: count)
        lock = RLock()
        storage.base.initialize(repeating: value, count: count)
    }

    /// A new shared array holding `elements`.
    public convenience init(_ elements: some Collection<Element>) throws(SharedMemoryError) {
        let values = Swift.Array(elements)
        try self.init(repeating: values.first ?? Self.zero, count: values.count)
        storage.base.update(from: values, count: values.count)
    }

    /// The number of elements (fixed when it was made).
    public var count: Int { storage.count }

    /// The element at `index`, read or written under the lock. `index` must be in `0..<count`.
    public subscript(index: Int) -> Element {
        get {
            precondition(index >= 0 && index < count, "SharedArray index \(index) out of range 0..<\(count)")
            return withLock { $0[index] }
        }
        set {
            precondition(index >= 0 && index < count, "SharedArray index \(index) out of range 0..<\(count)")
            withLock { $0[index] = newValue }
        }
    }

    /// A copy of every element, taken under the lock (Python's `arr[:]`).
    public var elements: [Element] { withLock { Swift.Array($0) } }

    /// Runs `body` on the elements with the lock held (Python's `with arr.get_lock():`).
    public func withLock<R, E: Error>(_ body: (UnsafeMutableBufferPointer<Element>) throws(E) -> R) throws(E) -> R {
        try storage.locked(lock) { (base) throws(E) -> R in
            try body(UnsafeMutableBufferPointer(start: base, count: storage.count))
        }
    }

    private static var zero: Element {
        withUnsafeTemporaryAllocation(of: Element.self, capacity: 1) { buffer in
            UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
            return buffer[0]
        }
    }

    private enum CodingKeys: String, CodingKey { case storage, lock }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(storage, forKey: .storage)
        try c.encode(lock, forKey: .lock)
    }

    /// Resolves an array handed over by another process; throws if it holds another type.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        storage = try c.decode(SharedStorage<Element>.self, forKey: .storage)
        lock = try c.decode(RLock.self, forKey: .lock)
    }
}

/// `count` elements in an anonymous region of their own: the pointer owned with the region, and
/// a handle that says what it holds, so that decoding it as another type or length is an error.
final class SharedStorage<Element: SharedScalar>: @unchecked Sendable, Codable {
    let memory: SharedMemory
    let count: Int
    let base: UnsafeMutablePointer<Element>

    init(count: Int) throws(SharedMemoryError) {
        let (bytes, overflow) = MemoryLayout<Element>.stride.multipliedReportingOverflow(by: count)
        guard count >= 0, !overflow else { throw .invalidSize(count) }
        // A page-aligned region: any element's alignment holds. One byte at least (an empty array).
        memory = try SharedMemory(size: max(bytes, 1))
        self.count = count
        base = memory.buffer.baseAddress!.bindMemory(to: Element.self, capacity: max(count, 1))
    }

    /// Runs `body` with `lock` held. A dead previous holder's lock is held all the same (its partial
    /// update is a value: see ``SharedScalar``); nothing else can fail short of 2^31 re-entries.
    func locked<R, E: Error>(_ lock: RLock, _ body: (UnsafeMutablePointer<Element>) throws(E) -> R) throws(E) -> R {
        let status = mp_rmutex_lock(lock.mutex, Int64(MP_FOREVER))
        precondition(status == MP_OK || status == MP_OWNER_DIED, "SharedValue lock: status \(status)")
        defer { _ = mp_rmutex_unlock(lock.mutex) }
        return try body(base)
    }

    private enum CodingKeys: String, CodingKey { case memory, count, type, stride }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(memory, forKey: .memory)
        try c.encode(count, forKey: .count)
        try c.encode(TypeFingerprint.of(Element.self), forKey: .type)
        try c.encode(MemoryLayout<Element>.stride, forKey: .stride)
    }

    /// Checks what the sender said against this process's type and against the region it found:
    /// the region must hold `count` elements (a payload is input, see <doc:TrustBoundaries>).
    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(UInt32.self, forKey: .type)
        let stride = try c.decode(Int.self, forKey: .stride)
        guard type == TypeFingerprint.of(Element.self), stride == MemoryLayout<Element>.stride else {
            throw DecodingError.typeMismatch(
                Element.self,
                .init(codingPath: c.codingPath, debugDescription: "the shared elements are of another type"))
        }
        memory = try c.decode(SharedMemory.self, forKey: .memory)
        count = try c.decode(Int.self, forKey: .count)
        let (bytes, overflow) = stride.multipliedReportingOverflow(by: count)
        guard count >= 0, !overflow, bytes <= memory.size else {
            throw SharedMemoryError.tooSmall(name: memory.name ?? "anonymous", size: memory.size)
        }
        base = memory.buffer.baseAddress!.bindMemory(to: Element.self, capacity: max(count, 1))
    }
}
