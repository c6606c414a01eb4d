import Multiprocessing
import Testing

@Suite("Thread and sleep")
struct ThreadTests {
    @Test("start, join, name, ident, isAlive")
    func basics() throws {
        let gate = Event()
        let counters = try SharedCounters()
        let t = Thread(name: "下载线程-with-a-long-name") {
            counters[0] = 1
            gate.wait()
        }
        #expect(t.name == "下载线程-with-a-long-name")
        #expect(!t.isAlive)
        #expect(t.ident == nil)
        try t.start()
        #expect(t.isAlive)
        #expect(t.ident != nil)
        #expect(try !t.join(timeout: .milliseconds(20)))
        gate.set()
        #expect(try t.join(timeout: .seconds(30)))
        #expect(!t.isAlive)
        #expect(t.nativeID != nil)
        #expect(counters[0] == 1)
        #expect(try t.join())  // a second join returns at once
    }

    @Test("bad use: start twice, join unstarted, negative timeout")
    func badUse() throws {
        let t = Thread {}
        #expect(throws: ProcessError.notStarted) { try t.join() }
        try t.start()
        #expect(throws: ProcessError.alreadyStarted) { try t.start() }
        #expect(throws: ProcessError.negativeTimeout(.seconds(-1))) { try t.join(timeout: .seconds(-1)) }
        try t.join()
        #expect(Thread {}.name.hasPrefix("Thread-"))
    }

    @Test("sleep(for:) blocks at least that long; negative throws")
    func blockingSleep() throws {
        let start = ContinuousClock.now
        try sleep(for: .milliseconds(20))
        #expect(ContinuousClock.now - start >= .milliseconds(20))
        try sleep(for: .zero)
        #expect(throws: SyncError.negativeTimeout(.milliseconds(-1))) { try sleep(for: .milliseconds(-1)) }
    }
}
