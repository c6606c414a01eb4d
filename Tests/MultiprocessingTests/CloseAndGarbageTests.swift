import CMultiprocessing
import MultiprocessingTestTargets
import Synchronization
import SystemPackage
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

extension Result {
    fileprivate var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
}

@Suite("Closing sockets while operations wait; garbled queue words on the async and batch paths")
struct CloseAndGarbageTests {
    init() { useTestHelper() }

    // MARK: Sockets

    @Test("closing a connection while a receive waits on it ends that receive and sends the peer EOF")
    func closeWhileReceiving() async throws {
        try await onLoop(limit: .seconds(20)) {
            let listener = try await TCPListener.listen()
            async let accepted = listener.accept()
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let peer = try await accepted
            async let pending: Result<[UInt8], any Error> = {
                do { return .success(try await client.receive(upTo: 100)) } catch { return .failure(error) }
            }()
            try await sleep(for: .milliseconds(50))
            try await client.close()
            // The peer should see the end of the stream.
            let eof = try? await withTimeout(.seconds(2)) { try await peer.receive(upTo: 10) }
            #expect(eof == [], "the peer saw no EOF after close: \(String(describing: eof))")
            // Unblock the pending receive if it is still there (it holds the socket open).
            try? await peer.send([9])
            let outcome = await pending
            switch outcome {
            case .success(let bytes): Issue.record("a receive on a closed connection returned \(bytes)")
            case .failure(let error): #expect(error as? IOError == .closed, "\(error)")
            }
            try await peer.close()
            try await listener.close()
        }
    }

    @Test("closing a connection while a send waits on it ends that send (its peer reads nothing) and sends EOF")
    func closeWhileSending() async throws {
        try await onLoop(limit: .seconds(20)) {
            let listener = try await TCPListener.listen()
            async let accepted = listener.accept()
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let peer = try await accepted
            let big = [UInt8](repeating: 0xAB, count: 16 << 20)
            async let sending: Result<Void, any Error> = {
                do { return .success(try await client.send(big)) } catch { return .failure(error) }
            }()
            try await sleep(for: .milliseconds(100))  // the socket buffers are full: the rest waits in the ring
            try await client.close()
            // Nobody reads: only the close can end the send (else the test's limit does).
            let outcome = await sending
            if case .failure(let error as IOError) = outcome {
                #expect(error == .closed)
            } else {
                Issue.record("a send on a connection closed under it: \(outcome)")
            }
            // The peer gets what was sent before the close, then the end of the stream.
            var received = 0
            while true {
                let chunk = try await withTimeout(.seconds(5)) { try await peer.receive(upTo: 65536) }
                if chunk.isEmpty { break }
                received += chunk.count
            }
            #expect(received < big.count, "the peer received all \(received) bytes of a send cut by a close")
            try await peer.close()
            try await listener.close()
        }
    }

    @Test("closing a listener while an accept waits on it stops listening")
    func closeWhileAccepting() async throws {
        try await onLoop(limit: .seconds(20)) {
            let listener = try await TCPListener.listen()
            let port = listener.port
            async let pending: Result<TCPConnection, any Error> = {
                do { return .success(try await listener.accept()) } catch { return .failure(error) }
            }()
            try await sleep(for: .milliseconds(50))
            try await listener.close()
            var connected: TCPConnection? = nil
            do {
                connected = try await TCPConnection.connect(host: "127.0.0.1", port: port)
                Issue.record("a connect to a closed listener's port succeeded")
            } catch {
                #expect(error as? IOError == .system(.connectionRefused, function: "connect"), "\(error)")
            }
            let outcome = await pending
            switch outcome {
            case .success(let c):
                Issue.record("the pending accept of a closed listener returned a connection")
                try? await c.close()
            case .failure(let error): #expect(error as? IOError == .closed, "\(error)")
            }
            try? await connected?.close()
        }
    }

    @Test("a shared loop that could not be made at one moment (EMFILE) is made later")
    func sharedLoopAfterEMFILE() throws {
        // A spawned child: it takes every descriptor and starts the loop's thread, which a child
        // forked from this busy test process could hang doing (a runtime lock held at the fork).
        let child = Process(spawn: TestTargets.sharedLoopAfterEMFILE, argument: ExitJob(code: 0))
        try child.start()
        if try !child.join(timeout: .seconds(30)) {
            try child.kill()
            try child.join()
        }
        #expect(child.exitCode == 0, "exit code \(String(describing: child.exitCode)) (3: the failure was kept)")
    }

    // MARK: Queue trust

    @Test("an async get on a queue whose consumer lock word holds flag bits only ends by its deadline")
    func asyncGetGarbledConsumerLock() async throws {
        let queue = try Queue<[UInt8]>(capacity: 4096)
        try queue.putNowait([1, 2, 3])
        queue.channel.header.pointee.consumer.word = 0x8000_0000  // a flag, no owner
        // Before the fix the loop's thread retried the failing CAS forever (the limit ends the test).
        try await onLoop(limit: .seconds(10)) {
            do {
                _ = try await queue.get(timeout: .milliseconds(200))
            } catch is QueueError {}
        }
    }

