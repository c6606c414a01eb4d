// Barrier across threads and processes: Python's threading.Barrier semantics, in shared memory.
//
// Invariants (all fields but `seq` and `state` change only under `guard`):
// - `state`: FILLING (parties arrive), RELEASING (all arrived; the last runs the action, outside
//   the guard, and nobody passes yet), DRAINING (all arrived, waiters leaving; new arrivals wait
//   for the last to leave), BROKEN (abort(), a waiter's timeout or a failed action; sticky until
//   reset()).
// - `count` is the number of callers inside wait() for the current `cycle`. The last one out of
//   DRAINING turns the barrier back to FILLING, so one cycle's leavers never mix with the next's.
// - `cycle` is bumped by reset(), which also empties the barrier: waiters of an older cycle leave
//   without touching `count`. So reset() frees a barrier that a dead party (a process killed while
//   waiting) left in DRAINING or with a count that can never be reached. As in Python, a reset after
//   the barrier tripped leaves its released parties passed: the reset records in `passed` whether
//   the cycle it ended was DRAINING, and a waiter of that cycle reads its bit (32 cycles back; a
//   waiter that slept through more resets than that reads as broken). Waiters of a cycle reset
//   while filling or releasing leave with "broken".
// - A wait takes the guard by its deadline, or MP_OWNER_CHECK_NS from now if that is later (a live
//   peer may hold it for good, or a garbled word name one): that is the one step where its timeout
//   cannot break the barrier, since it has not joined. Once joined, it re-takes the guard after
//   each sleep by the same bound; one that cannot (a live holder stopped, or a garbled word) leaves
//   without it: it breaks the barrier with one CAS of `state` (any phase of its cycle -> BROKEN),
//   bumps `seq` and leaves `count` alone, which a broken barrier never reads again (reset() zeroes
//   it). So every guarded change of `state` is a CAS from the value read under the guard: one
//   that fails found BROKEN, the only change made without the guard. (A leaver that read `cycle`
//   just before a reset can break the new cycle: a reset() again frees it.)
// - `seq` (the futex word) is bumped with every change, under the guard; a waiter reads it under
//   the guard, releases the guard and sleeps while it is unchanged (no lost wake-up).
// The guard is process-owned: if its holder died, the survivor carries on, since the guard protects
// a few integer stores, each of which leaves a state that the next caller can read.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_barrier_t) == 48, "mp_barrier_t layout is shared between processes");
_Static_assert(offsetof(mp_barrier_t, default_timeout_ns) % 8 == 0, "the default timeout is one aligned word");
_Static_assert(offsetof(mp_barrier_t, guard) == 0, "the guard's futex word leads the struct");

enum { FILLING = 0, DRAINING = 1, RELEASING = 2, BROKEN = -2 };

void mp_barrier_init(mp_barrier_t *b, uint32_t parties, int shared, uint64_t default_timeout_ns) {
    mp_mutex_init(&b->guard, (shared ? MP_MUTEX_SHARED : 0) | MP_MUTEX_PROCESS_OWNED);
    b->parties = parties;
    b->count = 0;
    b->state = FILLING;
    b->passed = 0;
    b->cycle = 0;
    b->default_timeout_ns = default_timeout_ns;
    MP_STORE(&b->seq, 0, MP_RELEASE);
}

/// Whether the barrier's futex calls are process-shared (set once, in the guard's flags).
static inline int shared_of(const mp_barrier_t *b) { return (b->guard.flags & MP_MUTEX_SHARED) != 0; }

static void changed(mp_barrier_t *b) {
    MP_ADD(&b->seq, 1, MP_RELAXED); // under the guard; sleepers rely on the futex compare
    mp_futex_wake(&b->seq, INT_MAX, shared_of(b));
}

