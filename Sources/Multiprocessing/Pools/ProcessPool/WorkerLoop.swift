import CMultiprocessing
import Synchronization

/// What a worker process runs, forked or spawned: take a task, run the work function on its inputs,
/// put the outcome, until the task ring is shut down or `maxTasks` tasks are done.
///
/// Plain blocking code: a forked child cannot use Swift concurrency. Every task is claimed (its id
/// written to this worker's slot) while the worker holds the task ring's consumer lock and before
/// the message is consumed, so the parent can always tell which task a dead worker had (pool_claims.c).
struct WorkerLoop<Input: Codable & Sendable, Output: Codable & Sendable> {
    let tasks: UnsafeMutablePointer<mp_queue_view_t>
    let results: UnsafeMutablePointer<mp_queue_view_t>
    let slots: UnsafeMutablePointer<UInt64>
    let ready: UnsafeMutablePointer<UInt64>
    let slotCount: Int
    let index: Int
    let maxTasks: Int?
    let initializer: (() throws -> Void)?
    let work: (Input) throws -> Output

    private let inputCodec = ValueCodec<Input>()
    private let outputCodec = ValueCodec<Output>()

    init(
        channels: PoolChannels, index: Int, maxTasks: Int?, initializer: (() throws -> Void)?,
        work: @escaping (Input) throws -> Output
    ) {
        tasks = channels.tasks.queue
        results = channels.results.queue
        slots = channels.slots
        ready = channels.ready
        slotCount = channels.slotCount
        self.index = index
        self.maxTasks = maxTasks
        self.initializer = initializer
        self.work = work
    }

    /// Does the Swift runtime's one-time work that the loop's generic code needs (metadata of the
    /// generic types met at its call sites): in the parent before it forks the pool's zygote, and
    /// again in the worker before it takes a task. Workers are forked from a single-threaded zygote
    /// or forkserver, so they inherit no lock held by a library thread; what is left is the zygote's
    /// own fork, on the caller's thread, while other threads of the program may hold a runtime lock
    /// (see ``Zygote``). Metadata made before that fork needs no lock to be found; a worker that
    /// still gets stuck gets stuck here, before its first claim, where the pool's watchdog replaces
    /// it without losing a task (see ``WorkerWatcher``).
    static func warmUp() {
        var inputs = [Input](unsafeUninitializedCapacity: 1) { _, count in count = 0 }
        inputs.reserveCapacity(8)
        var outputs = [Output](unsafeUninitializedCapacity: 1) { _, count in count = 0 }
        outputs.reserveCapacity(8)
        let one: Input? = inputs.first
        let answer: Output? = outputs.first
        _ = (one, answer, inputs[...], outputs[...])
        // Their layouts, found by reflection (runtime locks): here, not first in a forked worker.
        _ = (ValueCodec<Input>(), ValueCodec<Output>())
        let failure = RemoteFailure(type: "", message: "")
        try? BinaryCoding.withEncoding(of: failure) { bytes in
            _ = try? BinaryCoding.decode(RemoteFailure.self, from: bytes)
        }
    }

    /// Runs until the pool stops this worker; returns to exit with status 0. `stall` (tests) hangs
    /// before the worker is ready, as one that inherited a held lock would.
    func run(stall: Bool = false) {
        setThreadName(Process.current.name)  // `ps` and `top` show the worker's name, not its forker's
        Self.warmUp()
        while stall { _ = try? sleep(for: .seconds(1)) }
        let pid = UInt64(mp_process_id())
        mp_pool_claim(ready + index, pid)  // started: the watchdog lets it be
        if let initializer {
            do { try initializer() } catch {
                reply(id: 0, kind: .initializerFailed, count: 0, failure: RemoteFailure(error))
                return
            }
        }
        // Past the initializer: a death from now on is not the initializer's (see PoolCore.workerExited).
        mp_pool_claim(ready + index, pid | PoolChannels.initialized)
        let taker = TaskTaker(tasks: tasks, slots: slots, slotCount: slotCount, index: index)
        var done = 0
        while maxTasks.map({ done < $0 }) ?? true {
            var id: UInt64 = 0
            var one: Input? = nil
            var many: [Input] = []
            var failure: PoolError? = nil
            let took = taker.take { header, payload in
                id = header.id
                guard let payload else { return failure = .coding("the task's message was cut short") }
                do {
                    if header.form == TaskForm.single.rawValue {
                        one = try inputCodec.decode(payload)
                    } else {
                        many = try inputCodec.decode(payload, count: Int(header.count))
                    }
                } catch {
                    failure = PoolError(error)
                }
            }
            guard took else { return }
            let delivered: Bool
            if let failure {
                delivered = reply(id: id, kind: .failure, count: 0, failure: .coding(failure))
            } else if let input = one {
                delivered = answer(id: id) { () throws -> Output in try work(input) }
            } else {
                delivered = answerMany(id: id, many)
            }
            if !delivered { return }  // the pool is gone or terminated
            done += 1
        }
    }

    private func answer(id: UInt64, _ body: () throws -> Output) -> Bool {
        let output: Output
        do { output = try body() } catch {
            return reply(id: id, kind: .failure, count: 0, failure: RemoteFailure(error))
        }
        var delivered = false
        do {
            try outputCodec.withBytes(of: output) { bytes in
                delivered = send(
                    ResultHeader(
                        id: id, kind: ResultKind.value.rawValue, count: 1, worker: UInt32(index), pid: mp_process_id()),
                    bytes)
            }
        } catch {
            return reply(id: id, kind: .failure, count: 0, failure: .coding(error))
        }
        return delivered
    }

    private func answerMany(id: UInt64, _ inputs: [Input]) -> Bool {
        var outputs: [Output] = []
        outputs.reserveCapacity(inputs.count)
        do {
            for input in inputs { outputs.append(try work(input)) }
        } catch {
            return reply(id: id, kind: .failure, count: 0, failure: RemoteFailure(error))
        }
        var delivered = false
        do {
            try outputCodec.withBytes(of: outputs[...]) { bytes in
                delivered = send(
                    ResultHeader(
                        id: id, kind: ResultKind.values.rawValue, count: Int32(outputs.count), worker: UInt32(index),
                        pid: mp_process_id()), bytes)
            }
        } catch {
            return reply(id: id, kind: .failure, count: 0, failure: .coding(error))
        }
        return delivered
    }

    @discardableResult
    private func reply(id: UInt64, kind: ResultKind, count: Int32, failure: RemoteFailure) -> Bool {
        let header = ResultHeader(
            id: id, kind: kind.rawValue, count: count, worker: UInt32(index), pid: mp_process_id())
        var delivered = false
        do {
            try BinaryCoding.withEncoding(of: failure) { delivered = send(header, $0) }
        } catch {
            let fallback = RemoteFailure(type: failure.type, message: "(the error's description could not be encoded)")
            try? BinaryCoding.withEncoding(of: fallback) { delivered = send(header, $0) }
        }
        return delivered
    }

    private func send(_ header: ResultHeader, _ payload: UnsafeRawBufferPointer) -> Bool {
        var delivered = false
        withMessage(header, size: ResultHeader.size, payload: payload) { delivered = putMessage(results, $0) }
        return delivered
    }
}
