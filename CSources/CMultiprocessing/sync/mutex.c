// The futex mutex behind Lock and RLock, across threads and processes, with owner-death recovery.
//
// States of `word` (the futex word):
//   0                     free
//   id                    locked by `id`, nobody sleeps
//   id | MP_MUTEX_WAITERS locked, and someone may sleep on the word: the unlocker must wake one
// This is the classic three-state mutex with the owner's id in place of "1", the layout the kernel
// uses for robust futexes. `id` is the owner's process id for a process-owned mutex (Lock, which
// any thread may release, as in Python) and its thread id otherwise (RLock, which only its owning
// thread may release). Fast paths: lock is one CAS 0 -> id (acquire), unlock one swap to 0
// (release) that calls FUTEX_WAKE only when the WAITERS bit was set, so an uncontended lock and
// unlock make no syscall. Spinning only loads, with exponential back-off between loads so that the
// owner keeps the word's line between hand-offs. A thread that had to sleep takes the lock with the
// WAITERS bit set, since it cannot know whether others still sleep (one spare wake at worst).
//
// Owner death: a blocked acquirer checks, every MP_OWNER_CHECK_NS on a fixed schedule (signals that
// interrupt its sleep do not postpone the check), whether the owner still exists: a pidfd (thread
// pidfd for thread owners, kernel >= 6.9) polls readable once its process or thread has exited,
// zombie included. If the owner is gone, the acquirer CASes the word from the dead owner's value to
// its own id (only one can win), records the dead id in `dead_owner` and reports MP_OWNER_DIED: it
// holds the lock and should repair the data. A death is noticed within MP_OWNER_CHECK_NS plus a few
// syscalls, with no cost while the lock is uncontended and nothing registered with the kernel.
// A try that finds the lock taken, and a timed acquire whose time runs out before its first
// scheduled check, check once before giving up, so a dead holder never makes them fail for good.
// Limits: if the dead owner's id has been reused before the check, the owner reads as alive until
// the new holder of that id exits; ids are per pid namespace, so all users must share one.
//
// Orderings: the CAS that takes the lock is acquire and pairs with the release of the swap that
// frees it, ordering the critical sections. `depth` and `dead_owner` are touched only by the owner.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_mutex_t) == 16, "mp_mutex_t layout is shared between processes");
_Static_assert(offsetof(mp_mutex_t, word) == 0, "the futex word leads the struct");
_Static_assert((MP_MUTEX_WAITERS & MP_MUTEX_TID_MASK) == 0, "id and flag bits must not overlap");

/// Rounds of the back-off spin before sleeping (see mp_mutex_lock_contended).
#define SPIN_ROUNDS 7

void mp_mutex_init(mp_mutex_t *m, uint32_t flags) {
    m->depth = 0;
    m->flags = flags;
    m->dead_owner = 0;
    MP_STORE(&m->word, 0, MP_RELEASE);
}

static inline int is_shared(const mp_mutex_t *m) { return (int)(m->flags & MP_MUTEX_SHARED); }

static inline uint32_t caller_id(const mp_mutex_t *m) {
    return (uint32_t)((m->flags & MP_MUTEX_PROCESS_OWNED) ? mp_process_id() : mp_thread_id());
}

/// Takes over a lock whose owner, read as `seen`, has died. Only one contender can win the CAS.
static int take_from_dead_owner(mp_mutex_t *m, uint32_t seen, uint32_t id) {
    int32_t owner = (int32_t)(seen & MP_MUTEX_TID_MASK);
    int alive = (m->flags & MP_MUTEX_PROCESS_OWNED) ? mp_process_alive(owner) : mp_thread_alive(owner);
    if (alive) return 0;
    // Keep WAITERS: other sleepers may exist, and they must be woken at our unlock.
    if (!MP_CAS(&m->word, &seen, id | MP_MUTEX_WAITERS, MP_ACQUIRE, MP_RELAXED)) return 0;
    m->dead_owner = (uint32_t)owner;
    return 1;
}

