import Foundation
import Multiprocessing

/// The pool workers the worker host registers: what the tests and the benchmark run.
public enum DemoWorkers {
    /// n², the benchmark's task (the Python peer runs the same).
    public static let square = PoolWorker<Int, Int>("square") { $0 * $0 }

    /// n² after sleeping `milliseconds`: a task long enough to be caught mid-run.
    public static let slowSquare = PoolWorker<SlowInput, Int>("slow-square") { input in
        try sleep(for: .milliseconds(input.milliseconds))
        return input.value * input.value
    }

    /// Dies by SIGKILL on its first run (it leaves a marker file at `path`), succeeds on the next:
    /// a local worker death that must become a retry.
    public static let crashOnce = PoolWorker<String, String>("crash-once") { path in
        if !FileManager.default.fileExists(atPath: path) {
            FileManager.default.createFile(atPath: path, contents: Data())
            kill(getpid(), SIGKILL)
        }
        return "survived"
    }

    /// Always throws: a task that uses up its attempts.
    public static let alwaysFails = PoolWorker<Int, Int>("always-fails") { n in
        throw DemoError.refused(n)
    }

    /// Always throws an error whose description is its input, verbatim (any bytes a message may
    /// hold, a NUL among them).
    public static let failsSaying = PoolWorker<String, Int>("fails-saying") { text in
        throw DemoMessage(description: text)
    }

    /// Returns NaN, which the JSON payload format cannot encode: an output that never can be stored.
    public static let notANumber = PoolWorker<Int, Double>("not-a-number") { _ in .nan }

    /// Every worker, for `Spawn.bootstrap`.
    public static let all: [any SpawnEntry] = [square, slowSquare, crashOnce, alwaysFails, failsSaying, notANumber]
}

/// The input of ``DemoWorkers/slowSquare``.
public struct SlowInput: Codable, Sendable, Equatable {
    public var value: Int
    public var milliseconds: Int

    public init(value: Int, milliseconds: Int) {
        self.value = value
        self.milliseconds = milliseconds
    }
}

/// The error ``DemoWorkers/alwaysFails`` throws.
public enum DemoError: Error, Codable, Equatable {
    case refused(Int)
}

/// The error ``DemoWorkers/failsSaying`` throws: its description is the text it was given.
public struct DemoMessage: Error, Codable, Equatable, CustomStringConvertible {
    public var description: String

    public init(description: String) { self.description = description }
}
