import Multiprocessing
import MultiprocessingTestTargets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// SharedValue and SharedArray (Python's Value and Array): typed shared memory with a lock each,
/// across fork, forkserver and spawn; exact counts, and handles checked when they are decoded.
@Suite("SharedValue and SharedArray")
struct SharedValueTests {
    @Test("a value and an array: reads, writes, locked updates, snapshots, an empty array")
    func basics() throws {
        let v = try SharedValue(41)
        #expect(v.value == 41)
        v.value = 42
        #expect(v.value == 42)
        #expect(
            v.withLock { value -> Int in
                value *= 2
                return value + 1
            } == 85)
        #expect(v.value == 84)
        // The lock is the value's, reentrant, and held by withLock.
        v.withLock { _ in #expect(v.lock.recursionCount == 1) }
        try v.lock.withLock { v.value += 1 }  // Python's `with v.get_lock(): v.value += 1`
        #expect(v.value == 85)

        let a = try SharedArray([1.5, 2.5, 3.5])
        #expect(a.count == 3)
        #expect(a[1] == 2.5)
        a[2] = 9
        #expect(a.elements == [1.5, 2.5, 9])
        a.withLock { cells in for i in cells.indices { cells[i] *= 2 } }
        #expect(a.elements == [3, 5, 18])
        let zeros = try SharedArray(repeating: UInt8(0), count: 5000)
        #expect(zeros.elements.allSatisfy { $0 == 0 })
        #expect(try SharedArray<Int>([]).elements.isEmpty)
        #expect(try SharedArray(repeating: 7, count: 0).count == 0)
        #expect(throws: SharedMemoryError.invalidSize(-1)) { try SharedArray(repeating: 0, count: -1) }
        #expect(throws: SharedMemoryError.invalidSize(Int.max / 2)) {
            try SharedArray(repeating: 0, count: Int.max / 2)
        }
    }

    @Test("4 forked children × 2 000 locked increments: exactly 8 000; each child's own cell")
    func forkedChildren() throws {
        let total = try SharedValue(0)
        let cells = try SharedArray(repeating: 0, count: 4)
        let children = (0..<4).map { i in
            Process {
                for _ in 0..<2000 { total.withLock { $0 += 1 } }
                cells[i] = (i + 1) * (i + 1)
            }
        }
        for c in children { try c.start() }
        for c in children {
            #expect(try c.join(timeout: .seconds(60)))
            #expect(c.exitCode == 0)
        }
        #expect(total.value == 8000)
        #expect(cells.elements == [1, 4, 9, 16])
    }

    @Test("forkserver and spawned children receive them as arguments: exact totals", arguments: [true, false])
    func startedChildren(spawned: Bool) throws {
        useTestHelper()
        let job = SharedTallyJob(
            total: try SharedValue(0), cells: try SharedArray(repeating: 0.5, count: 3), iterations: 1000)
        let children = (0..<3).map { _ in
            spawned
                ? Process(spawn: TestTargets.sharedTally, argument: job)
                : Process(target: TestTargets.sharedTally, argument: job)
        }
        for c in children { try c.start() }
        for c in children {
            #expect(try c.join(timeout: .seconds(60)))
            #expect(c.exitCode == 0)
        }
        #expect(job.total.value == 3000)
        #expect(job.cells.elements == [3000.5, 3000.5, 3000.5])
    }

    @Test("a holder SIGKILLed inside withLock: the lock passes on and the value is readable")
    func holderKilled() throws {
        let v = try SharedValue(UInt64(0))
        let inside = try SharedValue(UInt8(0))
        let child = Process {
            v.withLock { value in
                value = 7
                inside.value = 1
                while true { try? sleep(for: .seconds(1)) }
            }
        }
        try child.start()
        #expect(eventually(timeout: .seconds(20)) { inside.value == 1 })
        try child.kill()
        #expect(try child.join(timeout: .seconds(20)))
        #expect(v.value == 7)  // taken over from the dead holder
        v.value = 8
        #expect(v.value == 8)
    }

    @Test("a handle decoded as another element type or shape is refused")
    func decodingChecks() throws {
        let ints = try SharedValue(5)
        let encoded = try FoundationJSON.encode(ints)
        #expect(try FoundationJSON.decode(SharedValue<Int>.self, encoded).value == 5)
        #expect(throws: DecodingError.self) { try FoundationJSON.decode(SharedValue<Double>.self, encoded) }
        #expect(throws: DecodingError.self) { try FoundationJSON.decode(SharedValue<Int32>.self, encoded) }
        let array = try SharedArray([1, 2, 3])
        let arrayBytes = try FoundationJSON.encode(array)
        #expect(try FoundationJSON.decode(SharedArray<Int>.self, arrayBytes).elements == [1, 2, 3])
        #expect(throws: DecodingError.self) { try FoundationJSON.decode(SharedValue<Int>.self, arrayBytes) }
        // A count the region cannot hold (a payload is input): refused before anything is read.
        let text = String(decoding: arrayBytes, as: UTF8.self)
        #expect(text.contains("\"count\":3"))
        let lying = text.split(separator: "\"count\":3", omittingEmptySubsequences: false).joined(
            separator: "\"count\":100000")
        #expect(throws: SharedMemoryError.self) { try FoundationJSON.decode(SharedArray<Int>.self, Array(lying.utf8)) }
    }
}
