/// How a worker process ended.
public enum WorkerExit: Equatable, Sendable, CustomStringConvertible {
    /// Killed by this signal (9 for SIGKILL, 11 for SIGSEGV, ...).
    case signal(Int32)
    /// Exited on its own with this status.
    case exited(Int32)

    /// From a Python-style exit code: -N for signal N.
    init(exitCode: Int32) {
        self = exitCode < 0 ? .signal(-exitCode) : .exited(exitCode)
    }

    /// How the worker ended, in words ("was killed by signal 9 (SIGKILL)", "exited with status 1").
    public var description: String {
        switch self {
        case .signal(let n): "was killed by signal \(n)\(WorkerExit.signalNames[n].map { " (\($0))" } ?? "")"
        case .exited(let code): "exited with status \(code)"
        }
    }

    private static let signalNames: [Int32: String] = [
        1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
        9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM",
    ]
}
