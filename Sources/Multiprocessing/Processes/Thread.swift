import CMultiprocessing

#if canImport(Glibc)
    import Glibc
#endif

/// A thread of this process running a closure (Python's `threading.Thread`).
///
/// ```swift
/// let t = Thread(name: "download") { download() }
/// try t.start()
/// try t.join()
/// ```
///
/// An error thrown by the closure is printed to stderr, as Python prints an uncaught exception.
/// The thread's timer slack is 1 ns (`PR_SET_TIMERSLACK`), so its timed waits end on time rather
/// than up to 50 µs late; threads it starts inherit that.
/// `Thread` shares its name with Foundation's; a file that imports both writes
/// `Multiprocessing.Thread`.
public final class Thread: @unchecked Sendable {
    struct State {
        var name: String
        var started = false
        var joined = false
        var handle: pthread_t?
        var nativeID: Int32?
        /// The closure until the thread takes it: dropped once it has run (as Python's `run`
        /// does), so that an object holding this thread and captured by the closure is freed.
        var body: (@Sendable () throws -> Void)?
    }

    private let state: Locked<State>
    private let finished: UnsafeMutablePointer<mp_event_t>
    /// Set by the thread once its ident and native id are stored, before the closure runs.
    private let running: UnsafeMutablePointer<mp_event_t>

    /// A thread that will run `target` once started.
    public init(name: String? = nil, target: @escaping @Sendable () throws -> Void) {
        state = Locked(State(name: name ?? Thread.nextName(), body: target))
        finished = .allocate(capacity: 1)
        mp_event_init(finished, 0)
        running = .allocate(capacity: 1)
        mp_event_init(running, 0)
    }

    /// The thread's name; given to the OS thread (its first 15 bytes) when it starts.
    public var name: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }

    /// The kernel's id for the thread once it runs (Python's `native_id`).
    public var nativeID: Int32? { state.withLock { $0.nativeID } }

    /// An identifier of the running thread, unique among live threads (Python's `ident`).
    public var ident: UInt? { state.withLock { $0.handle.map { UInt($0) } } }

    /// Whether the thread has started and its closure has not returned.
    public var isAlive: Bool { state.withLock { $0.started } && mp_event_is_set(finished) == 0 }

    /// Starts the thread, and returns once it runs (as Python's `start()`): ``ident`` and
    /// ``nativeID`` are set then. Throws ``ProcessError/alreadyStarted`` on a second call.
    public func start() throws(ProcessError) {
        try state.withLock { (s: inout State) throws(ProcessError) in
            if s.started { throw .alreadyStarted }
            s.started = true
        }
        let context = Unmanaged.passRetained(self).toOpaque()
        var handle = pthread_t()
        let rc = pthread_create(
            &handle, nil,
            { raw in
                let thread = Unmanaged<Thread>.fromOpaque(raw!).takeRetainedValue()
                thread.main()
                return nil
            }, context)
        if rc != 0 {
            Unmanaged<Thread>.fromOpaque(context).release()
            state.withLock { $0.started = false }
            throw .system(.init(rawValue: rc), function: "pthread_create")
        }
        // The thread stores its own handle and id (here they would come too late for a closure
        // that reads them, or joins itself, at once; the kernel's id is only known there).
        _ = mp_event_wait(running, Int64(MP_FOREVER))
    }

    private func main() {
        let id = mp_thread_id()
        var body: (@Sendable () throws -> Void)?
        let osName = state.withLock { s -> String in
            s.nativeID = id
            s.handle = pthread_self()
            swap(&body, &s.body)  // taken out, to be freed once it has run
            return s.name
        }
        mp_event_set(running)
        setName(osName)
        // Timed waits here (futex deadlines, the blocking sleep(for:), a pool's timeouts) wake on
        // time instead of up to 50 µs late; the slack only batches wake-ups to save power.
        mp_set_precise_timers()
        do {
            try body?()
        } catch {
            writeError("Exception in thread \(osName): \(error)\n")
        }
        body = nil  // freed before any join returns
        mp_event_set(finished)
    }

    private func setName(_ name: String) {
        var prefix = ""
        for character in name {
            if prefix.utf8.count + String(character).utf8.count > 15 { break }
            prefix.append(character)  // the kernel keeps 15 bytes: do not cut a character in half
        }
        mp_set_thread_name(prefix)
    }

    /// Waits for the thread to finish, up to `timeout` (forever when nil); returns whether it did.
    @discardableResult
    public func join(timeout: Duration? = nil) throws(ProcessError) -> Bool {
        let (started, handle) = state.withLock { ($0.started, $0.handle) }
        guard started, let handle else { throw .notStarted }
        if pthread_equal(handle, pthread_self()) != 0 { throw .joinSelf }
        let deadline = try Deadline.after(timeout, ProcessError.self)
        guard mp_event_wait(finished, deadline) == MP_OK else { return false }
        let mustJoin = state.withLock { s -> Bool in
            defer { s.joined = true }
            return !s.joined
        }
        if mustJoin { pthread_join(handle, nil) }
        return true
    }

    /// The calling thread's OS name: what ``Thread/init(name:target:)`` gave it (first 15 bytes).
    public static var currentName: String {
        var buffer = [CChar](repeating: 0, count: 32)
        mp_get_thread_name(&buffer)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static let counter = Locked(0)
    private static func nextName() -> String {
        "Thread-"
            + String(
                counter.withLock {
                    $0 += 1; return $0
                })
    }

    deinit {
        // The running thread holds a reference, so here it has finished or never started.
        state.withLock { s in
            if s.started, !s.joined, let handle = s.handle { pthread_detach(handle) }
        }
        finished.deallocate()
        running.deallocate()
    }
}
