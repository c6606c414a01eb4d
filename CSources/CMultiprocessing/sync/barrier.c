// Barrier across threads and processes: Python's threading.Barrier semantics, in shared memory.
//
// Invariants:
// - `state` is one word: the phase in its low PHASE_BITS, the cycle (resets so far, mod 2^30)
//   above. Phases: FILLING (parties arrive), RELEASING (all arrived; the last runs the action,
//   outside the guard, and nobody passes yet), DRAINING (all arrived, waiters leaving; new
//   arrivals wait for the last to leave), BROKEN (abort(), a timeout, a failed action, or a guard
//   taken over from a dead holder; sticky until reset()).
// - Who writes `state`: under the guard, a wait moves its cycle's phase by a CAS from the word it
//   expects, and reset() swaps in the next cycle, FILLING. Without the guard there are only
//   breaks: abort(), and a party that cannot retake the guard, CAS the word they read to BROKEN of
//   the same cycle. So a break applies to the one cycle it read (a leaver that read its cycle just
//   before a reset cannot break the next), and a guarded CAS that fails found its cycle broken.
// - `count` is the number of callers inside wait() for the current cycle: written under the guard
//   only, read without it by mp_barrier_waiting (relaxed atomics both). The last one out of
//   DRAINING turns the barrier back to FILLING, so one pass's leavers never mix with the next's.
// - reset() empties the barrier: waiters of an older cycle leave without touching `count`. So
//   reset() frees a barrier that a dead party (killed while waiting) left in DRAINING or with a
//   count that can never be reached. As in Python, a reset after the barrier tripped leaves its
//   released parties passed: the reset records in `passed` (guarded) whether the cycle it ended
//   was DRAINING, and a waiter of that cycle reads its bit (32 cycles back; one that slept through
//   more resets reads as broken). Waiters of a cycle reset while filling or releasing are broken.
// - A wait takes the guard by its deadline, or MP_OWNER_CHECK_NS from now if that is later (a live
//   peer may hold it for good: stopped, or named by a garbled word): that is the one step where
//   its timeout cannot break the barrier, since it has not joined. Once joined, it retakes the
//   guard after each sleep by the same bound; one that cannot leaves without it: it breaks its
//   cycle (any phase -> BROKEN) and leaves `count` alone, which a broken cycle never reads again.
// - The guard is process-owned. A wait that takes it over from a dead holder breaks the current
//   cycle, since the holder's change (a count, a phase, a reset) may be half made; reset() rewrites
//   every field, so it carries on. Reads and abort() never take the guard: a holder that is
//   stopped cannot make them wait.
// - `seq` (the futex word) is bumped after every change that a sleeper waits for, with or without
//   the guard (an add with release: bumps never lose one another). A waiter reads `seq` (acquire)
//   BEFORE the state that makes it wait and sleeps while `seq` is unchanged: a change after that
//   read bumps `seq` after it, so the futex compare fails or the wake finds it asleep (no lost
//   wake-up, even for a break made without the guard between the waiter's check and its sleep).
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_barrier_t) == 48, "mp_barrier_t layout is shared between processes");
_Static_assert(offsetof(mp_barrier_t, default_timeout_ns) % 8 == 0, "the default timeout is one aligned word");
_Static_assert(offsetof(mp_barrier_t, guard) == 0, "the guard's futex word leads the struct");
_Static_assert(__atomic_always_lock_free(sizeof(uint32_t), 0), "state, count and seq are lock-free atomics");

enum { FILLING = 0, DRAINING = 1, RELEASING = 2, BROKEN = 3 };
#define PHASE_BITS 2u
#define PHASE_MASK 3u
_Static_assert(BROKEN <= PHASE_MASK && PHASE_MASK == (1u << PHASE_BITS) - 1, "a phase fits its bits");

static inline uint32_t phase_of(uint32_t state) { return state & PHASE_MASK; }
static inline uint32_t cycle_of(uint32_t state) { return state >> PHASE_BITS; }
/// The state word of `cycle` (mod 2^30: the shift drops its top bits) in `phase`.
static inline uint32_t state_word(uint32_t cycle, uint32_t phase) { return cycle << PHASE_BITS | phase; }

void mp_barrier_init(mp_barrier_t *b, uint32_t parties, int shared, uint64_t default_timeout_ns) {
    mp_mutex_init(&b->guard, (shared ? MP_MUTEX_SHARED : 0) | MP_MUTEX_PROCESS_OWNED);
    b->parties = parties;
    b->passed = 0;
    b->reserved = 0;
    b->default_timeout_ns = default_timeout_ns;
    MP_STORE(&b->count, 0, MP_RELAXED);
    MP_STORE(&b->state, state_word(0, FILLING), MP_RELAXED);
    MP_STORE(&b->seq, 0, MP_RELEASE);
}

