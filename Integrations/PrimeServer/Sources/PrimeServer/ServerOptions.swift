#if canImport(Glibc)
    import Glibc
#endif

/// Where the CPU-heavy work runs: the comparison the benchmark makes.
enum Offload: String, CaseIterable, Sendable {
    /// A forkserver ``ProcessPool``: other processes, other cores, and a crash stays there.
    case process
    /// A ``ThreadPool`` of this process.
    case thread
    /// In the request handler itself, on the server's own threads.
    case inline
    /// In `Task.detached`, on Swift's cooperative pool.
    case detached
}

/// The command line: `prime-server [--host H] [--port P] [--offload process|thread|inline|detached]
/// [--workers N] [--drain-seconds S] [--log-level L]`.
struct ServerOptions: Sendable {
    var host = "127.0.0.1"
    /// 0: any free port (the server prints the one it got).
    var port = 8080
    var offload = Offload.process
    /// Pool size; nil: `cpuCount`.
    var workers: Int?
    /// How long a SIGTERM waits for the requests and tasks in flight.
    var drainSeconds = 30
    var logLevel = "info"

    init<S: Sequence<String>>(_ arguments: S) {
        var words = Array(arguments)[...]
        while let word = words.popFirst() {
            let value = words.popFirst() ?? ""
            switch word {
            case "--host": host = value
            case "--port": port = Self.number(word, value, in: 0...65535)
            case "--offload":
                guard let chosen = Offload(rawValue: value) else { Self.usage("unknown offload '\(value)'") }
                offload = chosen
            case "--workers": workers = Self.number(word, value, in: 1...4096)
            case "--drain-seconds": drainSeconds = Self.number(word, value, in: 0...86_400)
            case "--log-level": logLevel = value
            default: Self.usage("unknown option '\(word)'")
            }
        }
    }

    /// `value` as a whole number in `range`; anything else ends with the usage (a mistyped number
    /// silently ignored would run the server with a setting nobody asked for).
    private static func number(_ option: String, _ value: String, in range: ClosedRange<Int>) -> Int {
        guard let n = Int(value), range.contains(n) else {
            usage("\(option) takes a whole number from \(range.lowerBound) to \(range.upperBound), not '\(value)'")
        }
        return n
    }

    private static func usage(_ problem: String) -> Never {
        print(
            """
            prime-server: \(problem)
            usage: prime-server [--host H] [--port P] [--offload process|thread|inline|detached]
                                [--workers N] [--drain-seconds S] [--log-level trace|debug|info|warning]
            """)
        exit(2)
    }
}
