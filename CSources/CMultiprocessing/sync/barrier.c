// Barrier across threads and processes: Python's threading.Barrier semantics, in shared memory.
//
// Invariants (all fields but `seq` change only under `guard`):
// - `state`: FILLING (parties arrive), DRAINING (all arrived, waiters leaving; new arrivals wait
//   for the last to leave), BROKEN (abort() or a waiter's timeout; sticky until reset()).
// - `count` is the number of callers inside wait() for the current `cycle`. The last one out of
//   DRAINING turns the barrier back to FILLING, so one cycle's leavers never mix with the next's.
// - `cycle` is bumped by reset(), which also empties the barrier: waiters of an older cycle leave
//   with "broken" and do not touch `count`. So reset() frees a barrier that a dead party (a process
//   killed while waiting) left in DRAINING or with a count that can never be reached.
// - `seq` (the futex word) is bumped with every change, under the guard; a waiter reads it under
//   the guard, releases the guard and sleeps while it is unchanged (no lost wake-up).
// The guard is process-owned: if its holder died, the survivor carries on, since the guard protects
// a few integer stores, each of which leaves a state that the next caller can read.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_barrier_t) == 48, "mp_barrier_t layout is shared between processes");
_Static_assert(offsetof(mp_barrier_t, guard) == 0, "the guard's futex word leads the struct");

enum { FILLING = 0, DRAINING = 1, BROKEN = -2 };

void mp_barrier_init(mp_barrier_t *b, uint32_t parties, int shared) {
    mp_mutex_init(&b->guard, (shared ? MP_MUTEX_SHARED : 0) | MP_MUTEX_PROCESS_OWNED);
    b->parties = parties;
    b->count = 0;
    b->state = FILLING;
    b->shared = shared ? 1 : 0;
    b->cycle = 0;
    MP_STORE(&b->seq, 0, MP_RELEASE);
}

static void changed(mp_barrier_t *b) {
    MP_ADD(&b->seq, 1, MP_RELAXED); // under the guard; sleepers rely on the futex compare
    mp_futex_wake(&b->seq, INT_MAX, (int)b->shared);
}

/// With the guard held: releases it, sleeps until the next change or the deadline, retakes it.
/// Returns whether the deadline passed.
static int await_change(mp_barrier_t *b, int64_t deadline) {
    uint32_t seq = MP_LOAD(&b->seq, MP_RELAXED);
    mp_mutex_unlock(&b->guard);
    int timed_out = 0;
    while (MP_LOAD(&b->seq, MP_RELAXED) == seq) {
        if (mp_futex_wait(&b->seq, seq, deadline, (int)b->shared) == ETIMEDOUT) {
            timed_out = 1;
            break;
        }
    }
    mp_mutex_lock(&b->guard, MP_FOREVER);
    return timed_out;
}

mp_status_t mp_barrier_wait(mp_barrier_t *b, int64_t deadline, uint32_t *index) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    while (b->state == DRAINING) {
        if (await_change(b, deadline) && b->state == DRAINING) {
            mp_mutex_unlock(&b->guard);
            return MP_TIMED_OUT; // the previous cycle has not drained (a dead party?): reset() frees it
        }
    }
    if (b->state == BROKEN) {
        mp_mutex_unlock(&b->guard);
        return MP_BROKEN;
    }
    uint32_t cycle = b->cycle;
    mp_status_t status = MP_OK;
    *index = b->count++;
    if (*index + 1 == b->parties) {
        b->state = DRAINING;
        changed(b);
    } else {
        while (b->state == FILLING && b->cycle == cycle) {
            if (await_change(b, deadline) && b->state == FILLING && b->cycle == cycle) {
                b->state = BROKEN;
                changed(b);
                status = MP_TIMED_OUT;
                break;
            }
        }
        if (status == MP_OK && (b->cycle != cycle || b->state == BROKEN)) status = MP_BROKEN;
    }
    if (b->cycle == cycle && --b->count == 0 && b->state == DRAINING) {
        b->state = FILLING;
        changed(b);
    }
    mp_mutex_unlock(&b->guard);
    return status;
}

void mp_barrier_reset(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    b->cycle++;
    b->count = 0;
    b->state = FILLING;
    changed(b);
    mp_mutex_unlock(&b->guard);
}

void mp_barrier_abort(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    b->state = BROKEN;
    changed(b);
    mp_mutex_unlock(&b->guard);
}

int mp_barrier_is_broken(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    int broken = b->state == BROKEN;
    mp_mutex_unlock(&b->guard);
    return broken;
}

uint32_t mp_barrier_waiting(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    uint32_t n = b->state == FILLING ? b->count : 0;
    mp_mutex_unlock(&b->guard);
    return n;
}
