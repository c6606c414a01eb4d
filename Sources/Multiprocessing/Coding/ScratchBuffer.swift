/// A growable array of plain values that starts in memory the caller lends it (on the caller's
/// stack) and moves to the heap only when it outgrows that: the encoder's output and its stack of
/// open containers, which usually fit, so that encoding a message allocates nothing of its own.
///
/// Unlike `Array`, appending checks neither uniqueness nor exclusivity: the buffer has one owner,
/// the ``BinaryWriter`` of one encode call.
struct ScratchBuffer<Element: BitwiseCopyable> {
    private(set) var base: UnsafeMutablePointer<Element>
    private(set) var count = 0
    private var capacity: Int
    private var onHeap = false

    /// A buffer that starts in `initial` (which must stay valid while the buffer is used).
    init(_ initial: UnsafeMutableBufferPointer<Element>) {
        base = initial.baseAddress!
        capacity = initial.count
    }

    /// Frees the heap storage, if any; the buffer must not be used afterwards.
    mutating func release() {
        if onHeap { base.deallocate() }
    }

    subscript(index: Int) -> Element {
        unsafeAddress {
            precondition(index >= 0 && index < count, "ScratchBuffer index out of range")
            return UnsafePointer(base + index)
        }
        nonmutating unsafeMutableAddress {
            precondition(index >= 0 && index < count, "ScratchBuffer index out of range")
            return base + index
        }
    }

    var last: Element? { count > 0 ? base[count - 1] : nil }

    mutating func append(_ element: Element) {
        if count == capacity { grow(1) }
        (base + count).initialize(to: element)
        count += 1
    }

    mutating func append(contentsOf elements: UnsafeBufferPointer<Element>) {
        guard let source = elements.baseAddress else { return }
        if capacity - count < elements.count { grow(elements.count) }
        if elements.count < 4 {  // a short key: no call to `memcpy`
            for index in 0..<elements.count { (base + count + index).initialize(to: source[index]) }
        } else {
            (base + count).initialize(from: source, count: elements.count)
        }
        count += elements.count
    }

    @discardableResult
    mutating func removeLast() -> Element {
        precondition(count > 0, "removeLast from an empty ScratchBuffer")
        count -= 1
        return base[count]
    }

    /// Doubles the capacity at least, so that appending stays amortized constant time.
    private mutating func grow(_ extra: Int) {
        let newCapacity = max(2 * capacity, count + extra, 16)
        let storage = UnsafeMutablePointer<Element>.allocate(capacity: newCapacity)
        storage.initialize(from: base, count: count)
        release()
        base = storage
        capacity = newCapacity
        onHeap = true
    }
}

extension ScratchBuffer where Element == UInt8 {
    /// The content, valid until the next change.
    var bytes: UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(start: base, count: count) }

    /// Bytes of any kind (those of a `Data`, say).
    mutating func append(raw: UnsafeRawBufferPointer) {
        guard let source = raw.baseAddress else { return }
        if capacity - count < raw.count { grow(raw.count) }
        UnsafeMutableRawPointer(base + count).copyMemory(from: source, byteCount: raw.count)
        count += raw.count
    }

    /// Bytes of a key or a short string: up to 16 in two loads and two stores (overlapping), as
    /// the call to `memcpy` would cost more than the copy.
    @inline(__always)
    mutating func append(short source: UnsafeBufferPointer<UInt8>) {
        let length = source.count
        guard length >= 4, length <= 16, let from = source.baseAddress else {
            return append(contentsOf: source)
        }
        if capacity - count < length { grow(length) }
        let to = UnsafeMutableRawPointer(base + count)
        func copy<T: FixedWidthInteger>(_: T.Type) {
            let tail = length - MemoryLayout<T>.size
            let head = UnsafeRawPointer(from).loadUnaligned(as: T.self)
            let last = UnsafeRawPointer(from).loadUnaligned(fromByteOffset: tail, as: T.self)
            to.storeBytes(of: head, as: T.self)
            to.storeBytes(of: last, toByteOffset: tail, as: T.self)
        }
        if length >= 8 { copy(UInt64.self) } else { copy(UInt32.self) }
        count += length
    }

    /// The low `count` bytes of `value`, least significant first, in a single store.
    mutating func appendLittleEndian(_ value: UInt64, count length: Int) {
        if capacity - count < 8 { grow(8) }
        UnsafeMutableRawPointer(base + count).storeBytes(of: value.littleEndian, as: UInt64.self)
        count += length
    }

    /// Overwrites 4 bytes at `offset` (a container header's field).
    func store(_ value: UInt32, at offset: Int) {
        precondition(offset >= 0 && offset + 4 <= count, "ScratchBuffer store out of range")
        UnsafeMutableRawPointer(base + offset).storeBytes(of: value.littleEndian, as: UInt32.self)
    }
}