MP_COLD mp_status_t mp_mutex_lock_contended(mp_mutex_t *m, uint32_t id, int64_t deadline) {
    // Spin with exponential back-off before sleeping: each round waits twice as long as the last
    // before it reads the word again. A spinner that read the word on every pause kept pulling the
    // line from the owner's core, so each unlock and re-lock paid a cross-core transfer (2 threads
    // contended: 0.65x pthread, which does not spin). Backing off, it reads the word SPIN_ROUNDS
    // times in 2^SPIN_ROUNDS - 1 pauses (about as long as the old spin of 100), and the owner runs
    // its hand-offs on a line it keeps: 2-3x pthread between threads and between processes, with
    // almost no futex calls (12 per 2 million contended pairs). A sleeper, once woken, does not spin.
    uint32_t w;
    for (int round = 0; round < SPIN_ROUNDS; round++) {
        for (int pause = 0; pause < (1 << round); pause++) mp_cpu_relax();
        w = MP_LOAD(&m->word, MP_RELAXED);
        if (w == 0 && MP_CAS(&m->word, &w, id, MP_ACQUIRE, MP_RELAXED)) return MP_OK;
        if (w & MP_MUTEX_WAITERS) break; // others already sleep: spinning would only jump the queue
    }
    int64_t next_check = mp_monotonic_ns() + MP_OWNER_CHECK_NS;
    int checked = 0;
    for (;;) {
        w = MP_LOAD(&m->word, MP_RELAXED);
        if (w == 0) {
            if (MP_CAS(&m->word, &w, id | MP_MUTEX_WAITERS, MP_ACQUIRE, MP_RELAXED)) return MP_OK;
            continue;
        }
        if (!(w & MP_MUTEX_WAITERS)) {
            uint32_t flagged = w | MP_MUTEX_WAITERS;
            if (!MP_CAS(&m->word, &w, flagged, MP_RELAXED, MP_RELAXED)) continue;
            w = flagged;
        }
        int64_t now = mp_monotonic_ns();
        if (now >= next_check || (now >= deadline && !checked)) {
            if (take_from_dead_owner(m, w, id)) return MP_OWNER_DIED;
            next_check = now + MP_OWNER_CHECK_NS;
            checked = 1;
            continue; // the check took time: re-read the word before sleeping
        }
        if (now >= deadline) return MP_TIMED_OUT;
        mp_futex_wait(&m->word, w, next_check < deadline ? next_check : deadline, is_shared(m));
    }
}

MP_COLD mp_status_t mp_mutex_try_contended(mp_mutex_t *m, uint32_t id) {
    uint32_t w = MP_LOAD(&m->word, MP_RELAXED);
    if (w == 0) return MP_CAS(&m->word, &w, id, MP_ACQUIRE, MP_RELAXED) ? MP_OK : MP_BUSY;
    return take_from_dead_owner(m, w, id) ? MP_OWNER_DIED : MP_BUSY;
}

MP_COLD void mp_mutex_wake_one(mp_mutex_t *m) { mp_futex_wake(&m->word, 1, is_shared(m)); }

int32_t mp_mutex_owner(const mp_mutex_t *m) {
    return (int32_t)(MP_LOAD(&m->word, MP_RELAXED) & MP_MUTEX_TID_MASK);
}

static inline int owned_by_caller(const mp_mutex_t *m) {
    // Only this thread can store its own tid into the word, so a relaxed load is exact here.
    return (MP_LOAD(&m->word, MP_RELAXED) & MP_MUTEX_TID_MASK) == (uint32_t)mp_thread_id();
}

mp_status_t mp_rmutex_lock(mp_mutex_t *m, int64_t deadline) {
    if (owned_by_caller(m)) {
        if (m->depth >= INT32_MAX) return MP_OVERFLOW;
        m->depth++;
        return MP_OK;
    }
    mp_status_t status = mp_mutex_lock(m, deadline);
    if (status == MP_OK || status == MP_OWNER_DIED) m->depth = 1;
    return status;
}

