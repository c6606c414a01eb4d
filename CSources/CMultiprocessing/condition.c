// Condition variable over an mp_mutex (Lock or RLock), across threads and processes.
//
// Invariants:
// - `seq` (the futex word) changes only in notify, which the caller does holding the mutex.
// - `waiters` changes only under the mutex: a waiter adds itself before it releases the mutex and
//   removes itself after it re-acquires it. So a notify that reads waiters == 0 knows that no thread
//   is between "read seq" and "sleep", and skips the syscall.
// - A waiter reads `seq` while it still holds the mutex, then sleeps while seq is unchanged: a
//   notify after the release changes seq, and FUTEX_WAIT refuses to sleep on a stale value, so no
//   wake-up is lost. Spurious wake-ups are possible (as in Python, callers loop on a predicate).
// Orderings: all under the mutex, whose acquire/release orders them; seq's bump is relaxed for the
// same reason and the kernel's futex compare is what the sleeper relies on.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_condition_t) == 16, "mp_condition_t layout is shared between processes");
_Static_assert(offsetof(mp_condition_t, seq) == 0, "the futex word leads the struct");

void mp_condition_init(mp_condition_t *c, int shared) {
    c->waiters = 0;
    c->shared = shared ? 1 : 0;
    c->reserved = 0;
    MP_STORE(&c->seq, 0, MP_RELEASE);
}

mp_status_t mp_condition_wait(mp_condition_t *c, mp_mutex_t *m, int recursive, int64_t timeout_ns) {
    int64_t deadline = mp_deadline_after(timeout_ns);
    uint32_t seq = MP_LOAD(&c->seq, MP_RELAXED);
    uint32_t depth = 0;
    if (recursive) {
        depth = mp_rmutex_unlock_all(m);
        if (depth == 0) return MP_NOT_HELD;
        MP_ADD(&c->waiters, 1, MP_RELAXED); // still ordered: notifiers must take m, released above
    } else {
        MP_ADD(&c->waiters, 1, MP_RELAXED); // before the unlock publishes it to notifiers
        if (mp_mutex_unlock(m) == MP_NOT_HELD) {
            MP_SUB(&c->waiters, 1, MP_RELAXED);
            return MP_NOT_HELD;
        }
    }
    int timed_out = 0;
    while (MP_LOAD(&c->seq, MP_RELAXED) == seq) {
        if (mp_futex_wait(&c->seq, seq, deadline, (int)c->shared) == ETIMEDOUT) {
            timed_out = 1;
            break;
        }
    }
    mp_status_t relock = recursive ? mp_rmutex_lock_depth(m, depth) : mp_mutex_lock(m, MP_FOREVER);
    MP_SUB(&c->waiters, 1, MP_RELAXED);
    if (relock == MP_OWNER_DIED) return MP_OWNER_DIED;
    return timed_out ? MP_TIMED_OUT : MP_OK;
}

void mp_condition_notify(mp_condition_t *c, uint32_t n) {
    if (n == 0 || MP_LOAD(&c->waiters, MP_RELAXED) == 0) return;
    MP_ADD(&c->seq, 1, MP_RELAXED);
    mp_futex_wake(&c->seq, n > INT_MAX ? INT_MAX : n, (int)c->shared);
}