/// Whether cycle `cycle`, ended by a reset, had released its parties (the guard held).
/// `state` and `cycle`, read with a relaxed load: a party that could not take the guard reads
/// both, and CASes `state`, without it (see the invariants); the guard orders everything else.
static inline int32_t state_of(const mp_barrier_t *b) { return MP_LOAD(&b->state, MP_RELAXED); }
static inline uint32_t cycle_of(const mp_barrier_t *b) { return MP_LOAD(&b->cycle, MP_RELAXED); }

static int reset_after_pass(const mp_barrier_t *b, uint32_t cycle) {
    uint32_t since = cycle_of(b) - cycle; // resets since: the bit is the last 32 cycles'
    return since >= 1 && since <= 32 && (b->passed >> (cycle & 31) & 1u);
}

/// Takes the guard by `deadline`, or MP_OWNER_CHECK_NS from now if that is later: every party
/// takes the guard after each change, so it is often held for a moment, and a party whose deadline
/// has just passed must still get it to leave cleanly. Whether it did.
static int take_guard(mp_barrier_t *b, int64_t deadline) {
    int64_t floor = mp_monotonic_ns() + MP_OWNER_CHECK_NS;
    mp_status_t taken = mp_mutex_lock(&b->guard, deadline > floor ? deadline : floor);
    return taken != MP_TIMED_OUT && taken != MP_BUSY; // MP_BUSY: a try (MP_NOW)
}

/// Sets `state` from `from` to `to` (the guard held): 0 if a party that could not take the guard
/// broke the barrier meanwhile.
static int move_state(mp_barrier_t *b, int32_t from, int32_t to) {
    return MP_CAS(&b->state, &from, to, MP_RELAXED, MP_RELAXED); // the guard orders the rest
}

/// A joined party that cannot take the guard by its deadline (a live holder that does not let go)
/// leaves without it: it breaks its cycle (see the invariants), as its timeout would. MP_TIMED_OUT,
/// or MP_BROKEN if the barrier was already broken or reset.
static mp_status_t leave_unguarded(mp_barrier_t *b, uint32_t cycle) {
    int32_t state = state_of(b);
    for (;;) {
        if (cycle_of(b) != cycle || state == BROKEN) return MP_BROKEN;
        if (MP_CAS(&b->state, &state, BROKEN, MP_RELAXED, MP_RELAXED)) break;
    }
    MP_ADD(&b->seq, 1, MP_RELAXED); // wakes the other parties: they leave by their own deadlines
    mp_futex_wake(&b->seq, INT_MAX, shared_of(b));
    return MP_TIMED_OUT;
}

/// Await outcomes: a change (the guard retaken), the deadline passed (the guard retaken), or the
/// guard not retaken by the deadline (see take_guard).
enum { CHANGED = 0, TIMED_OUT = 1, GUARD_HELD = 2 };

/// With the guard held: releases it, sleeps until the next change or the deadline, retakes it by
/// the deadline (see take_guard).
static int await_change(mp_barrier_t *b, int64_t deadline) {
    uint32_t seq = MP_LOAD(&b->seq, MP_RELAXED);
    mp_mutex_unlock(&b->guard);
    int timed_out = 0;
    while (MP_LOAD(&b->seq, MP_RELAXED) == seq) {
        if (mp_futex_wait(&b->seq, seq, deadline, shared_of(b)) == ETIMEDOUT) {
            timed_out = 1;
            break;
        }
    }
    if (!take_guard(b, deadline)) return GUARD_HELD;
    return timed_out ? TIMED_OUT : CHANGED;
}

