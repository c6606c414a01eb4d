// Barrier across threads and processes: Python's threading.Barrier state machine, in shared memory.
//
// Invariants (all fields but `seq` change only under `guard`):
// - `state`: FILLING (parties arrive), DRAINING (all arrived, waiters leaving; new arrivals wait),
//   RESETTING (reset() while some waited; they leave with "broken"), BROKEN (abort() or a waiter's
//   timeout; sticky until reset()).
// - `count` is the number of callers inside wait(). The last one out of DRAINING or RESETTING turns
//   the barrier back to FILLING, so one cycle's leavers never mix with the next cycle's arrivals.
// - `seq` (the futex word) is bumped with every state change, under the guard; a waiter reads it
//   under the guard, releases the guard, and sleeps while it is unchanged (no lost wake-up).
// If the guard's owner died, the survivor carries on: the guard protects a few integer stores,
// each of which leaves a state that the next caller can read.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_barrier_t) == 48, "mp_barrier_t layout is shared between processes");
_Static_assert(offsetof(mp_barrier_t, guard) == 0, "the guard's futex word leads the struct");

enum { FILLING = 0, DRAINING = 1, RESETTING = -1, BROKEN = -2 };

void mp_barrier_init(mp_barrier_t *b, uint32_t parties, int shared) {
    mp_mutex_init(&b->guard, shared);
    b->parties = parties;
    b->count = 0;
    b->state = FILLING;
    b->shared = shared ? 1 : 0;
    MP_STORE(&b->seq, 0, MP_RELEASE);
}

static void changed(mp_barrier_t *b) {
    MP_ADD(&b->seq, 1, MP_RELAXED); // under the guard; sleepers rely on the futex compare
    mp_futex_wake(&b->seq, INT_MAX, (int)b->shared);
}

/// With the guard held: releases it, sleeps until the next state change or the deadline, retakes it.
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

mp_status_t mp_barrier_wait(mp_barrier_t *b, int64_t timeout_ns, uint32_t *index) {
    int64_t deadline = mp_deadline_after(timeout_ns);
    mp_mutex_lock(&b->guard, MP_FOREVER);
    while (b->state == DRAINING || b->state == RESETTING) await_change(b, INT64_MAX);
    if (b->state == BROKEN) {
        mp_mutex_unlock(&b->guard);
        return MP_BROKEN;
    }
    mp_status_t status = MP_OK;
    *index = b->count++;
    if (*index + 1 == b->parties) {
        b->state = DRAINING;
        changed(b);
    } else {
        while (b->state == FILLING) {
            if (await_change(b, deadline) && b->state == FILLING) {
                b->state = BROKEN;
                changed(b);
                status = MP_TIMED_OUT;
                break;
            }
        }
        if (status == MP_OK && b->state < 0) status = MP_BROKEN;
    }
    if (--b->count == 0 && (b->state == DRAINING || b->state == RESETTING)) {
        b->state = FILLING;
        changed(b);
    }
    mp_mutex_unlock(&b->guard);
    return status;
}

void mp_barrier_reset(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    if (b->count > 0) {
        if (b->state == FILLING || b->state == BROKEN) b->state = RESETTING;
    } else {
        b->state = FILLING;
    }
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
