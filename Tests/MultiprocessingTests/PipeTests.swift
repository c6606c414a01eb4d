import Multiprocessing
import MultiprocessingTestTargets
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Pipe")
struct PipeTests {
    @Test("duplex: both ends send and receive, between processes")
    func duplex() throws {
        let (a, b) = try Pipe.make()
        // What the child runs, run here first (the fork hazard: see lockMixed).
        try a.send(0)
        let first: Int = try b.receive()
        try b.send("got \(first)")
        _ = try a.receive(String.self, timeout: .seconds(30))
        let child = Process {
            while true {
                let x: Int = try b.receive()
                if x < 0 { return }
                try b.send("got \(x)")
            }
        }
        try child.start()
        for i in 0..<500 {
            try a.send(i)
            #expect(try a.receive(String.self, timeout: .seconds(30)) == "got \(i)")
        }
        try a.send(-1)
        try child.join()
        #expect(child.exitCode == 0)
    }

    @Test("out of descriptors: Pipe.make says so with the system's own error (EMFILE), both kinds")
    func outOfDescriptors() throws {
        // In a child: lowering this process's descriptor limit would starve the rest of the suite.
        let make = { (duplex: Bool) in Result { () throws(ConnectionError) in try Pipe.make(duplex: duplex) } }
        // Run here first, where both succeed (the fork hazard: see lockMixed).
        for duplex in [true, false] { _ = make(duplex) }
        let child = Process {
            var limit = rlimit()
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            let saved = limit
            limit.rlim_cur = 3  // stdin, stdout, stderr: not one more
            guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { exit(3) }
            defer { _ = withUnsafePointer(to: saved) { setrlimit(Int32(RLIMIT_NOFILE.rawValue), $0) } }
            for duplex in [true, false] {
                let made = make(duplex)
                guard case .failure(let error) = made else { exit(4) }
                guard error == .system(.tooManyOpenFiles, function: duplex ? "socketpair" : "pipe2") else { exit(5) }
            }
        }
        try child.start()
        #expect(try child.join(timeout: .seconds(20)))
        #expect(child.exitCode == 0)
        if child.exitCode == nil {
            try child.kill()
            try child.join()
        }
    }

