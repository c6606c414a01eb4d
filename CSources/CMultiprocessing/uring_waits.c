// Awaiting Lock, Semaphore, Event and Condition from a coroutine: "take it now, or tell me which
// futex word to wait on and the value it holds". The loop then submits IORING_OP_FUTEX_WAIT on
// that word and calls again after the completion, so one thread serves any number of waiters.
//
// Each function mirrors the blocking path's protocol in its own file, so blocking threads,
// coroutines and other processes wait and wake each other on the same words:
// - Lock (mutex.c): the waiter sets MP_MUTEX_WAITERS before it sleeps and, once it has slept,
//   takes the lock with the bit set (others may still sleep). The owner's liveness is checked
//   every OWNER_CHECK_NS, as the blocking path does, by waiting no later than `check_at`.
// - Semaphore (semaphore.c) and Event (event.c): the waiter counts itself in `waiters` (seq_cst),
//   then re-reads the word; the waker changes the word, then reads `waiters`. The registration
//   holds across waits until the waiter takes a permit, sees the set, or leaves.
// - Condition (condition.c): joins `waiters` and reads `seq` under the lock, releases it, waits
//   while `seq` is unchanged, re-acquires the lock, and returns only by taking a token.
// The kernel compares the word with `expected` when the wait starts, so a change between the
// registration and the submission reads as -EAGAIN, never as a lost wake-up.
//
// A waker wakes a bounded number of sleepers for a Lock (one), a Semaphore (n) and a Condition
// (n): a waiter that was woken but leaves (cancelled) without taking what woke it passes the
// wake-up on (mp_async_wait_forward), or one sleeper could sleep on with the lock free.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_async_wait_t) == 32, "mp_async_wait_t is kept by Swift between calls");

/// How often a waiter checks that a Lock's owner still lives (mutex.c uses the same period).
#define OWNER_CHECK_NS (20 * 1000 * 1000)

static inline void wait_on(mp_async_wait_t *w, uint32_t *word, uint32_t expected, uint32_t shared) {
    w->word = word;
    w->expected = expected;
    w->shared = shared;
}

int32_t mp_async_wait_blocking(const mp_async_wait_t *w, int64_t deadline_ns) {
    return mp_futex_wait(w->word, w->expected, deadline_ns, (int)w->shared) == ETIMEDOUT ? ETIMEDOUT : 0;
}

void mp_async_wait_forward(const mp_async_wait_t *w) {
    if (w->word != NULL) mp_futex_wake(w->word, 1, (int)w->shared);
}

// MARK: - Lock

/// As mutex.c's take_from_dead_owner: only one contender wins the CAS from the dead owner's value.
static int take_from_dead_owner(mp_mutex_t *m, uint32_t seen, uint32_t id) {
    int32_t owner = (int32_t)(seen & MP_MUTEX_TID_MASK);
    int alive = (m->flags & MP_MUTEX_PROCESS_OWNED) ? mp_process_alive(owner) : mp_thread_alive(owner);
    if (alive) return 0;
    if (!MP_CAS(&m->word, &seen, id | MP_MUTEX_WAITERS, MP_ACQUIRE, MP_RELAXED)) return 0;
    m->dead_owner = (uint32_t)owner;
    return 1;
}

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
        if (w->check_at == 0) w->check_at = now + OWNER_CHECK_NS;
        if (now >= w->check_at) {
            w->check_at = now + OWNER_CHECK_NS;
            if (take_from_dead_owner(m, v, id)) return MP_OWNER_DIED;
            continue; // the check took time: re-read the word before waiting
        }
        wait_on(w, &m->word, v, m->flags & MP_MUTEX_SHARED);
        w->registered = 1;
        return MP_WAIT;
    }
}

// MARK: - Semaphore

