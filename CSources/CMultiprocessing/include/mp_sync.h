// The futex primitives: Lock and RLock, the private lock, Semaphore, Condition, Event, Barrier, and
// their awaited forms (sync/).
// Part of CMultiprocessing.h (see it for the rules every header here follows).
#ifndef MP_SYNC_H
#define MP_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "mp_sys.h"

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Mutex (Lock and RLock)

/// A futex mutex usable across threads and processes. `word` is 0 when free, else the owner's id,
/// with `MP_MUTEX_WAITERS` set while someone may sleep on it. The owner's id is its process id for
/// a process-owned mutex (Lock: any thread may release it, and only the process's death frees it)
/// or its thread id otherwise (RLock). `depth` counts RLock recursion and is touched only by the
/// owner. `flags` holds MP_MUTEX_SHARED and MP_MUTEX_PROCESS_OWNED. `dead_owner` is the id of the
/// owner whose death the current owner recovered from (valid after MP_OWNER_DIED).
typedef struct mp_mutex {
    uint32_t word;
    uint32_t depth;
    uint32_t flags;
    uint32_t dead_owner;
} mp_mutex_t;

#define MP_MUTEX_WAITERS 0x80000000u
#define MP_MUTEX_TID_MASK 0x3fffffffu
/// Process-shared futex calls (the mutex lives in shared memory).
#define MP_MUTEX_SHARED 1u
/// The owner is a process (its pid in the word), not a thread.
#define MP_MUTEX_PROCESS_OWNED 2u

void mp_mutex_init(mp_mutex_t *_Nonnull m, uint32_t flags);
/// The contended part of mp_mutex_lock (spin, then sleep; owner-death checks).
mp_status_t mp_mutex_lock_contended(mp_mutex_t *_Nonnull m, uint32_t id, int64_t deadline_ns);
/// The failed fast path of a try (a deadline of MP_NOW): takes the lock if it has come free, or over from
/// an owner that has died (MP_OWNER_DIED), else MP_BUSY.
mp_status_t mp_mutex_try_contended(mp_mutex_t *_Nonnull m, uint32_t id);
/// Wakes one sleeper of `m` (the unlock found the WAITERS bit).
void mp_mutex_wake_one(mp_mutex_t *_Nonnull m);