mp_status_t mp_rmutex_unlock(mp_mutex_t *m) {
    if (!owned_by_caller(m) || m->depth == 0) return MP_NOT_HELD;
    if (--m->depth > 0) return MP_OK;
    return mp_mutex_unlock(m);
}

uint32_t mp_rmutex_unlock_all(mp_mutex_t *m) {
    if (!owned_by_caller(m) || m->depth == 0) return 0;
    uint32_t depth = m->depth;
    m->depth = 0;
    mp_mutex_unlock(m);
    return depth;
}

uint32_t mp_rmutex_depth(const mp_mutex_t *m) {
    // Only the owner writes `depth`, and only the owner's word holds its tid: exact for the owner.
    return owned_by_caller(m) ? m->depth : 0;
}

mp_status_t mp_rmutex_lock_depth(mp_mutex_t *m, uint32_t depth) {
    mp_status_t status = mp_mutex_lock(m, MP_FOREVER);
    m->depth = depth;
    return status;
}

// MARK: - Awaiting (a coroutine: take it now, or say which word to wait on; see internal.h's
// mp_async_wait_on). The waiter sets MP_MUTEX_WAITERS before it sleeps and, once it has slept,
// takes the lock with the bit set (others may still sleep), as the blocking path does; the
// owner's liveness is checked every MP_OWNER_CHECK_NS by waiting no later than `check_at`.

mp_status_t mp_mutex_lock_async(mp_mutex_t *m, mp_async_wait_t *w) {
    // A coroutine moves between threads, so only a process-owned mutex (Lock) can be awaited.
    uint32_t id = (uint32_t)mp_process_id();
    uint32_t mark = w->registered ? MP_MUTEX_WAITERS : 0; // slept: others may sleep too
    for (;;) {
        uint32_t v = MP_LOAD(&m->word, MP_RELAXED);
        if (v == 0) {
            // acquire: pairs with the release swap of the unlock
            if (MP_CAS(&m->word, &v, id | mark, MP_ACQUIRE, MP_RELAXED)) return MP_OK;
            continue;
        }
        if (!(v & MP_MUTEX_WAITERS)) {
            uint32_t flagged = v | MP_MUTEX_WAITERS;
            if (!MP_CAS(&m->word, &v, flagged, MP_RELAXED, MP_RELAXED)) continue;
            v = flagged;
        }
        int64_t now = mp_monotonic_ns();
        if (w->check_at == 0) w->check_at = now + MP_OWNER_CHECK_NS;
        if (now >= w->check_at) {
            w->check_at = now + MP_OWNER_CHECK_NS;
            if (take_from_dead_owner(m, v, id)) return MP_OWNER_DIED;
            continue; // the check took time: re-read the word before waiting
        }
        mp_async_wait_on(w, &m->word, v, m->flags & MP_MUTEX_SHARED);
        w->registered = 1;
        return MP_WAIT;
    }
}

/// A queue's coroutine waiting for a process-owned lock to come free (it then takes it with its own
/// try): flags the held lock for sleepers and reports it: MP_WAIT, MP_OWNER_DIED (its holder is
/// dead), or MP_OK when it is free again (look again).
mp_status_t mp_mutex_await_free(mp_mutex_t *m, mp_async_wait_t *w) {
    uint32_t v = MP_LOAD(&m->word, MP_RELAXED);
    if (v == 0) return MP_OK;
    if (!(v & MP_MUTEX_WAITERS)) {
        uint32_t flagged = v | MP_MUTEX_WAITERS;
        if (!MP_CAS(&m->word, &v, flagged, MP_RELAXED, MP_RELAXED)) return MP_OK;
        v = flagged;
    }
    int64_t now = mp_monotonic_ns();
    if (w->check_at == 0) w->check_at = now + MP_OWNER_CHECK_NS;
    if (now >= w->check_at) {
        w->check_at = now + MP_OWNER_CHECK_NS;
        if (!mp_process_alive((int32_t)(v & MP_MUTEX_TID_MASK))) return MP_OWNER_DIED;
    }
    mp_async_wait_on(w, &m->word, v, m->flags & MP_MUTEX_SHARED);
    return MP_WAIT;
}
