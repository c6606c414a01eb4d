import CMultiprocessing
import Synchronization
import SystemPackage
import Testing

@testable import Multiprocessing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("EventLoop: file and TCP IO")
struct EventLoopIOTests {
    @Test("file round trip: write, sync, sequential and positional reads and writes")
    func fileRoundTrip() async throws {
        let path = scratchPath("file-round-trip")
        defer { unlink(path) }
        try await onLoop {
            let payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            let out = try await File.open(path, .writeOnly, options: [.create, .truncate])
            try await out.write(payload)
            try await out.write(Array("tail".utf8))
            try await out.sync()
            try await out.write(Array("XY".utf8), at: 10)
            try await out.close()

            let file = try await File.open(path)
            let all = try await file.read(upTo: 1 << 20)
            var expected = payload + Array("tail".utf8)
            expected[10] = UInt8(ascii: "X")
            expected[11] = UInt8(ascii: "Y")
            #expect(all == expected)
            #expect(try await file.read(upTo: 10) == [])  // the end of the file
            #expect(try await file.read(upTo: 4, at: 300_000) == Array("tail".utf8))
            #expect(try await file.read(upTo: 100, at: 300_002) == Array("il".utf8))
            let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: 3, alignment: 1)
            defer { raw.deallocate() }
            let n = try await file.read(into: raw, at: 9)
            #expect(n == 3 && Array(raw) == [expected[9], UInt8(ascii: "X"), UInt8(ascii: "Y")])
            try await file.close()
        }
    }

    @Test("bad file input gives typed errors: missing path, closed file, closed descriptor, bad counts")
    func fileErrors() async throws {
        let path = scratchPath("file-errors")
        defer { unlink(path) }
        try await onLoop {
            await #expect(throws: IOError.system(.noSuchFileOrDirectory, function: "open")) {
                try await File.open("/nonexistent/multiprocessing/file")
            }
            let file = try await File.open(path, .readWrite, options: [.create])
            await #expect(throws: IOError.invalidArgument("count -1")) { try await file.read(upTo: -1) }
            await #expect(throws: IOError.invalidArgument("offset -5")) { try await file.write([1], at: -5) }
            try await file.close()
            await #expect(throws: IOError.closed) { try await file.read(upTo: 1) }
            await #expect(throws: IOError.closed) { try await file.close() }

            // A number no descriptor has (tests run in parallel: a closed low number is soon reused).
            let stale = File(descriptor: 1 << 20)
            await #expect(throws: IOError.system(.badFileDescriptor, function: "read")) {
                try await stale.read(upTo: 1)
            }
            _ = stale.descriptor.take()  // it is not ours to close again
        }
    }

    @Test("an echo server answers 100 concurrent clients, every byte in order")
    func echoHundredClients() async throws {
        try await onLoop {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0, backlog: 128)
            let server = Task(executorPreference: EventLoop.current!) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<100 {
                        let connection = try await listener.accept()
                        group.addTask {
                            while true {
                                let bytes = try await connection.receive(upTo: 1000)
                                if bytes.isEmpty { break }
                                try await connection.send(bytes)
                            }
                            try await connection.close()
                        }
                    }
                    try await group.waitForAll()
                }
            }
            let replies = try await gather(
                (0..<100).map { n in
                    { @Sendable () async throws -> Bool in
                        let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
                        #expect(client.remotePort == listener.port)
                        let message = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &+ n) }
                        try await client.send(message)
                        let echoed = try await client.receive(exactly: message.count)
                        try await client.close()
                        return echoed == message
                    }
                })
            #expect(replies.count == 100 && replies.allSatisfy { $0 })
            try await server.value
            try await listener.close()
        }
    }

    @Test("small receives use the loop's ring buffers, which come back: 3 000 round trips, every byte in order")
    func ringBuffersComeBack() async throws {
        let loop = try EventLoop(name: "ring-buffers")
        defer { loop.shutdown() }
        let before = loop.receivesIntoRingBuffers
        try await onLoop(loop) {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let server = Task(executorPreference: loop) {
                let connection = try await listener.accept()
                while true {
                    let bytes = try await connection.receive(upTo: 64)
                    if bytes.isEmpty { break }
                    try await connection.send(bytes)
                }
                try await connection.close()
            }
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            for i in 0..<3000 {
                let message = (0..<48).map { UInt8(truncatingIfNeeded: $0 &+ i) }
                try await client.send(message)
                #expect(try await client.receive(exactly: 48) == message)
            }
            // A receive larger than a ring buffer takes a buffer of its own, and is whole.
            let large = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            try await client.send(large)
            #expect(try await client.receive(exactly: large.count) == large)
            try await client.close()
            try await server.value
            try await listener.close()
        }
        // Both sides' small receives (6 000 or so): far more than the ring's 256 buffers.
        #expect(loop.receivesIntoRingBuffers - before >= 6000)
    }

    @Test("a receive(exactly:) that gives up (timeout, cancellation, the peer's end) loses none of the bytes it had")
    func receiveExactlyKeepsWhatItHad() async throws {
        try await onLoop(limit: .seconds(20)) {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let server = try await listener.accept()
            let stream = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }

            // A timeout: 100 bytes of the 200 asked for had arrived when it expired.
            try await server.send(Array(stream[0..<100]))
            await #expect(throws: TimeoutError(timeout: .milliseconds(100))) {
                try await withTimeout(.milliseconds(100)) { try await client.receive(exactly: 200) }
            }
            // They come first: a receive(upTo:) smaller than them, then the rest with what follows.
            #expect(try await client.receive(upTo: 30) == Array(stream[0..<30]))
            try await server.send(Array(stream[100..<1000]))
            #expect(try await client.receive(exactly: 970) == Array(stream[30..<1000]))

            // A cancellation, in the middle of a large receive: by 50 ms it has taken the first 500
            // bytes (on this loop, which the sleep leaves to it) and waits for the rest. (Were it
            // cancelled before its first receive, the bytes would still be in the socket: the
            // outcome below is the same, only this path would go untested.)
            try await server.send(Array(stream[1000..<1500]))
            let cut = Task(executorPreference: EventLoop.current!) { try await client.receive(exactly: 1000) }
            try await sleep(for: .milliseconds(50))
            cut.cancel()
            await #expect(throws: CancellationError.self) { _ = try await cut.value }
            try await server.send(Array(stream[1500..<2000]))
            #expect(try await client.receive(exactly: 1000) == Array(stream[1000..<2000]))

            // The peer's end before the count: nil, and the bytes that did arrive are still there.
            try await server.send(Array(stream[2000..<2050]))
            try await server.close()
            #expect(try await client.receive(exactly: 100) == nil)
            #expect(try await client.receive(exactly: 50) == Array(stream[2000..<2050]))
            #expect(try await client.receive(upTo: 10).isEmpty)  // then the end of the stream
            try await client.close()
            try await listener.close()
        }
    }

    @Test("a second receive while one waits is refused (asyncio's RuntimeError): no byte goes astray")
    func oneReceiverAtATime() async throws {
        try await onLoop(limit: .seconds(20)) {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let server = try await listener.accept()
            let stream = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
            // The first receive waits for 200 bytes, of which 50 have come.
            try await server.send(Array(stream[0..<50]))
            let first = Task(executorPreference: EventLoop.current!) { try await client.receive(exactly: 200) }
            try await sleep(for: .milliseconds(50))
            // Others are refused while it waits, whatever their kind, and take nothing.
            await #expect(throws: IOError.alreadyReceiving) { _ = try await client.receive(upTo: 10) }
            await #expect(throws: IOError.alreadyReceiving) { _ = try await client.receive(exactly: 10) }
            try await server.send(Array(stream[50..<300]))
            #expect(try await first.value == Array(stream[0..<200]))
            // Once it is done, the next receive is served, and from where the first one stopped.
            #expect(try await client.receive(exactly: 100) == Array(stream[200..<300]))
            // A refused receive leaves the reading side to the one that holds it, even when it
            // gives up: a timeout ends the first, and the next one takes what it had.
            try await server.send(Array(stream[0..<20]))
            let cut = Task(executorPreference: EventLoop.current!) {
                try await withTimeout(.milliseconds(200)) { try await client.receive(exactly: 40) }
            }
            try await sleep(for: .milliseconds(50))
            await #expect(throws: IOError.alreadyReceiving) { _ = try await client.receive(upTo: 10) }
            await #expect(throws: TimeoutError.self) { _ = try await cut.value }
            #expect(try await client.receive(exactly: 20) == Array(stream[0..<20]))
            try await client.close()
            try await server.close()
            try await listener.close()
        }
    }

    @Test("sends from several tasks go out whole, one after another, in order; a cancelled waiter sends nothing")
    func sendsTakeTurns() async throws {
        try await onLoop(limit: .seconds(60)) {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let server = try await listener.accept()
            let loop = EventLoop.current!
            // More than the two socket buffers hold: the first send finishes through the ring, and
            // the others call send while it waits there.
            let size = 8 << 20
            let values: [UInt8] = [0xA1, 0xB2, 0xC3]
            let senders = values.map { value in
                Task(executorPreference: loop) { try await client.send([UInt8](repeating: value, count: size)) }
            }
            let late = Task(executorPreference: loop) { try await client.send([UInt8](repeating: 0xD4, count: size)) }
            try await sleep(for: .milliseconds(20))  // all four have called send; nobody reads yet
            late.cancel()
            await #expect(throws: CancellationError.self) { try await late.value }
            let received = try #require(try await server.receive(exactly: values.count * size))
            for sender in senders { try await sender.value }
            // Whole and in order: each value's bytes in one run, the runs in the order of the calls.
            var runs: [UInt8] = []
            var lengths: [Int] = []
            for byte in received {
                if byte == runs.last { lengths[lengths.count - 1] += 1 } else { runs.append(byte); lengths.append(1) }
            }
            #expect(runs == values)
            #expect(lengths == Array(repeating: size, count: values.count))
            // Nothing more: the cancelled send sent nothing.
            try await client.close()
            #expect(try await server.receive(upTo: 10).isEmpty)
            try await server.close()
            try await listener.close()
        }
    }

    @Test("senders on the loop and on other threads at once: every message arrives whole, in each sender's order")
    func sendTurnsUnderContention() async throws {
        try await onLoop(limit: .seconds(120)) {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let server = try await listener.accept()
            let loop = EventLoop.current!
            let (senders, messages, size) = (8, 40, 48 * 1024)
            @Sendable func message(_ sender: Int, _ seq: Int) -> [UInt8] {
                [UInt8(sender), UInt8(seq)]
                    + [UInt8](repeating: UInt8(truncatingIfNeeded: sender &* 37 &+ seq), count: size - 2)
            }
            // Half on this loop, half off any loop (their sends use the shared loop, from the
            // cooperative pool's threads).
            let tasks = (0..<senders).map { sender in
                let body: @Sendable () async throws -> Void = {
                    for seq in 0..<messages { try await client.send(message(sender, seq)) }
                }
                return sender % 2 == 0
                    ? Task(executorPreference: loop, operation: body) : Task.detached(operation: body)
            }
            var next = [Int](repeating: 0, count: senders)
            for _ in 0..<(senders * messages) {
                let got = try #require(try await server.receive(exactly: size))
                let (sender, seq) = (Int(got[0]), Int(got[1]))
                try #require(sender < senders)
                #expect(seq == next[sender])
                #expect(got == message(sender, seq))
                next[sender] = seq + 1
            }
            for task in tasks { try await task.value }
            #expect(next == Array(repeating: messages, count: senders))
            try await client.close()
            try await server.close()
            try await listener.close()
        }
    }

    @Test("a receive that finished as its timeout ran out is returned, not lost with its bytes")
    func timeoutKeepsAFinishedReceive() async throws {
        try await onLoop(limit: .seconds(20)) {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let server = try await listener.accept()
            let loop = EventLoop.current!
            // The loop's thread is held from 20 ms to 320 ms; the deadline (100 ms) passes and the
            // bytes arrive (150 ms, sent by a thread of its own: the cooperative pool's may all be
            // busy) meanwhile, so the loop then finds the timer's completion and the receive's in
            // one batch, the timer's usually first.
            let holder = Task(executorPreference: loop) {
                try await sleep(for: .milliseconds(20))
                usleep(300_000)
            }
            let open = server.descriptor.value  // read first: the macro cannot look into a noncopyable value
            let serverFD = try #require(open)
            let sender = Multiprocessing.Thread(name: "late-sender") {
                usleep(150_000)
                let bytes = [UInt8](repeating: 7, count: 100)
                #expect(bytes.withUnsafeBytes { send(serverFD, $0.baseAddress, $0.count, 0) } == 100)
            }
            try sender.start()
            var received: [UInt8]? = nil
            do {
                received = try await withTimeout(.milliseconds(100)) { try await client.receive(exactly: 100) }
            } catch is TimeoutError {
                // Allowed only if the receive had not finished: then its bytes are still there.
                received = try await withTimeout(.seconds(30)) { try await client.receive(exactly: 100) }
            }
            #expect(received == Array(repeating: 7, count: 100))
            try await holder.value
            #expect(try sender.join(timeout: .seconds(30)))
            try await client.close()
            try await server.close()
            try await listener.close()
        }
    }

    @Test("a send its socket takes at once makes no ring operation; the rest of a larger one goes through the ring")
    func sendsTryTheSocketFirst() async throws {
        let loop = try EventLoop(name: "send-first")
        defer { loop.shutdown() }
        try await onLoop(loop) {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            // More than any loopback socket takes at once (its send and the peer's receive
            // buffers), so the sender suspends and the server, on the same loop, reads meanwhile.
            let large = (0..<(16 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 16) }
            let server = Task(executorPreference: loop) { () throws -> Bool in
                let connection = try await listener.accept()
                for i in 0..<200 {
                    guard let message = try await connection.receive(exactly: 32) else { return false }
                    try await connection.send(message.map { $0 ^ UInt8(truncatingIfNeeded: i) })
                }
                let whole = try await connection.receive(exactly: large.count)
                try await connection.close()
                return whole == large
            }
            let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let before = loop.sendsThroughRing
            for i in 0..<200 {
                let message = (0..<32).map { UInt8(truncatingIfNeeded: $0 &+ i) }
                try await client.send(message)
                #expect(try await client.receive(exactly: 32) == message.map { $0 ^ UInt8(truncatingIfNeeded: i) })
            }
            // 400 small sends (both sides): every one taken by its socket at once.
            #expect(loop.sendsThroughRing == before)
            try await client.send(large)
            #expect(loop.sendsThroughRing > before)
            #expect(try await server.value)
            #expect(try await client.receive(upTo: 1).isEmpty)  // the server's close, nothing more
            try await client.close()
            try await listener.close()
        }
    }

    @Test("the loop hands out receive buffers as they are needed: a few for one connection, more after a burst")
    func ringBuffersHandedOutAsNeeded() async throws {
        let loop = try EventLoop(name: "ring-buffers-as-needed")
        defer { loop.shutdown() }
        let clients = 300
        let (few, afterBurst, good) = try await onLoop(loop) { () async throws -> (UInt32, UInt32, Int) in
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0, backlog: 1024)
            async let first = listener.accept()
            let one = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
            let peer = try await first
            // 1 000 round trips, one at a time: the first buffers handed out come back every time.
            for i in 0..<1000 {
                try await peer.send([UInt8(truncatingIfNeeded: i)])
                guard try await one.receive(upTo: 64) == [UInt8(truncatingIfNeeded: i)] else { return (0, 0, -1) }
            }
            let few = mp_testing_loop_recv_buffers_out(loop.ring)
            // A burst: every client's byte arrives while this job holds the loop's thread.
            let (connections, accepted) = try await connectedPairs(listener, clients, on: loop)
            let readers = connections.enumerated().map { (i, c) in
                Task(executorPreference: loop) { try await c.receive(exactly: 1) == [UInt8(truncatingIfNeeded: i)] }
            }
            while loop.operationsInFlight < clients { await Task.yield() }
            for (i, c) in accepted.enumerated() {
                let fd = try c.descriptor.get()
                var byte = UInt8(truncatingIfNeeded: i)
                guard Glibc.send(fd, &byte, 1, 0) == 1 else { return (few, 0, -1) }
            }
            usleep(50_000)  // every byte reaches its socket before the loop runs again
            var good = 0
            for reader in readers where try await reader.value { good += 1 }
            let afterBurst = mp_testing_loop_recv_buffers_out(loop.ring)
            for c in connections + accepted + [one, peer] { try await c.close() }
            try await listener.close()
            return (few, afterBurst, good)
        }
        #expect(good == clients)
        #expect(few == 16, "one connection's receives need only the first buffers handed out")
        #expect(afterBurst > few && afterBurst <= MP_RECV_BUFFERS, "a burst that ran them out hands out more")
    }

    @Test("more receives complete at once than the ring has buffers: the rest fall back, no byte lost")
    func ringBuffersRunOut() async throws {
        let loop = try EventLoop(name: "ring-buffers-run-out")
        defer { loop.shutdown() }
        let clients = 600
        let pattern: @Sendable (Int) -> [UInt8] = { i in (0..<40).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) } }
        let (tookBuffers, good) = try await onLoop(loop) { () async throws -> (Int, Int) in
            // Two buffers, not 256: the kernel posts a burst's completions a few dozen at a time, and
            // the loop gives buffers back between those batches, so 256 never run out here.
            #expect(mp_testing_loop_recv_buffers(loop.ring, 2) == 0)
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0, backlog: 1024)
            let (connections, accepted) = try await connectedPairs(listener, clients, on: loop)
            let readers = connections.enumerated().map { (i, c) in
                Task(executorPreference: loop) { try await c.receive(exactly: 40) == pattern(i) }
            }
            // Every reader's receive is in the kernel before a byte is sent.
            while loop.operationsInFlight < clients { await Task.yield() }
            let before = loop.receivesIntoRingBuffers
            // A thread sends to every client while this job holds the loop's thread, so every
            // receive completes before the loop can give a buffer back.
            let fds = try accepted.map { try $0.descriptor.get() }
            let sent = Atomic<Bool>(false)
            let sender = Multiprocessing.Thread {
                for (i, fd) in fds.enumerated() {
                    let bytes = pattern(i)
                    guard Glibc.send(fd, bytes, bytes.count, 0) == bytes.count else { fatalError("send") }
                }
                sent.store(true, ordering: .releasing)
            }
            try sender.start()
            while !sent.load(ordering: .acquiring) { sched_yield() }
            usleep(50_000)  // the last bytes reach their sockets
            _ = try sender.join(timeout: .seconds(30))
            var good = 0
            for reader in readers where try await reader.value { good += 1 }
            let took = loop.receivesIntoRingBuffers - before
            for c in connections + accepted { try await c.close() }
            try await listener.close()
            return (took, good)
        }
        #expect(good == clients)
        #expect(tookBuffers < clients, "no receive found the ring empty: the fallback went untested")
    }

    @Test("connect refused, a closed socket, and a receive that times out give typed errors")
    func socketErrors() async throws {
        try await onLoop {
            let listener = try await TCPListener.listen()
            let port = listener.port
            try await listener.close()
            await #expect(throws: IOError.system(.connectionRefused, function: "connect")) {
                try await TCPConnection.connect(host: "127.0.0.1", port: port)
            }
            await #expect(throws: IOError.closed) { try await listener.accept() }

            let server = try await TCPListener.listen(host: "::1", port: 0)  // IPv6 too
            async let accepted = server.accept()
            let client = try await TCPConnection.connect(host: "::1", port: server.port)
            let peer = try await accepted
            await #expect(throws: TimeoutError(timeout: .milliseconds(20))) {
                try await withTimeout(.milliseconds(20)) { try await peer.receive(upTo: 10) }
            }
            await #expect(throws: IOError.invalidArgument("maxBytes 0")) { try await peer.receive(upTo: 0) }
            try await client.close()
            #expect(try await peer.receive(upTo: 10) == [])  // the peer closed: end of stream
            try await peer.close()
            await #expect(throws: IOError.closed) { try await peer.send([1]) }
            try await server.close()
        }
    }

    @Test("a host as a standard literal, as a literal only getaddrinfo reads, and as a name reaches the listener")
    func connectByLiteralsAndNames() async throws {
        try await onLoop {
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            // "127.1" and "0x7f.0.0.1" are IPv4 forms that inet_pton refuses: getaddrinfo reads them.
            for (i, host) in ["127.0.0.1", "127.1", "0x7f.0.0.1", "localhost"].enumerated() {
                async let accepted = listener.accept()
                let client = try await TCPConnection.connect(host: host, port: listener.port)
                let peer = try await accepted
                #expect(client.remotePort == listener.port, "\(host)")
                try await client.send([UInt8(i)])
                #expect(try await peer.receive(exactly: 1) == [UInt8(i)], "\(host)")
                try await client.close()
                try await peer.close()
            }
            try await listener.close()
        }
    }

    @Test(
        "an IPv6 literal, in its short and long forms, reaches a listener on ::1 (the whole 28-byte address goes to the ring)",
        .enabled(if: ipv6LoopbackWorks())
    )
    func connectByIPv6Literal() async throws {
        try await onLoop {
            let listener = try await TCPListener.listen(host: "::1", port: 0)
            for (i, host) in ["::1", "0:0:0:0:0:0:0:1"].enumerated() {
                async let accepted = listener.accept()
                let client = try await TCPConnection.connect(host: host, port: listener.port)
                let peer = try await accepted
                #expect(client.remotePort == listener.port, "\(host)")
                try await client.send([UInt8(i)])
                #expect(try await peer.receive(exactly: 1) == [UInt8(i)], "\(host)")
                try await client.close()
                try await peer.close()
            }
            try await listener.close()
        }
    }

    @Test("both ends have TCP_NODELAY: a connect sets it, an accepted socket inherits it from the listener")
    func noDelayOnBothEnds() async throws {
        try await onLoop {
            let loop = try EventLoop.forCurrentContext()
            let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
            let (clients, peers) = try await connectedPairs(listener, 3, on: loop)
            for (client, peer) in zip(clients, peers) {
                #expect(noDelay(client) == 1)
                #expect(noDelay(peer) == 1)
                try await client.close()
                try await peer.close()
            }
            try await listener.close()
        }
    }

    @Test("connects submitted together go to io-wq workers where there is another CPU; one alone stays inline")
    func connectsSpreadOverWorkers() async throws {
        // The server on a loop of its own: the client loop's submissions hold only its own entries.
        let serverLoop = try EventLoop(name: "connect-server")
        defer { serverLoop.shutdown() }
        try await onLoop {
            let loopThread = mp_thread_id()
            let listener = try await Task(executorPreference: serverLoop) {
                try await TCPListener.listen(host: "127.0.0.1", port: 0, backlog: 256)
            }.value
            let server = Task(executorPreference: serverLoop) {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<105 {
                        let connection = try await listener.accept()
                        group.addTask {
                            if let byte = try await connection.receive(exactly: 1) { try await connection.send(byte) }
                            try await connection.close()
                        }
                    }
                    try await group.waitForAll()
                }
            }
            @Sendable func roundTrip(_ n: Int) async throws -> UInt8 {
                let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
                try await client.send([UInt8(n)])
                let echoed = try await client.receive(exactly: 1)
                try await client.close()
                return echoed?.first ?? 0xFF
            }
            // One after another: each connect is the first of its submission, and no worker starts.
            for n in 0..<5 { #expect(try await roundTrip(n) == UInt8(n)) }
            #expect(ioWorkers(of: loopThread) == 0, "a connect alone went to io-wq")
            // 100 at once: all but the first connect of a submission go to workers (with another CPU).
            let echoed = try await gather((0..<100).map { n in { @Sendable in try await roundTrip(n) } })
            #expect(echoed == (0..<100).map { UInt8($0) })
            let workers = ioWorkers(of: loopThread)
            if mp_cpu_affinity_count() > 1 {
                #expect(workers > 0, "no connect went to io-wq")
            } else {
                #expect(workers == 0)
            }
            try await server.value
            try await listener.close()
        }
    }

    @Test("connects submitted together: refused ones throw connectionRefused, unanswered ones time out")
    func batchedConnectErrors() async throws {
        try await onLoop {
            let closed = try await TCPListener.listen()
            let port = closed.port
            try await closed.close()
            let refused = try await gather(
                (0..<20).map { _ in
                    { @Sendable () async -> Bool in
                        do {
                            _ = try await TCPConnection.connect(host: "127.0.0.1", port: port)
                            return false
                        } catch { return error as? IOError == .system(.connectionRefused, function: "connect") }
                    }
                })
            #expect(refused == Array(repeating: true, count: 20))
            // A listener that never accepts, with a backlog of 1: once its queue is full, the kernel
            // drops further SYNs, and those connects stay in progress (a poll armed in the ring).
            let silent = try await TCPListener.listen(host: "127.0.0.1", port: 0, backlog: 1)
            let timedOut = try await gather(
                (0..<10).map { _ in
                    { @Sendable () async -> Int in
                        do {
                            let c = try await withTimeout(.milliseconds(300)) {
                                try await TCPConnection.connect(host: "127.0.0.1", port: silent.port)
                            }
                            try? await c.close()
                            return 0
                        } catch { return error is TimeoutError ? 1 : 2 }
                    }
                })
            #expect(timedOut.allSatisfy { $0 < 2 })
            #expect(timedOut.reduce(0, +) >= 5, "the listener's queue should hold at most a few: \(timedOut)")
            // The loop still works after the cancelled connects.
            try await sleep(for: .milliseconds(1))
            try await silent.close()
        }
    }

    @Test("cancelling a task stuck in accept ends it with CancellationError")
    func cancelAccept() async throws {
        let loop = try EventLoop()
        try await onLoop(loop) {
            let listener = try await TCPListener.listen()
            let acceptor = Task(executorPreference: loop) { try await listener.accept() }
            try await sleep(for: .milliseconds(10))
            acceptor.cancel()
            await #expect(throws: CancellationError.self) { try await acceptor.value }
            try await listener.close()
        }
    }
}

