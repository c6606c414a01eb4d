import Multiprocessing
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Pipes and named regions under misuse and faults: a receive that times out midway, two
/// receivers, a reader gone, a close while another thread uses the end, a name made again. Each
/// test failed before its fix (a review of pipes and shared memory).
@Suite("Pipe and shared memory faults", .serialized)
struct PipeFaultTests {
    final class Slot<T>: @unchecked Sendable {
        var value: T
        init(_ value: T) { self.value = value }
    }

    /// receive(timeout:) polled, then read without a deadline: a peer that had sent a header and
    /// part of a body (or stalled, or was stopped) held the receive past its timeout, forever.
    @Test("receive(timeout:) honours its timeout when only part of a message has arrived, and keeps that part")
    func receiveTimeoutPartialFrame() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        // A frame that announces 100 bytes, and 3 of them; the writer stays open.
        let part: [UInt8] = [100, 0, 0, 0, 1, 2, 3]
        #expect(part.withUnsafeBytes { write(writer.fileDescriptor, $0.baseAddress!, $0.count) } == part.count)
        let outcome = Slot<String>("running")
        let t = Thread {
            do {
                _ = try reader.receive([UInt8].self, timeout: .milliseconds(200))
                outcome.value = "received"
            } catch {
                outcome.value = "\(error)"
            }
        }
        try t.start()
        let ended = try t.join(timeout: .seconds(5))
        #expect(ended, "receive(timeout: 200 ms) still blocked after 5 s")
        if ended { #expect(outcome.value == "timeout") }
        // The part read stays: the rest of the message completes it, and the stream stays in step.
        let rest = [UInt8](4..<101)
        #expect(rest.withUnsafeBytes { write(writer.fileDescriptor, $0.baseAddress!, $0.count) } == rest.count)
        #expect(try reader.poll(timeout: .seconds(5)))
        #expect(try reader.receiveBytes() == [UInt8](1..<101))
        try writer.send(7)
        #expect(try reader.receive(Int.self, timeout: .seconds(5)) == 7)
        writer.close()
        #expect(try t.join(timeout: .seconds(10)))
    }

    /// Two threads wait with receive(timeout:) on one end; one message arrives: both polls said
    /// "readable", one took the message, the other then blocked in read with no deadline.
    @Test("two threads in receive(timeout:), one message: the other one times out")
    func receiveTimeoutTwoThreads() throws {
        let (a, b) = try Pipe.make()
        // Up to 10 rounds: the hang needs both polls to wake on the one message (most rounds).
        for round in 0..<10 {
            let results = Guarded<[String]>([])
            let record: @Sendable (String) -> Void = { s in results.withLock { $0.append(s) } }
            let threads = (0..<2).map { _ in
                Thread {
                    do {
                        let v = try a.receive(Int.self, timeout: .seconds(1))
                        record("got \(v)")
                    } catch {
                        record("\(error)")
                    }
                }
            }
            for t in threads { try t.start() }
            usleep(200_000)  // both in ppoll
            try b.send(7)
            var allEnded = true
            for t in threads { allEnded = try t.join(timeout: .seconds(3)) && allEnded }
            #expect(
                allEnded, "round \(round): a receive(timeout: 1 s) still blocked after 3 s; \(results.withLock { $0 })")
            if !allEnded {
                try b.send(8)  // frees the blocked reader
                for t in threads { #expect(try t.join(timeout: .seconds(10))) }
                return
            }
        }
    }

    /// A simplex pipe's send goes through write(2): with SIGPIPE at its default (every Swift
    /// program's), a reader that has gone kills the sender instead of ConnectionError.endOfFile.
    @Test("simplex: sending after the reader has gone is endOfFile, not death by SIGPIPE")
    func simplexSenderSIGPIPE() throws {
        // What the child runs, run here first: a send that fails on a duplex end.
        do {
            let (x, y) = try Pipe.make()
            x.close()
            _ = Result { () throws(ConnectionError) in try y.sendBytes([1]) }
        }
        let code = try runInChild(timeout: .seconds(20)) {
            let (reader, writer) = try Pipe.make(duplex: false)
            reader.close()
            do {
                try writer.sendBytes([1, 2, 3])
                exit(10)
            } catch ConnectionError.endOfFile {
                exit(0)
            } catch {
                exit(11)
            }
        }
        #expect(code == 0, "the child's exit code: \(code.map(String.init) ?? "nil") (-13 is SIGPIPE)")
    }

