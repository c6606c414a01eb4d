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
