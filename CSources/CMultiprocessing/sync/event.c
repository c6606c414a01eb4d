// Event (set, clear, wait) across threads and processes.
//
// Invariants:
// - `word` bit 0 is the flag; bits 1..31 count the sets (wrapping). Only set changes the count, so
//   a waiter that saw the word W with the flag clear knows that any other value means "a set
//   happened": it returns true even if a clear has since lowered the flag again, as Python does.
// - `waiters` counts sleepers; set wakes only if it reads waiters > 0. Dekker pairing as in
//   semaphore.c: the waiter adds itself then re-reads the word, set changes the word then reads
//   waiters, all seq_cst.
// Orderings: set's CAS is seq_cst (a release for what the setter wrote before set()); the waiter's
// loads of `word` are acquire or stronger.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_event_t) == 16, "mp_event_t layout is shared between processes");
_Static_assert(offsetof(mp_event_t, word) == 0, "the futex word leads the struct");

void mp_event_init(mp_event_t *e, int shared) {
    e->waiters = 0;
    e->shared = shared ? 1 : 0;
    e->reserved = 0;
    MP_STORE(&e->word, 0, MP_RELEASE);
}

void mp_event_set(mp_event_t *e) {
    uint32_t w = MP_LOAD(&e->word, MP_RELAXED);
    do {
        if (w & 1) return;
    } while (!MP_CAS(&e->word, &w, (w + 2) | 1, MP_SEQ_CST, MP_RELAXED));
    if (MP_LOAD(&e->waiters, MP_SEQ_CST) > 0) mp_futex_wake(&e->word, INT_MAX, (int)e->shared);
}

void mp_event_clear(mp_event_t *e) { __atomic_fetch_and(&e->word, ~1u, MP_RELEASE); }

int mp_event_is_set(const mp_event_t *e) { return (int)(MP_LOAD(&e->word, MP_ACQUIRE) & 1); }

mp_status_t mp_event_wait(mp_event_t *e, int64_t deadline) {
    uint32_t seen = MP_LOAD(&e->word, MP_ACQUIRE);
    if (seen & 1) return MP_OK;
    if (deadline == MP_NOW) return MP_TIMED_OUT;
    MP_ADD(&e->waiters, 1, MP_SEQ_CST);
    mp_status_t status = MP_OK;
    while (MP_LOAD(&e->word, MP_SEQ_CST) == seen) {
        if (mp_futex_wait(&e->word, seen, deadline, (int)e->shared) == ETIMEDOUT) {
            if (MP_LOAD(&e->word, MP_ACQUIRE) == seen) status = MP_TIMED_OUT;
            break;
        }
    }
    MP_SUB(&e->waiters, 1, MP_RELAXED);
    return status;
}

// MARK: - Awaiting (a coroutine): the waiter counts itself in `waiters` (seq_cst), then re-reads
// the word; the setter changes the word, then reads `waiters`.

mp_status_t mp_event_wait_async(mp_event_t *e, mp_async_wait_t *w) {
    if (!w->registered) {
        uint32_t seen = MP_LOAD(&e->word, MP_ACQUIRE); // pairs with set's seq_cst CAS
        if (seen & 1) return MP_OK;
        MP_ADD(&e->waiters, 1, MP_SEQ_CST);
        w->registered = 1;
        mp_async_wait_on(w, &e->word, seen, e->shared);
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
