// Counting semaphore (Semaphore, BoundedSemaphore) across threads and processes.
//
// Invariants:
// - `value` (the futex word) is the number of permits, 0...`limit` (<= MP_SEMAPHORE_MAX). It
//   changes only by CAS (take one; give n after checking the limit).
// - `waiters` counts threads inside the sleeping part of acquire. A release calls FUTEX_WAKE only if
//   it reads waiters > 0, so with nobody asleep neither side makes a syscall.
// - The lost-wake-up race is closed Dekker-style: the sleeper increments `waiters` then re-reads
//   `value`; the releaser changes `value` then reads `waiters`. Both pairs are seq_cst, so at least
//   one side sees the other's write; FUTEX_WAIT re-checks `value == 0` in the kernel.
// - A release of n wakes n sleepers. One that dies before it takes its permit leaves the permit
//   with nobody woken for it: sleepers wake every MP_OWNER_CHECK_NS to look at `value` again (a
//   blocking sleep in slices, an awaited one until `check_at`), so a stranded permit is taken
//   within that period.
// Orderings: taking a permit is acquire, giving is release (what the giver wrote before release is
// visible to the taker), as a semaphore used as a lock needs.
#define _GNU_SOURCE
#include "internal.h"

_Static_assert(sizeof(mp_semaphore_t) == 16, "mp_semaphore_t layout is shared between processes");
_Static_assert(offsetof(mp_semaphore_t, value) == 0, "the futex word leads the struct");

void mp_semaphore_init(mp_semaphore_t *s, uint32_t value, uint32_t limit, int shared) {
    s->waiters = 0;
    s->limit = limit > MP_SEMAPHORE_MAX ? MP_SEMAPHORE_MAX : limit;
    s->shared = shared ? 1 : 0;
    MP_STORE(&s->value, value, MP_RELEASE);
}

static inline int try_take(mp_semaphore_t *s, int order) {
    uint32_t v = MP_LOAD(&s->value, MP_RELAXED);
    while (v > 0) {
        if (MP_CAS(&s->value, &v, v - 1, order, MP_RELAXED)) return 1;
    }
    return 0;
}

MP_COLD static mp_status_t acquire_contended(mp_semaphore_t *s, int64_t deadline) {
    for (int spin = 0; spin < MP_SPIN_LIMIT; spin++) {
        if (MP_LOAD(&s->value, MP_RELAXED) > 0 && try_take(s, MP_ACQUIRE)) return MP_OK;
        mp_cpu_relax();
    }
    MP_ADD(&s->waiters, 1, MP_SEQ_CST); // before re-reading value: pairs with release's read
    mp_status_t status = MP_OK;
    for (;;) {
        if (MP_LOAD(&s->value, MP_SEQ_CST) > 0 && try_take(s, MP_ACQUIRE)) break;
        // In slices: a permit whose wake-up went to a waiter that died before taking it wakes
        // nobody else (see the header), so a sleeper looks at `value` again every slice.
        int64_t check = mp_monotonic_ns() + MP_OWNER_CHECK_NS, until = check < deadline ? check : deadline;
        if (mp_futex_wait(&s->value, 0, until, (int)s->shared) == ETIMEDOUT && until == deadline) {
            status = try_take(s, MP_ACQUIRE) ? MP_OK : MP_TIMED_OUT; // a last look: a release may have raced
            break;
        }
    }
    MP_SUB(&s->waiters, 1, MP_RELAXED);
    return status;
}

mp_status_t mp_semaphore_acquire(mp_semaphore_t *s, int64_t deadline) {
    if (MP_LIKELY(try_take(s, MP_ACQUIRE))) return MP_OK;
    if (deadline == MP_NOW) return MP_BUSY;
    return acquire_contended(s, deadline);
}

mp_status_t mp_semaphore_release(mp_semaphore_t *s, uint32_t n) {
    uint32_t limit = s->limit;
    uint32_t v = MP_LOAD(&s->value, MP_RELAXED);
    do {
        if (n > limit || v > limit - n) return MP_OVERFLOW;
    } while (!MP_CAS(&s->value, &v, v + n, MP_SEQ_CST, MP_RELAXED)); // seq_cst: see the header
    if (MP_LOAD(&s->waiters, MP_SEQ_CST) > 0) mp_futex_wake(&s->value, n, (int)s->shared);
    return MP_OK;
}

uint32_t mp_semaphore_value(const mp_semaphore_t *s) { return MP_LOAD(&s->value, MP_RELAXED); }

// MARK: - Awaiting (a coroutine): the waiter counts itself in `waiters` (seq_cst), then re-reads
// the value; the registration holds across waits until it takes a permit or leaves.

mp_status_t mp_semaphore_acquire_async(mp_semaphore_t *s, mp_async_wait_t *w) {
    if (!w->registered) {
        if (try_take(s, MP_ACQUIRE)) return MP_OK;
        MP_ADD(&s->waiters, 1, MP_SEQ_CST); // before re-reading value: pairs with release's read
        w->registered = 1;
    }
    if (MP_LOAD(&s->value, MP_SEQ_CST) > 0 && try_take(s, MP_ACQUIRE)) {
        MP_SUB(&s->waiters, 1, MP_RELAXED);
        w->registered = 0;
        return MP_OK;
    }
    mp_async_wait_on(w, &s->value, 0, s->shared);
    w->check_at = mp_monotonic_ns() + MP_OWNER_CHECK_NS; // a look every slice, as the blocking path
    return MP_WAIT;
}

void mp_semaphore_async_leave(mp_semaphore_t *s, mp_async_wait_t *w, int woken) {
    if (!w->registered) return;
    MP_SUB(&s->waiters, 1, MP_SEQ_CST);
    w->registered = 0;
    if (woken && MP_LOAD(&s->value, MP_SEQ_CST) > 0) mp_futex_wake(&s->value, 1, (int)s->shared);
}