    @Test("an async put on a queue whose producer lock word holds flag bits only ends by its deadline")
    func asyncPutGarbledProducerLock() async throws {
        let queue = try Queue<[UInt8]>(capacity: 4096)
        queue.channel.header.pointee.producer.word = 0x4000_0000  // a bit outside the id, no owner
        try await onLoop(limit: .seconds(10)) {
            do {
                try await queue.put([1, 2, 3], timeout: .milliseconds(200))
            } catch is QueueError {}
        }
    }

    @Test("head moved by a peer between the FIRST and the rest: no read outside the ring")
    func headMovedBeforeRest() throws {
        let code = try runInChild(timeout: .seconds(30)) {
            // A queue in a mapping followed by inaccessible pages: a read past its end faults.
            let capacity: UInt64 = 65536
            let size = Int(mp_queue_size(capacity, 0))
            let page = Int(sysconf(Int32(_SC_PAGESIZE)))
            let mapped = (size + page - 1) / page * page
            guard let base = mmap(nil, mapped + 8 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                base != MAP_FAILED
            else { exit(2) }
            mprotect(base + mapped, 8 * page, PROT_NONE)
            // The queue ends exactly at the guard: its size in whole pages.
            let header = (base + (mapped - size)).assumingMemoryBound(to: mp_queue_t.self)
            mp_queue_init(header, capacity, 0, 0, 0)
            let view = UnsafeMutablePointer<mp_queue_view_t>.allocate(capacity: 1)
            guard mp_queue_view_attach(view, header, UInt64(size), 1 << 30, 0) == 0 else { exit(2) }
            let message = [UInt8](repeating: 5, count: 40_000)
            guard mp_queue_put(view, message, UInt64(message.count), MP_FOREVER) == MP_OK else { exit(2) }
            var payload: UnsafeRawPointer? = nil
            var length: UInt64 = 0
            var total: UInt64 = 0
            guard mp_queue_get_begin(view, MP_FOREVER, &payload, &length, &total) == MP_OK, total == 40_000 else {
                exit(2)
            }
            // A peer writes `head` now: the ring's last record place.
            header.pointee.head = capacity - 8
            let dest = UnsafeMutableRawPointer.allocate(byteCount: Int(total), alignment: 16)
            let status = mp_queue_get_rest(view, dest, total)
            let got = Array(UnsafeRawBufferPointer(start: dest, count: Int(total)))
            exit(status == MP_CORRUPTED || (status == MP_OK && got == message) ? 0 : 3)
        }
        #expect(code == 0, "exit code \(String(describing: code)) (-11: read past the ring's end)")
    }

    @Test("a batch get with a huge max and a garbled `produced` does not allocate for it")
    func batchGetGarbledProduced() throws {
        // The child (forked: a huge allocation would kill it, not the suite) runs only code this
        // process has run already. A child forked while another thread of this busy process holds
        // the Swift runtime's metadata lock hangs if it instantiates a generic type (a CI run lost
        // this test's child that way, killed at the 30 s deadline).
        let queue = try Queue<SIMD64<UInt8>>(capacity: 65536)
        try queue.put(SIMD64(repeating: 1), timeout: .seconds(1))
        #expect(try queue.get(max: 2, timeout: .seconds(1)).count == 1)
        let code = try runInChild(timeout: .seconds(30)) {
            try queue.put(SIMD64(repeating: 1), timeout: .seconds(1))
            queue.channel.header.pointee.produced = 1 << 40
            let got = try queue.get(max: Int.max, timeout: .seconds(1))
            exit(got.count == 1 ? 0 : 4)
        }
        #expect(code == 0, "exit code \(String(describing: code))")
    }

    @Test("a send cut by a close does not go on into the socket that reuses the descriptor number")
    func sendAfterCloseGoesElsewhere() async throws {
        try await onLoop(limit: .seconds(30)) {
            let listener = try await TCPListener.listen()
            async let accepted = listener.accept()
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let peer = try await accepted
            let big = [UInt8](repeating: 0xAB, count: 16 << 20)
            async let sending: Result<Void, any Error> = {
                do { return .success(try await client.send(big)) } catch { return .failure(error) }
            }()
            try await sleep(for: .milliseconds(100))  // the socket buffers are full: a send waits
            try await client.close()
            // A new connection takes the lowest free number: most likely the one just closed.
            async let accepted2 = listener.accept()
            let client2 = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let peer2 = try await accepted2
            // Drain the first peer so the first send goes on.
            while true {
                let chunk = (try? await withTimeout(.milliseconds(300)) { try await peer.receive(upTo: 65536) }) ?? []
                if chunk.isEmpty { break }
            }
            let stray = (try? await withTimeout(.milliseconds(500)) { try await peer2.receive(upTo: 65536) }) ?? []
            #expect(stray.count == 0, "the second connection received \(stray.count) bytes nobody sent on it")
            let outcome = await sending
            if case .failure(let error as IOError) = outcome {
                #expect(error == .closed)
            } else {
                Issue.record("a send on a connection closed under it: \(outcome)")
            }
            try? await client2.close()
            try? await peer2.close()
            try? await peer.close()
            try await listener.close()
        }
    }

    @Test("a close during its loop's shutdown still closes the descriptor")
    func closeDuringShutdown() async throws {
        let path = scratchPath("close-during-shutdown")
        defer { unlink(path) }
        close(open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0o600))
        let loop = try EventLoop(name: "close-during-shutdown")
        let outcome = try await Task(executorPreference: loop) { () async throws -> String in
            let file = try await File.open(path)
            loop.shutdown()  // on the loop's own thread: starts the shutdown
            do {
                try await file.close()
                return "closed"
            } catch {
                return "\(error)"
            }
        }.value
        loop.shutdown()
        // Any descriptor of this process still open on the file (numbers are reused by parallel tests).
        let open = Self.descriptors(of: path)
        #expect(open.isEmpty, "descriptors \(open) still open on the file after close (\(outcome))")
    }

