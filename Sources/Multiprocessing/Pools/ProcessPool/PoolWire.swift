/// The messages of a process pool, as bytes in its two shared-memory rings.
///
/// Task ring (parent to workers): a ``TaskHeader`` and the inputs. Result ring (workers, the
/// watcher thread and the pool itself to the result thread): a ``ResultHeader`` and the outputs or
/// a ``RemoteFailure``. Both sides run the same program, so headers travel in native layout.
struct TaskHeader {
    var id: UInt64
    var count: UInt32
    /// A ``TaskForm`` (plain integers only: the header is loaded from raw bytes).
    var form: UInt32

    static let size = MemoryLayout<TaskHeader>.size
}

enum TaskForm: UInt32 {
    /// One input, encoded alone (applyAsync, apply, run).
    case single = 1
    /// `count` inputs (a chunk of map or imap).
    case chunk = 2
}

struct ResultHeader {
    var id: UInt64
    /// A ``ResultKind``.
    var kind: UInt32
    /// Outputs in the message, or the exit code of an exited worker.
    var count: Int32
    /// The worker's index in the pool.
    var worker: UInt32
    var pid: Int32

    static let size = MemoryLayout<ResultHeader>.size
}

enum ResultKind: UInt32 {
    /// One output (the answer to a `.single` task).
    case value = 1
    /// `count` outputs (a chunk).
    case values = 2
    /// The work function threw, or the data could not be coded: a ``RemoteFailure`` follows.
    case failure = 3
    /// From the watcher thread: the worker exited (`count` holds its Python-style exit code). A
    /// worker could forge one: the pool believes only its own reap of the process.
    case workerExited = 4
    /// The worker's initializer threw: a ``RemoteFailure`` follows.
    case initializerFailed = 5
    /// From the pool: the result thread should stop.
    case stop = 6
}
