// Condition variable over an mp_mutex (Lock or RLock), across threads and processes.
//
// Invariants:
// - `waiters`, `tokens` and the bump of `seq` change only under the mutex, and the mutex's
//   acquire/release orders them; `seq` is read without it by sleepers (atomically).
// - `waiters` counts threads inside wait(); `tokens` <= `waiters` counts wake-ups that notify granted
//   and no waiter has taken yet. notify(n) grants at most n tokens (to idle waiters only), bumps
//   `seq` and wakes n sleepers; a waiter returns "notified" only by taking a token, so at most n
//   waiters return for notify(n), as Python promises. One woken without a token sleeps again.
// - A waiter joins `waiters` and reads `seq` while it still holds the mutex, then sleeps while seq is
//   unchanged: a notify after the release changes seq, and FUTEX_WAIT refuses to sleep on a stale
//   value, so no wake-up is lost.
// - With nobody waiting, notify makes no syscall.
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_condition_t) == 16, "mp_condition_t layout is shared between processes");
_Static_assert(offsetof(mp_condition_t, seq) == 0, "the futex word leads the struct");

void mp_condition_init(mp_condition_t *c, int shared) {
    c->waiters = 0;
    c->shared = shared ? 1 : 0;
    c->tokens = 0;
    MP_STORE(&c->seq, 0, MP_RELEASE);
}

mp_status_t mp_condition_wait(mp_condition_t *c, mp_mutex_t *m, int recursive, int64_t deadline) {
    int held = recursive ? mp_mutex_owner(m) == mp_thread_id() && m->depth > 0 : mp_mutex_owner(m) != 0;
    if (!held) return MP_NOT_HELD;
    int owner_died = 0;
    mp_status_t status;
    c->waiters++;
    for (;;) {
        uint32_t seq = MP_LOAD(&c->seq, MP_RELAXED);
        uint32_t depth = recursive ? mp_rmutex_unlock_all(m) : (mp_mutex_unlock(m), 0);
        int timed_out = 0;
        while (MP_LOAD(&c->seq, MP_RELAXED) == seq) {
            if (mp_futex_wait(&c->seq, seq, deadline, (int)c->shared) == ETIMEDOUT) {
                timed_out = 1;
                break;
            }
        }
        mp_status_t relock = recursive ? mp_rmutex_lock_depth(m, depth) : mp_mutex_lock(m, MP_FOREVER);
        if (relock == MP_OWNER_DIED) owner_died = 1;
        if (c->tokens > 0) {
            c->tokens--;
            status = MP_OK;
            break;
        }
        if (timed_out) {
            status = MP_TIMED_OUT;
            break;
        }
    }
    c->waiters--;
    return owner_died ? MP_OWNER_DIED : status;
}

void mp_condition_notify(mp_condition_t *c, uint32_t n) {
    uint32_t idle = c->waiters - c->tokens;
    if (n == 0 || idle == 0) return;
    if (n > idle) n = idle;
    c->tokens += n;
    MP_ADD(&c->seq, 1, MP_RELAXED); // under the mutex; sleepers rely on the futex compare
    mp_futex_wake(&c->seq, n > INT_MAX ? INT_MAX : n, (int)c->shared);
}

// MARK: - Awaiting (a coroutine, over a Lock): joins `waiters` and reads `seq` under the lock,
// releases it, waits while `seq` is unchanged, re-acquires the lock, and returns only by taking a
// token.

mp_status_t mp_condition_wait_async_begin(mp_condition_t *c, mp_mutex_t *m, mp_async_wait_t *w) {
    if (mp_mutex_owner(m) == 0) return MP_NOT_HELD;
    c->waiters++; // under the mutex, as condition.c
    w->registered = 1;
    mp_async_wait_on(w, &c->seq, MP_LOAD(&c->seq, MP_RELAXED), c->shared);
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
    mp_async_wait_on(w, &c->seq, MP_LOAD(&c->seq, MP_RELAXED), c->shared);
    mp_mutex_unlock(m);
    return MP_WAIT;
}

void mp_condition_async_leave(mp_condition_t *c) {
    c->waiters--;
    if (c->tokens > c->waiters) c->tokens = c->waiters; // a token granted to us has no one to go to
}