    static func descriptors(of path: String) -> [Int32] {
        var found: [Int32] = []
        guard let dir = opendir("/proc/self/fd") else { return [] }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            guard let fd = Int32(name) else { continue }
            var target = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/self/fd/\(name)", &target, target.count - 1)
            if n > 0 && String(cString: target) == path { found.append(fd) }
        }
        return found
    }

    @Test("receive(exactly:) of a huge count that the peer never sends ends with nil, allocating nothing for it")
    func receiveExactlyHuge() async throws {
        try await onLoop(limit: .seconds(20)) {
            let listener = try await TCPListener.listen()
            async let accepted = listener.accept()
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let peer = try await accepted
            try await client.send([1, 2, 3])
            try await client.close()
            #expect(try await peer.receive(exactly: 1 << 42) == nil)
            try await peer.close()
            try await listener.close()
        }
    }
}

@Suite("Garbage over a lane queue: every get and put ends in time")
struct LaneGarbageTests {
    static func blockingBatch(_ queue: Queue<Int>) throws -> [Int] {
        try queue.get(max: 1 << 20, timeout: .milliseconds(5))
    }

    @Test(
        "random words over a lane queue's header, ring and lanes: blocking, batch and async gets and puts end in time")
    func randomLaneGarbage() async throws {
        let rounds = ProcessInfoLite.environment("MP_TRUST_ROUNDS").flatMap(Int.init) ?? 300
        var generator = SystemRandomNumberGenerator()
        for round in 0..<rounds {
            let queue = try Queue<Int>(capacity: 4096, ordering: .perProducer)
            for i in 0..<5 { try queue.putNowait(i) }
            let span = queue.channel.region.size
            let header = UnsafeMutableRawPointer(queue.channel.header)
            let count = Int.random(in: 1...6, using: &generator)
            var writes: [(Int, UInt64)] = []
            for _ in 0..<count {
                // Half the writes land in the lanes' header (after the ring), where the tests never wrote.
                let lanesAt = Int(MP_QUEUE_HEADER_SIZE) + 4096
                let offset =
                    Bool.random(using: &generator)
                    ? Int.random(in: lanesAt..<(lanesAt + 128 + 128 * 8 - 8), using: &generator) & ~7
                    : Int.random(in: 0..<(span - 8), using: &generator) & ~7
                let value: UInt64 =
                    Bool.random(using: &generator)
                    ? UInt64.random(in: 0...UInt64.max, using: &generator)
                    : UInt64.random(in: 0...300, using: &generator)
                header.storeBytes(of: value, toByteOffset: offset, as: UInt64.self)
                writes.append((offset, value))
            }
            let written = writes
            // Each call is timed (the suite's other tests may hold the test's own threads meanwhile).
            try await onLoop(limit: .seconds(60)) {
                for attempt in 0..<8 {
                    let t0 = mp_monotonic_ns()
                    defer {
                        let t = (mp_monotonic_ns() - t0) / 1_000_000
                        #expect(t < 5000, "round \(round) attempt \(attempt) took \(t) ms; writes \(written)")
                    }
                    do {
                        switch attempt % 4 {
                        case 0: _ = try await queue.get(timeout: .milliseconds(5))
                        case 1: _ = try await queue.get(max: 100, timeout: .milliseconds(5))
                        case 2: try await queue.put(7, timeout: .milliseconds(5))
                        default: _ = try Self.blockingBatch(queue)
                        }
                    } catch is QueueError {
                    } catch {
                        Issue.record("round \(round): \(error)")
                    }
                }
            }
        }
    }
}
