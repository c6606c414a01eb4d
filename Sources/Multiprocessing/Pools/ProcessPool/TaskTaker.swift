import CMultiprocessing

/// The claim protocol of a worker (not generic: no metadata lookups per task).
final class TaskTaker {
    let tasks: UnsafeMutablePointer<mp_queue_view_t>
    let slots: UnsafeMutablePointer<UInt64>
    let slotCount: Int
    let index: Int
    /// Where a task's inputs are copied before the consumer lock is released (reused, grown).
    private var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)

    init(tasks: UnsafeMutablePointer<mp_queue_view_t>, slots: UnsafeMutablePointer<UInt64>, slotCount: Int, index: Int)
    {
        self.tasks = tasks
        self.slots = slots
        self.slotCount = slotCount
        self.index = index
    }

    deinit { scratch.deallocate() }

    /// Takes the next task that is this worker's to run, claims it, and calls `body` with its header
    /// and input bytes (nil if the message was cut short), valid during the call only. Returns
    /// false once the task ring is shut down.
    func take(_ body: (TaskHeader, UnsafeRawBufferPointer?) -> Void) -> Bool {
        while true {
            let next = beginGet(tasks, .max)
            guard next.status == MP_OK else { return false }
            guard next.first.count >= TaskHeader.size else {  // never sent by a pool: drop it
                discard(next.total, next.first.count)
                continue
            }
            let header = next.first.loadUnaligned(as: TaskHeader.self)
            // A claimed message still at the head: its claimer died before consuming it. The parent
            // fails that task as the dead worker's, so it must not run here too.
            if mp_pool_claimed(slots, UInt32(slotCount), header.id) != 0 {
                discard(next.total, next.first.count)
                continue
            }
            mp_pool_claim(slots + index, header.id)
            if next.total == UInt64(next.first.count) {
                // Copied out and consumed before decoding: decoding runs no code of ours under the
                // lock that every worker needs (and may be slow, for large Codable chunks).
                let inputs = UnsafeRawBufferPointer(rebasing: next.first[TaskHeader.size...])
                if scratch.count < inputs.count {
                    scratch.deallocate()
                    scratch = .allocate(byteCount: max(inputs.count, 2 * scratch.count), alignment: 16)
                }
                if inputs.count > 0 {
                    scratch.baseAddress!.copyMemory(from: inputs.baseAddress!, byteCount: inputs.count)
                }
                mp_queue_get_end(tasks)
                body(header, UnsafeRawBufferPointer(rebasing: scratch[0..<inputs.count]))
                return true
            }
            let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(next.total), alignment: 16)
            defer { whole.deallocate() }
            if mp_queue_get_rest(tasks, whole.baseAddress!, next.total) == MP_OK {
                body(header, UnsafeRawBufferPointer(rebasing: whole[TaskHeader.size...]))
            } else {
                body(header, nil)
            }
            return true
        }
    }

    /// Consumes a message that is not to be run.
    private func discard(_ total: UInt64, _ first: Int) {
        if total == UInt64(first) {
            mp_queue_get_end(tasks)
            return
        }
        let whole = UnsafeMutableRawPointer.allocate(byteCount: Int(total), alignment: 16)
        defer { whole.deallocate() }
        _ = mp_queue_get_rest(tasks, whole, total)
    }
}