/// Whether the barrier's futex calls are process-shared (set once, in the guard's flags).
static inline int shared_of(const mp_barrier_t *b) { return (b->guard.flags & MP_MUTEX_SHARED) != 0; }

/// Relaxed: read and CASed without the guard too (see the invariants); a waiter orders it after
/// its read of `seq`, which is acquire.
static inline uint32_t load_state(const mp_barrier_t *b) { return MP_LOAD(&b->state, MP_RELAXED); }
/// Acquire: pairs with the release bump of changed(), so the state read next is the changed one.
static inline uint32_t load_seq(const mp_barrier_t *b) { return MP_LOAD(&b->seq, MP_ACQUIRE); }

/// After a change (see the invariants): bumps `seq` and wakes every sleeper.
static void changed(mp_barrier_t *b) {
    MP_ADD(&b->seq, 1, MP_RELEASE); // orders the change before the bump a waiter reads
    mp_futex_wake(&b->seq, INT_MAX, shared_of(b));
}

/// Moves `cycle` from `from` to `to` (the guard held): 0 if its cycle was broken meanwhile.
static int move(mp_barrier_t *b, uint32_t cycle, uint32_t from, uint32_t to) {
    uint32_t expected = state_word(cycle, from);
    return MP_CAS(&b->state, &expected, state_word(cycle, to), MP_RELAXED, MP_RELAXED);
}

/// Breaks `cycle` (any phase -> BROKEN), with or without the guard: 1 if this call broke it, 0 if
/// it was already broken or is over (reset).
static int break_cycle(mp_barrier_t *b, uint32_t cycle) {
    uint32_t state = load_state(b);
    do {
        if (cycle_of(state) != cycle || phase_of(state) == BROKEN) return 0;
        MP_FAULT_POINT(MP_FAULT_BARRIER_LEAVE);
    } while (!MP_CAS(&b->state, &state, state_word(cycle, BROKEN), MP_RELAXED, MP_RELAXED));
    changed(b);
    return 1;
}

/// Whether cycle `cycle`, ended by a reset, had released its parties (the guard held).
static int reset_after_pass(const mp_barrier_t *b, uint32_t cycle) {
    uint32_t since = (cycle_of(load_state(b)) - cycle) & (UINT32_MAX >> PHASE_BITS); // resets since
    return since >= 1 && since <= 32 && (b->passed >> (cycle & 31) & 1u);
}

/// Takes the guard by `deadline`, or MP_OWNER_CHECK_NS from now if that is later: every party
/// takes the guard after each change, so it is often held for a moment, and a party whose deadline
/// has just passed must still get it to leave cleanly. Whether it did. Taken over from a dead
/// holder, it breaks the current cycle (see the invariants).
static int take_guard(mp_barrier_t *b, int64_t deadline) {
    int64_t floor = mp_monotonic_ns() + MP_OWNER_CHECK_NS;
    mp_status_t taken = mp_mutex_lock(&b->guard, deadline > floor ? deadline : floor);
    if (taken == MP_OWNER_DIED) break_cycle(b, cycle_of(load_state(b)));
    return taken == MP_OK || taken == MP_OWNER_DIED;
}

/// A joined party that cannot retake the guard by its deadline (a live holder that does not let
/// go) leaves without it: it breaks its cycle, as its timeout would. MP_TIMED_OUT, or MP_BROKEN if
/// its cycle was already broken or reset.
static mp_status_t leave_unguarded(mp_barrier_t *b, uint32_t cycle) {
    return break_cycle(b, cycle) ? MP_TIMED_OUT : MP_BROKEN;
}

/// Await outcomes: a change (the guard retaken), the deadline passed (the guard retaken), or the
/// guard not retaken by the deadline (see take_guard).
enum { CHANGED = 0, TIMED_OUT = 1, GUARD_HELD = 2 };

/// With the guard held and `seq` read before the state that made the caller wait: releases the
/// guard, sleeps until `seq` moves on or the deadline, retakes the guard (see take_guard).
static int await_change(mp_barrier_t *b, uint32_t seq, int64_t deadline) {
    mp_mutex_unlock(&b->guard);
    int timed_out = 0;
    while (load_seq(b) == seq) {
        if (mp_futex_wait(&b->seq, seq, deadline, shared_of(b)) == ETIMEDOUT) {
            timed_out = 1;
            break;
        }
    }
    if (!take_guard(b, deadline)) return GUARD_HELD;
    return timed_out ? TIMED_OUT : CHANGED;
}

/// The guard held: counts the caller out of `cycle`; the last out of a pass lets the next fill.
static void leave(mp_barrier_t *b, uint32_t cycle) {
    if (cycle_of(load_state(b)) != cycle) return; // reset: the count is the new cycle's
    uint32_t left = MP_LOAD(&b->count, MP_RELAXED) - 1;
    MP_STORE(&b->count, left, MP_RELAXED);
    if (left == 0 && move(b, cycle, DRAINING, FILLING)) changed(b);
}