/// The io-wq workers that thread `tid` started (the kernel names them "iou-wrk-<tid>").
private func ioWorkers(of tid: Int32) -> Int {
    guard let dir = opendir("/proc/self/task") else { return -1 }
    defer { closedir(dir) }
    let expected = Array("iou-wrk-\(tid)\n".utf8)
    var count = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard Int32(name) != nil else { continue }
        let fd = open("/proc/self/task/\(name)/comm", O_RDONLY)
        guard fd >= 0 else { continue }  // the thread has just ended
        var comm = [UInt8](repeating: 0, count: 64)
        let n = read(fd, &comm, comm.count)
        close(fd)
        if n > 0, Array(comm.prefix(n)) == expected { count += 1 }
    }
    return count
}

/// `count` connections to `listener`, accepted by a task on `loop`: the clients' ends and the
/// server's, in the same order.
private func connectedPairs(_ listener: TCPListener, _ count: Int, on loop: EventLoop) async throws -> (
    [TCPConnection], [TCPConnection]
) {
    let acceptor = Task(executorPreference: loop) {
        var accepted: [TCPConnection] = []
        for _ in 0..<count { accepted.append(try await listener.accept()) }
        return accepted
    }
    var connections: [TCPConnection] = []
    for _ in 0..<count { connections.append(try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)) }
    return (connections, try await acceptor.value)
}

/// The TCP_NODELAY option of `connection`'s socket (1 when set), or -1 if it cannot be read.
private func noDelay(_ connection: TCPConnection) -> Int32 {
    var value: Int32 = -1
    var length = socklen_t(MemoryLayout<Int32>.size)
    guard let fd = connection.descriptor.value, getsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &value, &length) == 0
    else { return -1 }
    return value
}

/// Whether this host has an IPv6 loopback to bind (a container may have none).
private func ipv6LoopbackWorks() -> Bool {
    let fd = socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    if fd < 0 { return false }
    defer { close(fd) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
        }
    }
}