    /// sendBytes copies a non-contiguous collection into an Array before sendFrame checks its
    /// length: a collection over the limit is materialized (5 GiB here) before messageTooLarge.
    @Test(
        "a non-contiguous message over 4 GiB is refused before it is copied", .enabled(if: !runningUnderSanitizer),
        arguments: [16, 5 << 30])
    func oversizeNonContiguous(count: Int) throws {
        let (x, y) = try Pipe.make()
        defer {
            x.close()
            y.close()
        }
        // Run here first, small.
        try y.sendBytes(repeatElement(UInt8(1), count: 3))
        _ = try x.receiveBytes()
        // 1 GiB more address space than this process (and so the forked child) uses now: enough
        // for anything but the copy.
        var statm = [UInt8](repeating: 0, count: 128)
        let fd = open("/proc/self/statm", O_RDONLY)
        let n = statm.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
        close(fd)
        var pages = 0
        for b in statm.prefix(max(n, 0)) {
            guard b >= 48 && b <= 57 else { break }
            pages = pages * 10 + Int(b - 48)
        }
        let limitBytes = pages * Int(sysconf(Int32(_SC_PAGESIZE))) + (1 << 30)
        let code = try runInChild(timeout: .seconds(60)) {
            var limit = rlimit()
            limit.rlim_cur = rlim_t(limitBytes)
            limit.rlim_max = rlim_t.max
            guard setrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0 else { exit(3) }
            do {
                try y.sendBytes(repeatElement(UInt8(0), count: count))
                exit(count < 1 << 32 ? 0 : 10)  // count 16: the control, under the same limit
            } catch ConnectionError.messageTooLarge {
                exit(0)
            } catch {
                exit(11)
            }
        }
        #expect(code == 0, "the child's exit code: \(code.map(String.init) ?? "nil")")
    }

    /// The creator's deinit (and exit) unlinks by name: after another handle unlinked it and a new
    /// region took the name, the old creator removes the new region's name.
    @Test("a creator that goes leaves alone a region re-created under its name")
    func creatorUnlinksRecreatedName() throws {
        let name = "pipe-faults-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var first: SharedMemory? = try SharedMemory(create: name, size: 64)
        let attached = try SharedMemory(attach: name)
        try attached.unlink()  // anyone may unlink (Python's SharedMemory.unlink)
        let second = try SharedMemory(create: name, size: 64)  // the name is free: a new region
        second.buffer[0] = 42
        first = nil  // the old creator goes
        _ = first
        let found = Result { () throws(SharedMemoryError) in try SharedMemory(attach: name) }
        #expect((try? found.get())?.buffer[0] == 42, "the new region's name is gone: \(found)")
        try? second.unlink()
    }

    /// The send side of the same hazard: a send that took the descriptor number before close()
    /// and waited for the send lock writes its frame to whatever has that number afterwards.
    @Test("close() while another thread waits to send: its message never reaches another connection")
    func closeWhileSending() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        let oldNumber = writer.fileDescriptor
        let big = [UInt8](repeating: 1, count: 1 << 20)
        let first = Thread { try writer.sendBytes(big) }  // fills the pipe, holds the send lock
        try first.start()
        usleep(200_000)
        let outcome = Guarded("running")
        let second = Thread {
            do {
                try writer.sendBytes([42])
                outcome.withLock { $0 = "sent" }
            } catch {
                outcome.withLock { $0 = "\(error)" }
            }
        }
        try second.start()
        usleep(200_000)  // took the descriptor, waits for the send lock
        writer.close()
        let (a2, b2) = try Pipe.make()  // cannot take the number while the sends still use it
        defer {
            a2.close()
            b2.close()
        }
        #expect(a2.fileDescriptor != oldNumber && b2.fileDescriptor != oldNumber)
        #expect(try reader.receiveBytes().count == big.count)  // frees the first send
        #expect(try first.join(timeout: .seconds(5)))
        #expect(try second.join(timeout: .seconds(5)))
        #expect(outcome.withLock { $0 } == "closed", "the send on a closed end: \(outcome.withLock { $0 })")
        #expect(try !b2.poll(timeout: .milliseconds(200)), "a message arrived on an unrelated connection")
        if try b2.poll() { #expect(try b2.receiveBytes() == [42]) }
        reader.close()
    }

