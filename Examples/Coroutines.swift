// The seed's coroutines on the io_uring event loop: `swift run multiprocessing-examples coroutine`.
import Multiprocessing

// MARK: - The seed's coroutine: one second of io_uring sleep

func coroutine() throws {
    try EventLoop.run {
        print("Coroutine is running")
        try await sleep(for: .seconds(1))
        print("Coroutine is done")
    }
}

// MARK: - A gather of sleeps takes as long as the longest one

func gatherSleeps() throws {
    try EventLoop.run {
        let start = ContinuousClock.now
        func nap(_ ms: Int) -> @Sendable () async throws -> Int {
            {
                try await sleep(for: .milliseconds(ms))
                print("slept \(ms) ms")
                return ms
            }
        }
        let (a, b, c) = try await gather(nap(300), nap(100), nap(200))
        let took = ContinuousClock.now - start
        print("gather returned", a, b, c, "in \(Int(took.seconds * 1000)) ms (the longest sleep is 300 ms)")
    }
}

// MARK: - An echo server with clients on loopback

func echoServer() throws {
    try EventLoop.run {
        let listener = try await TCPListener.listen(host: "127.0.0.1", port: 0)
        print("echo server on 127.0.0.1:\(listener.port)")
        // A child task: it runs on this loop too (an unstructured `Task {}` would not).
        async let served: [Void] = gather(
            (0..<3).map { _ in
                { @Sendable in
                    let connection = try await listener.accept()
                    while true {
                        let bytes = try await connection.receive(upTo: 4096)
                        if bytes.isEmpty { break }
                        try await connection.send(bytes)
                    }
                    try await connection.close()
                }
            })
        let replies = try await gather(
            (1...3).map { n in
                { @Sendable in
                    let client = try await TCPConnection.connect(host: "127.0.0.1", port: listener.port)
                    let message = "hello from client \(n)"
                    try await client.send(Array(message.utf8))
                    let reply = try await client.receive(exactly: message.utf8.count) ?? []
                    try await client.close()
                    return String(decoding: reply, as: UTF8.self)
                }
            })
        for reply in replies { print("echoed:", reply) }
        _ = try await served
        try await listener.close()
    }
}