static inline int try_take(mp_semaphore_t *s) {
    uint32_t v = MP_LOAD(&s->value, MP_RELAXED);
    while (v > 0) {
        // acquire: pairs with the release's seq_cst CAS (what the giver wrote is visible)
        if (MP_CAS(&s->value, &v, v - 1, MP_ACQUIRE, MP_RELAXED)) return 1;
    }
    return 0;
}

mp_status_t mp_semaphore_acquire_async(mp_semaphore_t *s, mp_async_wait_t *w) {
    if (!w->registered) {
        if (try_take(s)) return MP_OK;
        MP_ADD(&s->waiters, 1, MP_SEQ_CST); // before re-reading value: pairs with release's read
        w->registered = 1;
    }
    if (MP_LOAD(&s->value, MP_SEQ_CST) > 0 && try_take(s)) {
        MP_SUB(&s->waiters, 1, MP_RELAXED);
        w->registered = 0;
        return MP_OK;
    }
    wait_on(w, &s->value, 0, s->shared);
    return MP_WAIT;
}

void mp_semaphore_async_leave(mp_semaphore_t *s, mp_async_wait_t *w, int woken) {
    if (!w->registered) return;
    MP_SUB(&s->waiters, 1, MP_SEQ_CST);
    w->registered = 0;
    if (woken && MP_LOAD(&s->value, MP_SEQ_CST) > 0) mp_futex_wake(&s->value, 1, (int)s->shared);
}

// MARK: - Event

mp_status_t mp_event_wait_async(mp_event_t *e, mp_async_wait_t *w) {
    if (!w->registered) {
        uint32_t seen = MP_LOAD(&e->word, MP_ACQUIRE); // pairs with set's seq_cst CAS
        if (seen & 1) return MP_OK;
        MP_ADD(&e->waiters, 1, MP_SEQ_CST);
        w->registered = 1;
        wait_on(w, &e->word, seen, e->shared);
    }
    // Any change of the word since the first look is a set (only set changes the count bits).
    if (MP_LOAD(&e->word, MP_SEQ_CST) != w->expected) {
        MP_SUB(&e->waiters, 1, MP_RELAXED);
        w->registered = 0;
        return MP_OK;
    }
    return MP_WAIT;
}

void mp_event_async_leave(mp_event_t *e, mp_async_wait_t *w) {
    if (!w->registered) return;
    MP_SUB(&e->waiters, 1, MP_RELAXED);
    w->registered = 0;
}

// MARK: - Condition (over a Lock)

mp_status_t mp_condition_wait_async_begin(mp_condition_t *c, mp_mutex_t *m, mp_async_wait_t *w) {
    if (mp_mutex_owner(m) == 0) return MP_NOT_HELD;
    c->waiters++; // under the mutex, as condition.c
    w->registered = 1;
    wait_on(w, &c->seq, MP_LOAD(&c->seq, MP_RELAXED), c->shared);
    mp_mutex_unlock(m);
    return MP_WAIT;
}

int mp_condition_async_notified(const mp_condition_t *c, const mp_async_wait_t *w) {
    return MP_LOAD(&c->seq, MP_RELAXED) != w->expected;
}

mp_status_t mp_condition_wait_async_end(mp_condition_t *c, mp_mutex_t *m, mp_async_wait_t *w, int timed_out) {
    if (c->tokens > 0) {
        c->tokens--;
        c->waiters--;
        w->registered = 0;
        return MP_OK;
    }
    if (timed_out) {
        c->waiters--;
        w->registered = 0;
        return MP_TIMED_OUT;
    }
    // Woken by a notify whose tokens others took: wait for the next one, as condition.c does.
    wait_on(w, &c->seq, MP_LOAD(&c->seq, MP_RELAXED), c->shared);
    mp_mutex_unlock(m);
    return MP_WAIT;
}

void mp_condition_async_leave(mp_condition_t *c) {
    c->waiters--;
    if (c->tokens > c->waiters) c->tokens = c->waiters; // a token granted to us has no one to go to
}