    @Test("simplex: the first end receives, the second sends; misuse is a typed error")
    func simplex() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        #expect(throws: ConnectionError.wrongDirection) { try reader.send(1) }
        #expect(throws: ConnectionError.wrongDirection) { _ = try writer.receiveBytes() }
        try writer.sendBytes([1, 2, 3])
        #expect(try reader.poll(timeout: .seconds(5)))
        #expect(try reader.receiveBytes() == [1, 2, 3])
        #expect(try !reader.poll())
    }

    @Test("sendBytes takes any collection of bytes: contiguous or not, a slice, empty; the bytes arrive as sent")
    func sendBytesCollections() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try writer.sendBytes(bytes)
        try writer.sendBytes(bytes[100..<300])  // a slice: contiguous, not at its base's start
        try writer.sendBytes((0..<500).lazy.map { UInt8(truncatingIfNeeded: $0) })  // not contiguous
        try writer.sendBytes([UInt8]())
        try writer.sendBytes(Set<UInt8>([9]))
        #expect(try reader.poll(timeout: .seconds(5)))
        #expect(try reader.receiveBytes() == bytes)
        #expect(try reader.receiveBytes() == Array(bytes[100..<300]))
        #expect(try reader.receiveBytes() == (0..<500).map { UInt8(truncatingIfNeeded: $0) })
        #expect(try reader.receiveBytes() == [])
        #expect(try reader.receiveBytes() == [9])
        #expect(try !reader.poll())
        reader.close()
        #expect(throws: ConnectionError.wrongDirection) { try reader.sendBytes((0..<3).lazy.map { UInt8($0) }) }
    }

    @Test("poll, timeouts, large messages, end of file, closed ends")
    func edges() throws {
        let (a, b) = try Pipe.make()
        #expect(try !a.poll(timeout: .milliseconds(10)))
        #expect(throws: ConnectionError.timeout) { _ = try a.receive(Int.self, timeout: .milliseconds(10)) }
        #expect(throws: ConnectionError.negativeTimeout(.seconds(-1))) { try a.poll(timeout: .seconds(-1)) }
        let big = [UInt8]((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0) })
        let sender = Thread { try b.sendBytes(big) }
        try sender.start()
        #expect(try a.receiveBytes() == big)
        try sender.join()
        try b.send("wrong type")
        #expect(throws: ConnectionError.self) { _ = try a.receive([Double].self) }
        b.close()
        #expect(b.isClosed)
        #expect(throws: ConnectionError.closed) { try b.send(1) }
        // End of file is readable, once no process holds the write end: a child that another test
        // forks at this moment inherits it (as with any fork) until it exits.
        #expect(try eventually(timeout: .seconds(60)) { try a.poll() })
        #expect(throws: ConnectionError.endOfFile) { _ = try a.receiveBytes() }
        #expect(throws: ConnectionError.endOfFile) { try a.send(1) }
    }

    @Test("a message's length is the other end's word: 4 GiB announced and 10 bytes sent cost no 4 GiB")
    func announcedLengthIsNotTrusted() throws {
        let (reader, writer) = try Pipe.make(duplex: false)
        defer { reader.close() }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let peakBefore = usage.ru_maxrss  // KiB
        // A frame written by hand: a header that announces 4 GiB - 1 bytes, then 10 bytes, then
        // the end of the stream.
        let lie: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 7, count: 10)
        #expect(lie.withUnsafeBytes { write(writer.fileDescriptor, $0.baseAddress!, $0.count) } == lie.count)
        writer.close()
        // The end of the stream comes once no process holds the write end (a child that another
        // test forks meanwhile inherits it until it exits).
        #expect(try eventually(timeout: .seconds(60)) { try reader.poll() })
        #expect(throws: ConnectionError.endOfFile) { _ = try reader.receiveBytes() }
        getrusage(RUSAGE_SELF.rawValue, &usage)
        // Trusting the header zeroed 4 GiB first, and the peak rose by that much.
        #expect(usage.ru_maxrss - peakBefore < 256 * 1024, "peak grew by \(usage.ru_maxrss - peakBefore) KiB")
    }

    @Test("messages whose bodies end on either side of the receive's pieces arrive whole")
    func piecesOfTheBody() throws {
        let (a, b) = try Pipe.make()
        let piece = 1 << 20  // Connection.firstPiece
        let sizes = [0, 1, piece - 1, piece, piece + 1, 2 * piece, 2 * piece + 3, 4 * piece + 5]
        let sender = Thread {
            for size in sizes { try b.sendBytes((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ size) }) }
        }
        try sender.start()
        for size in sizes {
            #expect(try a.poll(timeout: .seconds(30)))
            let body = try a.receiveBytes()
            #expect(body.count == size)
            #expect(body == (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ size) })
        }
        #expect(try sender.join(timeout: .seconds(30)))
    }

    @Test("an end handed to a spawned child")
    func spawned() throws {
        useTestHelper()
        let (parent, child) = try Pipe.make()
        let p = Process(spawn: TestTargets.pipeEcho, argument: child)
        try p.start()
        for word in ["一", "two", "three"] {
            try parent.send(word)
            #expect(try parent.receive(String.self, timeout: .seconds(60)) == word + word)
        }
        try parent.send("")
        try p.join()
        #expect(p.exitCode == 0)
    }

    @Test("decoding the same end twice gives objects that share its descriptor: dropping one closes nothing")
    func decodedTwice() throws {
        let (a, b) = try Pipe.make()
        let encoded = try FoundationJSON.encode(a)
        var first: Connection? = try FoundationJSON.decode(Connection.self, encoded)
        var second: Connection? = try FoundationJSON.decode(Connection.self, encoded)
        #expect(first?.fileDescriptor == a.fileDescriptor)
        first = nil
        try b.send(1)
        #expect(try second?.receive(Int.self, timeout: .seconds(5)) == 1)
        second = nil
        try b.send(2)
        #expect(try a.receive(Int.self, timeout: .seconds(5)) == 2)
        try a.send(3)
        #expect(try b.receive(Int.self, timeout: .seconds(5)) == 3)
        #expect(first == nil && second == nil)
    }
}