mp_status_t mp_barrier_wait(mp_barrier_t *b, int64_t deadline, uint32_t *index, mp_barrier_action_t action,
                            void *context) {
    // Bounded: its holder may be a live process that does not let go (stopped, or named by a
    // garbled word); a dead holder's guard is taken over (see the invariants).
    if (!take_guard(b, deadline)) return MP_TIMED_OUT; // not joined: the barrier is left as it was
    for (int timed_out = 0;;) { // the last pass leaving, or its action running
        uint32_t seq = load_seq(b);
        uint32_t phase = phase_of(load_state(b));
        if (phase != DRAINING && phase != RELEASING) break;
        if (timed_out) {
            mp_mutex_unlock(&b->guard);
            return MP_TIMED_OUT; // the last pass has not drained (a dead party?): reset() frees it
        }
        int waited = await_change(b, seq, deadline);
        if (waited == GUARD_HELD) return MP_TIMED_OUT;
        timed_out = waited == TIMED_OUT;
    }
    uint32_t state = load_state(b);
    if (phase_of(state) == BROKEN) {
        mp_mutex_unlock(&b->guard);
        return MP_BROKEN;
    }
    uint32_t cycle = cycle_of(state);
    *index = MP_LOAD(&b->count, MP_RELAXED);
    MP_STORE(&b->count, *index + 1, MP_RELAXED);
    MP_FAULT_POINT(MP_FAULT_BARRIER_JOINED);
    mp_status_t status = MP_OK;
    if (*index + 1 == b->parties) {
        if (action != NULL) {
            // The action runs before anyone passes, outside the guard (it may ask the barrier how
            // many wait, or abort it). The others keep waiting meanwhile; one whose deadline
            // passes breaks the barrier as in FILLING, so a releasing process killed in the
            // action costs the others their timeouts, or a reset(), never a hang with deadlines.
            if (!move(b, cycle, FILLING, RELEASING)) {
                status = MP_BROKEN; // broken without the guard
            } else {
                mp_mutex_unlock(&b->guard);
                int32_t failed = action(context);
                if (!take_guard(b, deadline)) return leave_unguarded(b, cycle);
                // A failed move: reset, aborted or timed out meanwhile, and nobody passes.
                if (!move(b, cycle, RELEASING, failed ? BROKEN : DRAINING) || failed) status = MP_BROKEN;
            }
        } else if (!move(b, cycle, FILLING, DRAINING)) {
            status = MP_BROKEN;
        }
        changed(b);
    } else {
        for (int timed_out = 0;;) {
            uint32_t seq = load_seq(b);
            state = load_state(b);
            if (cycle_of(state) != cycle || (phase_of(state) != FILLING && phase_of(state) != RELEASING)) break;
            if (timed_out) {
                if (move(b, cycle, phase_of(state), BROKEN)) changed(b); // else broken already
                status = MP_TIMED_OUT;
                break;
            }
            MP_FAULT_POINT(MP_FAULT_BARRIER_SLEEP);
            int waited = await_change(b, seq, deadline);
            if (waited == GUARD_HELD) return leave_unguarded(b, cycle);
            timed_out = waited == TIMED_OUT;
        }
        if (status == MP_OK &&
            (cycle_of(state) != cycle ? !reset_after_pass(b, cycle) : phase_of(state) == BROKEN))
            status = MP_BROKEN;
    }
    leave(b, cycle);
    mp_mutex_unlock(&b->guard);
    return status;
}

void mp_barrier_reset(mp_barrier_t *b) {
    // No deadline, as Python's reset(): a dead holder is taken over (all is rewritten below), a
    // stopped one delays it until it runs again.
    mp_mutex_lock(&b->guard, MP_FOREVER);
    // The count first: a reset killed before its swap leaves the old cycle (which the next taker
    // of the guard breaks), never a new cycle with a stale count.
    MP_STORE(&b->count, 0, MP_RELAXED);
    uint32_t cycle = cycle_of(load_state(b)); // only the phase changes without the guard
    uint32_t ended = __atomic_exchange_n(&b->state, state_word(cycle + 1, FILLING), MP_RELAXED);
    uint32_t bit = 1u << (cycle & 31);
    b->passed = phase_of(ended) == DRAINING ? b->passed | bit : b->passed & ~bit;
    changed(b);
    mp_mutex_unlock(&b->guard);
}

void mp_barrier_abort(mp_barrier_t *b) { break_cycle(b, cycle_of(load_state(b))); }

int mp_barrier_is_broken(mp_barrier_t *b) { return phase_of(load_state(b)) == BROKEN; }

uint32_t mp_barrier_waiting(mp_barrier_t *b) {
    uint32_t phase = phase_of(load_state(b));
    return phase == FILLING || phase == RELEASING ? MP_LOAD(&b->count, MP_RELAXED) : 0; // Python's n_waiting
}