/// The lock's fast path, the one place its word goes from free to held without a wait: one CAS
/// 0 -> `id` (acquire: pairs with the unlock's release swap). 1 if taken. The queues call it with
/// the caller's pid (their locks are process-owned).
static inline int mp_mutex_try_fast(mp_mutex_t *_Nonnull m, uint32_t id) {
    uint32_t expected = 0;
    return __atomic_compare_exchange_n(&m->word, &expected, id, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

/// Acquires by `deadline_ns` (MP_NOW: try once; MP_FOREVER; see mp_base.h).
/// Returns MP_OK, MP_BUSY (try), MP_TIMED_OUT or MP_OWNER_DIED (acquired; the owner died). Every
/// acquire that would fail checks the owner's liveness at least once (a few syscalls, only when the
/// lock is taken), so a dead owner is taken over by tries and short timeouts too. The fast path is
/// inline here (one CAS, acquire: pairs with the unlock's release swap); see mutex.c.
static inline mp_status_t mp_mutex_lock(mp_mutex_t *_Nonnull m, int64_t deadline_ns) {
    uint32_t id = (uint32_t)((m->flags & MP_MUTEX_PROCESS_OWNED) ? mp_process_id() : mp_thread_id());
    if (__builtin_expect(mp_mutex_try_fast(m, id), 1)) return MP_OK;
    if (deadline_ns == MP_NOW) return mp_mutex_try_contended(m, id);
    return mp_mutex_lock_contended(m, id, deadline_ns);
}

/// Releases: one swap to 0 (release), and a wake only if someone sleeps. Any thread may release a
/// held `Lock` (as in Python); MP_NOT_HELD if it was free.
static inline mp_status_t mp_mutex_unlock(mp_mutex_t *_Nonnull m) {
    uint32_t old = __atomic_exchange_n(&m->word, 0u, __ATOMIC_RELEASE);
    if (__builtin_expect(old == 0, 0)) return MP_NOT_HELD;
    if (__builtin_expect((old & MP_MUTEX_WAITERS) != 0, 0)) mp_mutex_wake_one(m);
    return MP_OK;
}
/// The owner's tid, or 0 when free (a snapshot).
int32_t mp_mutex_owner(const mp_mutex_t *_Nonnull m);

// MARK: - Arena (the shared slots the primitives live in)

/// The arena the synchronization primitives are allocated from (Arena.swift holds the policy):
/// slot 0 is this header, every other slot an mp_arena_slot_t, one cache line each. Every field is
/// changed only under `guard` (a process-shared, process-owned mp_mutex_t); any process mapping
/// the arena can write them, so a reader checks an index against its own slot count first.
typedef struct mp_arena_header {
    mp_mutex_t guard;
    uint32_t magic;       // MP_ARENA_MAGIC once initialised
    uint32_t next_unused; // the first slot never handed out
    uint32_t free_head;   // the first freed slot (0: none), chained through next_free
    uint32_t slot_count;  // slots in the region, header included
    uint32_t pad[8];
} mp_arena_header_t;

/// One primitive's slot: what it is, which incarnation (bumped when freed, so stale handles fail),
/// the process that made it (only that one may free it), the free chain, and the primitive itself.
typedef struct mp_arena_slot {
    uint32_t kind;
    uint32_t generation;
    uint32_t creator;
    uint32_t next_free;
    uint8_t payload[48];
} mp_arena_slot_t;

#define MP_ARENA_MAGIC 0x41524e41u /* "ANRA" */

// MARK: - Private lock (the library's own bookkeeping)

/// Forks between the program's start and this process (bumped in each forked child; futex.c).
extern uint32_t mp_fork_generation;
/// `mp_fork_generation`, read (for Swift, which cannot read the global itself under strict
/// concurrency).
static inline uint32_t mp_fork_generation_now(void) { return __atomic_load_n(&mp_fork_generation, __ATOMIC_RELAXED); }

/// A process-private mutex that is usable in a forked child even if a thread of the parent, which
/// did not come along, held it at the fork: a lock from an older fork generation re-initialises
/// itself on first use. Never fork while holding one (the forking thread's hold is dropped too).
typedef struct mp_private_lock {
    mp_mutex_t mutex;
    uint32_t generation;
    uint32_t reserved;
} mp_private_lock_t;

void mp_private_lock_init(mp_private_lock_t *_Nonnull l);
/// The cold path of mp_private_lock_lock: re-initialises a lock from an older generation, once.
void mp_private_lock_repair(mp_private_lock_t *_Nonnull l);

/// Acquires, waiting as long as it takes. The generation check is one load (acquire: pairs with
/// the release that publishes a repaired lock) and a compare.
static inline void mp_private_lock_lock(mp_private_lock_t *_Nonnull l) {
    if (__builtin_expect(__atomic_load_n(&l->generation, __ATOMIC_ACQUIRE) !=
                             __atomic_load_n(&mp_fork_generation, __ATOMIC_RELAXED),
                         0))
        mp_private_lock_repair(l);
    (void)mp_mutex_lock(&l->mutex, MP_FOREVER);
}

/// Acquires by `deadline_ns`: MP_OK, or MP_TIMED_OUT (MP_BUSY for a passed deadline).
static inline mp_status_t mp_private_lock_lock_until(mp_private_lock_t *_Nonnull l, int64_t deadline_ns) {
    if (__builtin_expect(__atomic_load_n(&l->generation, __ATOMIC_ACQUIRE) !=
                             __atomic_load_n(&mp_fork_generation, __ATOMIC_RELAXED),
                         0))
        mp_private_lock_repair(l);
    mp_status_t status = mp_mutex_lock(&l->mutex, deadline_ns);
    return status == MP_OWNER_DIED ? MP_OK : status; // a private lock's owner is a thread of this process
}

static inline void mp_private_lock_unlock(mp_private_lock_t *_Nonnull l) { (void)mp_mutex_unlock(&l->mutex); }

/// Recursive acquire: the owner re-enters by counting. MP_OVERFLOW past 2^31-1 levels.
mp_status_t mp_rmutex_lock(mp_mutex_t *_Nonnull m, int64_t deadline_ns);
/// Recursive release: MP_NOT_HELD unless the calling thread owns it.
mp_status_t mp_rmutex_unlock(mp_mutex_t *_Nonnull m);
/// Releases every level at once (Condition.wait), returning the depth to restore, 0 if not owned.
uint32_t mp_rmutex_unlock_all(mp_mutex_t *_Nonnull m);
/// How many levels the calling thread holds (0 unless it owns the lock).
uint32_t mp_rmutex_depth(const mp_mutex_t *_Nonnull m);
/// Re-acquires after `mp_rmutex_unlock_all`, restoring `depth` levels.
mp_status_t mp_rmutex_lock_depth(mp_mutex_t *_Nonnull m, uint32_t depth);

// MARK: - Semaphore

/// A counting semaphore. `value` is the futex word; `waiters` counts sleepers so that a release
/// makes no syscall when nobody sleeps; `limit` caps `value` (MP_SEMAPHORE_MAX when unbounded, the
/// initial value for a BoundedSemaphore).
typedef struct mp_semaphore {
    uint32_t value;
    uint32_t waiters;
    uint32_t limit;
    uint32_t shared;
} mp_semaphore_t;

#define MP_SEMAPHORE_MAX 0x7fffffffu

void mp_semaphore_init(mp_semaphore_t *_Nonnull s, uint32_t value, uint32_t limit, int shared);
mp_status_t mp_semaphore_acquire(mp_semaphore_t *_Nonnull s, int64_t deadline_ns);
/// Adds `n`; MP_OVERFLOW (and no change) if that passes `limit`.
mp_status_t mp_semaphore_release(mp_semaphore_t *_Nonnull s, uint32_t n);
uint32_t mp_semaphore_value(const mp_semaphore_t *_Nonnull s);

// MARK: - Condition

/// A condition variable over an mp_mutex, in two groups of waiters (condition.c): the open group
/// (generation `generation`), which a new waiter joins, and the closed one (`generation - 1`),
/// which notifies serve; a waiter of an older generation has been notified. A waiter of
/// generation g sleeps on `seq[g & 1]`, which each notify to its group bumps. Every field but the
/// words is changed only under the mutex.
typedef struct mp_condition {
    uint32_t seq[2];
    uint32_t generation;
    uint32_t closed_waiting; // the closed group's waiters that have taken no notify
    uint32_t closed_tokens;  // notifies granted to the closed group, not yet taken
    uint32_t open_waiting;   // the open group's waiters
    uint32_t shared;
    uint32_t pad;
} mp_condition_t;

void mp_condition_init(mp_condition_t *_Nonnull c, int shared);
/// Releases `m` (all levels if `recursive`), sleeps until notified or timed out, re-acquires `m`.
/// Returns MP_OK, MP_TIMED_OUT, MP_NOT_HELD (caller did not hold `m`), or MP_OWNER_DIED (from the
/// re-acquire; the lock is held).
mp_status_t mp_condition_wait(mp_condition_t *_Nonnull c, mp_mutex_t *_Nonnull m, int recursive,
                              int64_t deadline_ns);
/// Wakes up to `n` waiters, the longest waiting first; the caller holds the mutex.
void mp_condition_notify(mp_condition_t *_Nonnull c, uint32_t n);
/// Threads and coroutines inside wait (a snapshot; a dead waiter stays counted until its group is
/// notified).
uint32_t mp_condition_waiting(const mp_condition_t *_Nonnull c);

// MARK: - Event

/// `word` bit 0 is the flag; the rest counts sets, so a waiter woken by a set that a clear has
/// already undone still sees that the event fired (as Python's Event.wait returns True).
typedef struct mp_event {
    uint32_t word;
    uint32_t waiters;
    uint32_t shared;
    uint32_t reserved;
} mp_event_t;

void mp_event_init(mp_event_t *_Nonnull e, int shared);
void mp_event_set(mp_event_t *_Nonnull e);
void mp_event_clear(mp_event_t *_Nonnull e);
int mp_event_is_set(const mp_event_t *_Nonnull e);
/// MP_OK once set (or set while waiting), MP_TIMED_OUT otherwise.
mp_status_t mp_event_wait(mp_event_t *_Nonnull e, int64_t deadline_ns);

// MARK: - Barrier

/// Python's Barrier (filling, releasing, draining, broken) under a guard mutex (see barrier.c).
/// `state` holds the phase and the cycle (the resets so far) in one word, so that a break made
/// without the guard applies to one cycle only; `seq` is the futex word every change bumps. Bit
/// `c % 32` of `passed` says whether the reset that ended cycle `c` found its parties released
/// (their waits succeed) or still waiting (broken).
typedef struct mp_barrier {
    mp_mutex_t guard; // its flags say whether the barrier is process-shared
    uint32_t parties;
    uint32_t count;
    uint32_t state; // the phase in the low 2 bits, the cycle above
    uint32_t seq;
    uint32_t passed;
    uint32_t reserved;           // 0
    uint64_t default_timeout_ns; // a wait without a timeout of its own uses this; 0: none (set once)
} mp_barrier_t;

/// The action a barrier's releasing party runs (see mp_barrier_wait): 0 to let the parties pass,
/// anything else to break the barrier.
typedef int32_t (*mp_barrier_action_t)(void *_Nullable context);

void mp_barrier_init(mp_barrier_t *_Nonnull b, uint32_t parties, int shared, uint64_t default_timeout_ns);
/// Waits for all parties. On MP_OK `*index` is this caller's arrival index (0..parties-1).
/// MP_BROKEN if the barrier is or becomes broken or reset; a timeout breaks it (MP_TIMED_OUT), but
/// one that passes before the caller could join leaves it as it was. The last to arrive runs
/// `action(context)` (when not NULL) before anyone is released, outside the guard; a nonzero
/// result breaks the barrier, and that caller gets MP_BROKEN too.
mp_status_t mp_barrier_wait(mp_barrier_t *_Nonnull b, int64_t deadline_ns, uint32_t *_Nonnull index,
                            mp_barrier_action_t _Nullable action, void *_Nullable context);
/// Empties the barrier into a new cycle; its waiters get MP_BROKEN unless it had released them.
/// Takes the guard without a deadline, as Python's reset() takes its lock: a dead holder is taken
/// over, a stopped one delays it until it runs again.
void mp_barrier_reset(mp_barrier_t *_Nonnull b);
/// Breaks the current cycle, without the guard (one CAS): it never waits.
void mp_barrier_abort(mp_barrier_t *_Nonnull b);
/// A snapshot, read without the guard.
int mp_barrier_is_broken(mp_barrier_t *_Nonnull b);
/// The parties waiting in the current pass (Python's n_waiting): a snapshot, read without the guard.
uint32_t mp_barrier_waiting(mp_barrier_t *_Nonnull b);

// MARK: - Awaiting the shared primitives (each in its own file: sync/*.c, queue/queue_async.c)

/// The state of one coroutine waiting on a shared primitive: which futex word to wait on and the
/// value it was seen to hold, and whether the waiter is counted among the primitive's sleepers
/// (so that the next call, or the leave function, undoes that). Zero it before the first call.
typedef struct mp_async_wait {
    uint32_t *_Nullable word;
    uint32_t expected;
    uint32_t shared;
    uint32_t registered;
    uint32_t target;
    int64_t check_at;
} mp_async_wait_t;

/// Status: not yet. Wait until `word` no longer holds `expected` (or a wake-up), then call again.
#define MP_WAIT 10

/// Lock (process-owned mutex) acquire without blocking: MP_OK, MP_OWNER_DIED (acquired; see
/// mp_mutex_t), or MP_WAIT. Owner liveness is checked on the blocking path's schedule: wait no
/// later than `check_at`.
mp_status_t mp_mutex_lock_async(mp_mutex_t *_Nonnull m, mp_async_wait_t *_Nonnull w);
/// A waiter that was woken but leaves without taking what woke it passes the wake-up on.
void mp_async_wait_forward(const mp_async_wait_t *_Nonnull w);
/// The fallback where the ring has no futex wait: sleeps on a helper thread while the word holds
/// `expected`, until woken or `deadline_ns`. 0, or ETIMEDOUT.
int32_t mp_async_wait_blocking(const mp_async_wait_t *_Nonnull w, int64_t deadline_ns);
/// Semaphore: MP_OK (a permit taken) or MP_WAIT. mp_semaphore_async_leave on cancellation.
mp_status_t mp_semaphore_acquire_async(mp_semaphore_t *_Nonnull s, mp_async_wait_t *_Nonnull w);
void mp_semaphore_async_leave(mp_semaphore_t *_Nonnull s, mp_async_wait_t *_Nonnull w, int woken);
/// Event: MP_OK once set (or set since the first call), else MP_WAIT. mp_event_async_leave on
/// cancellation or timeout.
mp_status_t mp_event_wait_async(mp_event_t *_Nonnull e, mp_async_wait_t *_Nonnull w);
void mp_event_async_leave(mp_event_t *_Nonnull e, mp_async_wait_t *_Nonnull w);
/// Condition over a Lock, step 1 (lock held): joins the waiters, releases the lock, MP_WAIT on
/// `seq`; MP_NOT_HELD if the lock is free.
mp_status_t mp_condition_wait_async_begin(mp_condition_t *_Nonnull c, mp_mutex_t *_Nonnull m,
                                          mp_async_wait_t *_Nonnull w);
/// After a wake-up: whether the waiter's word moved on (else the wait goes on without the lock,
/// until `check_at` at the latest, which this moves on once it has passed).
int mp_condition_async_notified(const mp_condition_t *_Nonnull c, mp_async_wait_t *_Nonnull w);
/// Step 2, the lock re-acquired: MP_OK (notified), MP_TIMED_OUT (when `timed_out`), or MP_WAIT
/// (a wake-up meant for another waiter: the lock is released again and the wait goes on).
mp_status_t mp_condition_wait_async_end(mp_condition_t *_Nonnull c, mp_mutex_t *_Nonnull m,
                                        mp_async_wait_t *_Nonnull w, int timed_out);
/// A cancelled waiter, the lock re-acquired: leaves its group; a notify it was granted goes on to
/// the next waiter (as asyncio's Condition passes it on).
void mp_condition_async_leave(mp_condition_t *_Nonnull c, mp_async_wait_t *_Nonnull w);

#ifdef __cplusplus
}
#endif

#endif
