import Multiprocessing
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Review faults in Thread (Python's `threading.Thread`), Channel and the support types.
@Suite("ChannelThreadFaultTests")
struct ChannelThreadFaultTests {
    /// Python's `start()` returns once the thread runs: `native_id` and `ident` are set then. Here
    /// `nativeID` is written by the new thread itself, so right after `start()` it was often nil.
    @Test("nativeID is known as soon as start() returns")
    func nativeIDAfterStart() throws {
        var missing = 0
        for _ in 0..<200 {
            let gate = Event()
            let t = Thread { gate.wait() }
            try t.start()
            if t.nativeID == nil { missing += 1 }
            gate.set()
            #expect(try t.join(timeout: .seconds(30)))
        }
        #expect(missing == 0, "nativeID was nil right after start() in \(missing) of 200 threads")
    }

    /// The target sees its own thread's `ident` (Python: `current_thread().ident` in `run`), and a
    /// target that joins its own thread gets `joinSelf`. The handle was stored by `start()` after
    /// `pthread_create` returned, so a target that ran first saw `ident == nil` and got
    /// `notStarted` from `join()`.
    @Test("inside its target, a thread's ident is set and joining itself is joinSelf")
    func identInsideTarget() throws {
        let identMissing = Atomic<Int>(0)
        let wrongError = Atomic<Int>(0)
        for _ in 0..<200 {
            let box = Mutex<Thread?>(nil)
            let t = Thread {
                guard let me = box.withLock({ $0 }) else { return }
                if me.ident == nil { identMissing.add(1, ordering: .relaxed) }
                do {
                    try me.join(timeout: .zero)
                    wrongError.add(1, ordering: .relaxed)
                } catch ProcessError.joinSelf {
                } catch {
                    wrongError.add(1, ordering: .relaxed)
                }
            }
            box.withLock { $0 = t }
            try t.start()  // the target races start()'s return
            #expect(try t.join(timeout: .seconds(30)))
            box.withLock { $0 = nil }
        }
        #expect(identMissing.load(ordering: .relaxed) == 0)
        #expect(wrongError.load(ordering: .relaxed) == 0)
    }

    /// Python drops a thread's target once it has run (`del self._target` in `Thread.run`), so
    /// that an object holding its thread, whose target captures the object, is freed. Here the
    /// Thread kept its closure for good: such an object (a common shape: a class that starts its
    /// own worker thread) was a reference cycle, never freed after its thread ended.
    @Test("a finished thread lets go of its target: an owner that its target captures is freed")
    func targetReleasedAfterRun() throws {
        weak var freed: ThreadOwner?
        do {
            let owner = ThreadOwner()
            owner.thread = Thread { owner.ran.set() }
            try owner.thread!.start()
            #expect(try owner.thread!.join(timeout: .seconds(30)))
            #expect(owner.ran.isSet)
            freed = owner
        }
        #expect(freed == nil, "the owner is still alive: the finished thread holds its target")
    }
}

/// An object that starts a thread of its own, whose target captures it.
final class ThreadOwner: @unchecked Sendable {
    var thread: Thread?
    let ran = Event()
}
