// The futex mutex behind Lock and RLock, across threads and processes, with owner-death recovery.
//
// States of `word` (the futex word):
//   0                      free
//   tid                    locked by thread `tid`, nobody sleeps
//   tid | MP_MUTEX_WAITERS locked, and someone may sleep on the word: the unlocker must wake one
// This is the classic three-state mutex with the owner's tid in place of "1", the layout the kernel
// uses for robust futexes. Fast paths: lock is one CAS 0 -> tid (acquire), unlock one swap to 0
// (release) that calls FUTEX_WAKE only when the WAITERS bit was set, so an uncontended lock and
// unlock make no syscall. Spinning only loads. A thread that had to sleep takes the lock with the
// WAITERS bit set, since it cannot know whether others still sleep (one spare wake at worst).
//
// Owner death: a sleeper never sleeps longer than OWNER_CHECK_NS at a time. When its sleep times
// out it asks the kernel whether the owner thread still exists (mp_thread_alive: a thread pidfd
// polls readable once the thread has exited, zombie included). If the owner is gone, the sleeper
// CASes the word from the dead owner's value to its own tid (only one can win) and reports
// MP_OWNER_DIED: it holds the lock and should repair the data. So a death is noticed within
// OWNER_CHECK_NS plus a few syscalls, with no cost while the lock is uncontended, and nothing is
// registered with the kernel per lock. Limit: if the dead owner's tid has been reused by a new
// thread before the check, the owner reads as alive until that thread exits.
//
// Orderings: the CAS that takes the lock is acquire and pairs with the release of the swap that
// frees it, ordering the critical sections. `depth` is touched only by the owner, so relaxed.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_mutex_t) == 16, "mp_mutex_t layout is shared between processes");
_Static_assert(offsetof(mp_mutex_t, word) == 0, "the futex word leads the struct");
_Static_assert((MP_MUTEX_WAITERS & MP_MUTEX_TID_MASK) == 0, "tid and flag bits must not overlap");

/// How long a sleeper waits before checking that the owner still lives (the issue allows 100 ms).
#define OWNER_CHECK_NS (20 * 1000 * 1000)

void mp_mutex_init(mp_mutex_t *m, int shared) {
    m->depth = 0;
    m->shared = shared ? 1 : 0;
    m->dead_owner = 0;
    MP_STORE(&m->word, 0, MP_RELEASE);
}

/// Takes over a lock whose owner, read as `seen`, has died. Only one contender can win the CAS.
static int take_from_dead_owner(mp_mutex_t *m, uint32_t seen, uint32_t tid) {
    if (mp_thread_alive((int32_t)(seen & MP_MUTEX_TID_MASK))) return 0;
    // Keep WAITERS: other sleepers may exist, and they must be woken at our unlock.
    if (!MP_CAS(&m->word, &seen, tid | MP_MUTEX_WAITERS, MP_ACQUIRE, MP_RELAXED)) return 0;
    m->dead_owner = seen & MP_MUTEX_TID_MASK; // written and read by the owner only
    return 1;
}

MP_COLD static mp_status_t lock_contended(mp_mutex_t *m, uint32_t tid, int64_t timeout_ns) {
    uint32_t w;
    for (int spin = 0; spin < MP_SPIN_LIMIT; spin++) {
        w = MP_LOAD(&m->word, MP_RELAXED);
        if (w == 0 && MP_CAS(&m->word, &w, tid, MP_ACQUIRE, MP_RELAXED)) return MP_OK;
        if (w & MP_MUTEX_WAITERS) break; // others already sleep: spinning would only jump the queue
        mp_cpu_relax();
    }
    int64_t deadline = mp_deadline_after(timeout_ns);
    for (;;) {
        w = MP_LOAD(&m->word, MP_RELAXED);
        if (w == 0) {
            if (MP_CAS(&m->word, &w, tid | MP_MUTEX_WAITERS, MP_ACQUIRE, MP_RELAXED)) return MP_OK;
            continue;
        }
        if (!(w & MP_MUTEX_WAITERS)) {
            uint32_t flagged = w | MP_MUTEX_WAITERS;
            if (!MP_CAS(&m->word, &w, flagged, MP_RELAXED, MP_RELAXED)) continue;
            w = flagged;
        }
        int64_t now = mp_monotonic_ns();
        if (now >= deadline) return MP_TIMED_OUT;
        int64_t wake_at = deadline - now > OWNER_CHECK_NS ? now + OWNER_CHECK_NS : deadline;
        if (mp_futex_wait(&m->word, w, wake_at, (int)m->shared) == ETIMEDOUT) {
            if (take_from_dead_owner(m, w, tid)) return MP_OWNER_DIED;
        }
    }
}

mp_status_t mp_mutex_lock(mp_mutex_t *m, int64_t timeout_ns) {
    uint32_t tid = (uint32_t)mp_thread_id();
    uint32_t expected = 0;
    if (MP_LIKELY(MP_CAS(&m->word, &expected, tid, MP_ACQUIRE, MP_RELAXED))) return MP_OK;
    if (timeout_ns == 0) {
        return take_from_dead_owner(m, expected, tid) ? MP_OWNER_DIED : MP_BUSY;
    }
    return lock_contended(m, tid, timeout_ns);
}

mp_status_t mp_mutex_unlock(mp_mutex_t *m) {
    uint32_t old = MP_SWAP(&m->word, 0, MP_RELEASE);
    if (MP_UNLIKELY(old == 0)) return MP_NOT_HELD;
    if (MP_UNLIKELY(old & MP_MUTEX_WAITERS)) mp_futex_wake(&m->word, 1, (int)m->shared);
    return MP_OK;
}

int32_t mp_mutex_owner(const mp_mutex_t *m) {
    return (int32_t)(MP_LOAD(&m->word, MP_RELAXED) & MP_MUTEX_TID_MASK);
}

static inline int owned_by(const mp_mutex_t *m, uint32_t tid) {
    // Only this thread can store its own tid into the word, so a relaxed load is exact here.
    return (MP_LOAD(&m->word, MP_RELAXED) & MP_MUTEX_TID_MASK) == tid;
}

mp_status_t mp_rmutex_lock(mp_mutex_t *m, int64_t timeout_ns) {
    uint32_t tid = (uint32_t)mp_thread_id();
    if (owned_by(m, tid)) {
        if (m->depth == INT32_MAX) return MP_OVERFLOW;
        m->depth++;
        return MP_OK;
    }
    mp_status_t status = mp_mutex_lock(m, timeout_ns);
    if (status == MP_OK || status == MP_OWNER_DIED) m->depth = 1;
    return status;
}

mp_status_t mp_rmutex_unlock(mp_mutex_t *m) {
    if (!owned_by(m, (uint32_t)mp_thread_id())) return MP_NOT_HELD;
    if (--m->depth > 0) return MP_OK;
    return mp_mutex_unlock(m);
}

uint32_t mp_rmutex_unlock_all(mp_mutex_t *m) {
    if (!owned_by(m, (uint32_t)mp_thread_id())) return 0;
    uint32_t depth = m->depth;
    m->depth = 0;
    mp_mutex_unlock(m);
    return depth;
}

mp_status_t mp_rmutex_lock_depth(mp_mutex_t *m, uint32_t depth) {
    mp_status_t status = mp_mutex_lock(m, MP_FOREVER);
    m->depth = depth;
    return status;
}