mp_status_t mp_barrier_wait(mp_barrier_t *b, int64_t deadline, uint32_t *index, mp_barrier_action_t action,
                            void *context) {
    // Bounded: its holder may be a live process that does not let go (stopped, or named by a
    // garbled word); a dead holder's guard is taken over, and the survivor carries on (above).
    if (!take_guard(b, deadline)) return MP_TIMED_OUT; // not joined: the barrier is left as it was
    while (state_of(b) == DRAINING || state_of(b) == RELEASING) { // the last cycle leaving, or its action
        int waited = await_change(b, deadline);
        if (waited == GUARD_HELD) return MP_TIMED_OUT;
        if (waited == TIMED_OUT && (state_of(b) == DRAINING || state_of(b) == RELEASING)) {
            mp_mutex_unlock(&b->guard);
            return MP_TIMED_OUT; // the previous cycle has not drained (a dead party?): reset() frees it
        }
    }
    if (state_of(b) == BROKEN) {
        mp_mutex_unlock(&b->guard);
        return MP_BROKEN;
    }
    uint32_t cycle = cycle_of(b);
    mp_status_t status = MP_OK;
    *index = b->count++;
    if (*index + 1 == b->parties) {
        if (action != NULL) {
            // The action runs before anyone passes, outside the guard (it may ask the barrier how
            // many wait, or abort it). The others keep waiting meanwhile; one whose deadline
            // passes breaks the barrier as in FILLING, so a releasing process killed in the
            // action costs the others their timeouts, or a reset(), never a hang with deadlines.
            if (!move_state(b, FILLING, RELEASING)) {
                status = MP_BROKEN; // a party that could not take the guard broke the barrier
            } else {
                mp_mutex_unlock(&b->guard);
                int32_t failed = action(context);
                if (!take_guard(b, deadline)) return leave_unguarded(b, cycle);
                if (cycle_of(b) != cycle || !move_state(b, RELEASING, failed ? BROKEN : DRAINING)) {
                    status = MP_BROKEN; // reset, aborted or timed out meanwhile: nobody passes
                } else if (failed) {
                    status = MP_BROKEN;
                }
            }
        } else if (!move_state(b, FILLING, DRAINING)) {
            status = MP_BROKEN;
        }
        changed(b);
    } else {
        while ((state_of(b) == FILLING || state_of(b) == RELEASING) && cycle_of(b) == cycle) {
            int waited = await_change(b, deadline);
            if (waited == GUARD_HELD) return leave_unguarded(b, cycle);
            int32_t state = state_of(b);
            if (waited == TIMED_OUT && (state == FILLING || state == RELEASING) && cycle_of(b) == cycle) {
                if (move_state(b, state, BROKEN)) changed(b); // else already broken: nobody passes
                status = MP_TIMED_OUT;
                break;
            }
        }
        if (status == MP_OK && (cycle_of(b) != cycle ? !reset_after_pass(b, cycle) : state_of(b) == BROKEN))
            status = MP_BROKEN;
    }
    if (cycle_of(b) == cycle && --b->count == 0 && move_state(b, DRAINING, FILLING)) changed(b);
    mp_mutex_unlock(&b->guard);
    return status;
}

void mp_barrier_reset(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    uint32_t bit = 1u << (cycle_of(b) & 31);
    b->passed = state_of(b) == DRAINING ? b->passed | bit : b->passed & ~bit;
    MP_STORE(&b->cycle, cycle_of(b) + 1, MP_RELAXED); // read unguarded by a leaver
    b->count = 0;
    MP_STORE(&b->state, FILLING, MP_RELAXED); // a leaver may CAS it (see the invariants)
    changed(b);
    mp_mutex_unlock(&b->guard);
}

void mp_barrier_abort(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    MP_STORE(&b->state, BROKEN, MP_RELAXED); // a leaver may CAS it (see the invariants)
    changed(b);
    mp_mutex_unlock(&b->guard);
}

int mp_barrier_is_broken(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    int broken = state_of(b) == BROKEN;
    mp_mutex_unlock(&b->guard);
    return broken;
}

uint32_t mp_barrier_waiting(mp_barrier_t *b) {
    mp_mutex_lock(&b->guard, MP_FOREVER);
    uint32_t n = state_of(b) == FILLING || state_of(b) == RELEASING ? b->count : 0; // as Python's n_waiting
    mp_mutex_unlock(&b->guard);
    return n;
}
