// A cancellation handler for the current Swift task without `withTaskCancellationHandler`: that
// is a call into the runtime whose `operation` closure is nonisolated, so a task with an executor
// preference (every loop task) hops to enter it, a preferred-executor look-up under the task's
// status lock; with the call's frame and closure contexts, about 600 instructions per awaited
// operation. These are the two runtime calls that `withTaskCancellationHandler` makes around its
// operation (exported by libswift_Concurrency and, on Apple platforms, called from clients'
// inlined code, so their ABI is fixed). They are declared here rather than with @_silgen_name
// because Swift 6.3 warns that naming a runtime symbol that way will become an error.
//
// Invariants:
// - The runtime allocates the record with swift_task_alloc, a stack allocator: every task
//   allocation made between mp_task_add_cancel_handler and mp_task_remove_cancel_handler must be
//   freed before the latter (true of an `await` in between: its frames are gone when it returns).
// - The runtime calls the handler at once (in mp_task_add_cancel_handler) if the task is already
//   cancelled, else on the thread that cancels it, under the task's status lock; removing the
//   record takes that lock, so `arg` need only live until mp_task_remove_cancel_handler returns.
// - The record holds one context word, `arg`, so the function is one for the process, set before
//   the first handler is added (relaxed: the adding task ordered itself after the setter, and the
//   canceller reaches the record through the status lock).
// - mp_continuation_resume_through (mp_loop.h, inline) writes the target executor of a task's
//   pending continuation, as Swift's 6.x runtime lays it out on 64-bit targets (swift/ABI/Task.h):
//   AsyncTask::ResumeContext at 0x40 (the compiler reads it there itself, inline, to store a
//   resume's value), and in the ContinuationAsyncContext the flags at 0x10, NormalResult at 0x28
//   (also read inline by the compiler) and ResumeToExecutor right after it, at 0x30 (two words,
//   zero for the generic executor). swift_continuation_init sets that target; resume reads it
//   after storing the value and before enqueueing the task. A context that does not look like
//   that (flags set, a target already there) is left alone: the resume takes the generic path.
#include "internal.h"

#include <stdatomic.h>
#include <stddef.h>

#define MP_SWIFTCC __attribute__((swiftcall))
#define MP_SWIFT_CONTEXT __attribute__((swift_context))

// libswift_Concurrency's entry points (Runtime/Concurrency.h), in Swift's calling convention.
typedef MP_SWIFTCC void (*swift_cancellation_fn)(void *MP_SWIFT_CONTEXT context);
extern MP_SWIFTCC void *swift_task_addCancellationHandler(swift_cancellation_fn handler, void *context);
extern MP_SWIFTCC void swift_task_removeCancellationHandler(void *record);

static _Atomic(mp_cancel_fn) cancel_fn;

static MP_SWIFTCC void run_cancel_fn(void *MP_SWIFT_CONTEXT arg) {
    atomic_load_explicit(&cancel_fn, memory_order_relaxed)(arg);
}

void mp_task_set_cancel_fn(mp_cancel_fn fn) { atomic_store_explicit(&cancel_fn, fn, memory_order_relaxed); }

void *mp_task_add_cancel_handler(void *arg) { return swift_task_addCancellationHandler(run_cancel_fn, arg); }

void mp_task_remove_cancel_handler(void *record) { swift_task_removeCancellationHandler(record); }
