// The names the docs' Swift blocks use for the reader's own code (Scripts/check-snippets compiles each
// block against these). Every block sees Multiprocessing through this module.
@_exported import Multiprocessing

/// Some coroutine of the reader's.
public func fetch(_ id: Int) async throws -> Int { id }

/// A coroutine that may take too long.
public func slow() async throws -> Int { 0 }

/// A blocking call to keep off the event loop.
public func blockingCall() -> Int { 0 }

/// What a lock's new holder does after its previous holder died.
public func repairSharedState(after owner: Int32) {}

/// A lock made earlier, shared with other processes.
public let lock = Lock()

/// A queue made earlier, fed by another process.
public let queue = try! Queue<Int>()

/// A pool made earlier (the `///` examples of the pool types), never run: the blocks only compile.
public var pool: ProcessPool<String, String> { fatalError("a placeholder") }

/// Some inputs of the reader's.
public let tasks = ["听音乐", "吃饭"]

/// A page to fetch, and pages.
public func download(_ url: String) throws -> [UInt8] { [] }
public func download() {}
public let urls = ["a.html", "b.html"]

/// Some words.
public let words = ["a", "bb"]

/// Some work of the reader's.
public func compute() -> Int { 0 }

/// A file's path.
public let path = "/tmp/example"

/// A counter in shared memory, made earlier, never used: the blocks only compile.
public var counter: UnsafeMutablePointer<Int> { fatalError("a placeholder") }

/// A connection opened earlier, never used: the blocks only compile.
public var connection: TCPConnection { fatalError("a placeholder") }