    /// receiveBytes() read the descriptor number it took before close(), which closed it at once:
    /// when the blocked read returned, the rest of the frame came from whatever descriptor had that
    /// number by then (another connection's bytes). Now the number stays this end's until the call
    /// returns, and the call reports `closed`.
    @Test(
        "close() while another thread is blocked in receive: it ends with closed, and never reads another end's bytes")
    func closeWhileReceiving() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        let oldNumber = reader.fileDescriptor
        let outcome = Slot<String>("running")
        let t = Thread {
            do {
                let bytes = try reader.receiveBytes()
                outcome.value = "bytes \(bytes)"
            } catch {
                outcome.value = "\(error)"
            }
        }
        try t.start()
        usleep(200_000)  // blocked in read of the header
        reader.close()
        #expect(reader.isClosed)
        // A new pipe cannot take the number while the receive still uses it.
        let (a2, b2) = try Pipe.make()
        defer {
            a2.close()
            b2.close()
        }
        #expect(a2.fileDescriptor != oldNumber && b2.fileDescriptor != oldNumber)
        try writer.sendBytes([1, 2, 3, 4, 5])  // the old pipe's message ends the blocked read
        try b2.sendBytes([9, 9, 9])
        #expect(try t.join(timeout: .seconds(10)))
        #expect(outcome.value == "closed", "the receive on a closed end returned: \(outcome.value)")
        #expect(try a2.receiveBytes() == [9, 9, 9])  // the new pipe's message, whole
        #expect(throws: ConnectionError.closed) { try reader.receiveBytes() }
        // The last call out closed the descriptor: the writer now finds no reader. (Once: a child
        // that another test forks meanwhile holds a copy of the read end for as long as it lives.)
        #expect(
            eventually {
                do { try writer.sendBytes([1]) } catch { return error as? ConnectionError == .endOfFile }
                return false
            })
        writer.close()
    }

    /// A forked child keeps its SharedValue; the parent drops its own. The parent frees the lock's
    /// arena slot (Arena.free, generation bump) and hands it to the next primitive it makes; the
    /// child's withLock then locks that primitive's memory. `parentDrops: false` is the control.
    @Test("a forked child's SharedValue lock is not the parent's next Semaphore", arguments: [false, true])
    func sharedValueLockSlotReused(parentDrops: Bool) throws {
        let box = Slot<SharedValue<Int>?>(try SharedValue(0))
        let keep = parentDrops ? nil : box.value
        let go = try SharedValue(UInt8(0))
        let inside = try SharedValue(UInt8(0))
        // What the child runs, run here first (the fork hazard).
        box.value!.withLock { $0 += 1 }
        go.value = 0
        inside.value = 0
        _ = eventually(timeout: .zero) { go.value == 1 }
        let child = Process {
            guard let v = box.value else { exit(3) }
            _ = eventually(timeout: .seconds(20)) { go.value == 1 }
            v.withLock { value in
                value += 1
                inside.value = 1
                while true { usleep(100_000) }
            }
        }
        try child.start()
        box.value = nil

        let semaphore = try Semaphore(value: 0)
        let before = semaphore.value
        go.value = 1
        #expect(eventually(timeout: .seconds(20)) { inside.value == 1 })
        let during = semaphore.value
        // Nobody released the semaphore: acquiring it must time out.
        let acquired = try semaphore.acquire(timeout: .milliseconds(300))
        #expect(
            !acquired,
            "Semaphore(value: 0) acquired; value before the child locked \(before), while it holds its lock \(during), child pid \(child.pid ?? 0)"
        )
        try child.kill()
        #expect(try child.join(timeout: .seconds(20)))
        withExtendedLifetime(keep) {}
    }

    /// Named regions: an attach that races with the creation sees no header yet and is told the
    /// region is not the library's (shm.c says the header is filled "before anyone else can attach").
    @Test("attaching a region while it is being created is never notOurs")
    func attachDuringCreate() throws {
        let name = "pipe-faults-race-\(getpid())"
        let stop = Guarded(false)
        let errors = Guarded<[String: Int]>([:])
        let attacher = Thread {
            while !stop.withLock({ $0 }) {
                do {
                    _ = try SharedMemory(attach: name)
                } catch SharedMemoryError.notFound {
                } catch {
                    let key = "\(error)"
                    errors.withLock { $0[key, default: 0] += 1 }
                }
            }
        }
        try attacher.start()
        for _ in 0..<20_000 {
            let region = try SharedMemory(create: name, size: 4096)
            try region.unlink()
        }
        stop.withLock { $0 = true }
        #expect(try attacher.join(timeout: .seconds(30)))
        #expect(errors.withLock { $0 }.isEmpty, "\(errors.withLock { $0 })")
    }
}
