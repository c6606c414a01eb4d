// Condition variable over an mp_mutex (Lock or RLock), across threads and processes.
//
// Invariants:
// - Python's promise: notify(n) wakes at most n waiters, and only waiters that were waiting when
//   it was called; one waiting then is never passed over for one that came later. Waiters are in
//   two groups. A new waiter joins the open group (generation `generation`). A notify serves the
//   closed group (`generation - 1`); when that group is empty, or every waiter in it has been
//   granted a notify, the notify closes the open group first (generation + 1), which also makes
//   every waiter of the older group notified: a waiter whose generation is 2 or more behind
//   `generation` returns "notified" without taking anything. So a later waiter can never take a
//   notify granted before it came (it is in the open group, or in a group closed after that
//   notify), and waiters of the closed group, all there before any notify it was granted, may
//   take its notifies in any order.
// - `generation`, the counts and the bumps of the words change only under the mutex, whose
//   acquire and release order them; `closed_tokens` < `closed_waiting`, or both are 0, between
//   calls (a notify that would fill the closed group closes the open one instead).
// - A waiter of generation g reads `seq[g & 1]` under the mutex, releases it, and sleeps while the
//   word is unchanged: a notify after the release bumps the word, and FUTEX_WAIT refuses to sleep
//   on a stale value, so no wake-up is lost. The closed group and the open one use different words,
//   so a notify wakes only waiters it may release.
// - A waiter woken but killed before it takes its notify leaves a token that nobody was woken for;
//   so does a notifier that died between the grant and the wake (it moved the word before the
//   grant). Waiters sleep at most
//   MP_OWNER_CHECK_NS at a time and look at their word again, so such a token reaches another
//   waiter of the group within that period. A waiter killed while it waits stays counted in its
//   group until a notify retires the group (it may absorb one notify, as a dead waiter of Python's
//   multiprocessing.Condition does).
// - With nobody waiting, notify makes no syscall.
// - Garbled counts (another process wrote them) give spurious or missing wake-ups within the
//   waiters' deadlines, never a crash or an endless loop: counts are clamped, and a generation
//   that is neither the open nor the closed one reads as notified (a spurious wake-up).
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>

_Static_assert(sizeof(mp_condition_t) == 32, "mp_condition_t layout is shared between processes");
_Static_assert(offsetof(mp_condition_t, seq) == 0, "the futex words lead the struct");

/// The two waiting counts change under the mutex and are read without it (mp_condition_waiting, a
/// snapshot): every change is a relaxed atomic store, so that the unlocked read is not a data race.
static inline void set_count(uint32_t *count, uint32_t value) { MP_STORE(count, value, MP_RELAXED); }
static inline void drop_one(uint32_t *count) {
    if (*count > 0) set_count(count, *count - 1);
}

void mp_condition_init(mp_condition_t *c, int shared) {
    c->generation = 0;
    set_count(&c->closed_waiting, 0);
    c->closed_tokens = 0;
    set_count(&c->open_waiting, 0);
    c->shared = shared ? 1 : 0;
    c->pad = 0;
    MP_STORE(&c->seq[0], 0, MP_RELAXED);
    MP_STORE(&c->seq[1], 0, MP_RELEASE);
}

uint32_t mp_condition_waiting(const mp_condition_t *c) {
    return MP_LOAD(&c->closed_waiting, MP_RELAXED) + MP_LOAD(&c->open_waiting, MP_RELAXED);
}

/// The word a waiter of generation `g` sleeps on.
static inline uint32_t *word_of(mp_condition_t *c, uint32_t g) { return &c->seq[g & 1]; }

/// Joins the open group (mutex held): the waiter's generation.
static uint32_t join(mp_condition_t *c) {
    set_count(&c->open_waiting, c->open_waiting + 1);
    return c->generation;
}

/// What a waiter of generation `g` finds with the mutex held again: MP_OK (notified; it has left
/// its group), MP_TIMED_OUT (`timed_out`, not notified; it has left its group) or MP_WAIT.
static mp_status_t settle(mp_condition_t *c, uint32_t g, int timed_out) {
    uint32_t behind = c->generation - g;
    if (behind == 1) { // the closed group
        if (c->closed_tokens > 0) {
            c->closed_tokens--;
            drop_one(&c->closed_waiting);
            return MP_OK;
        }
        if (!timed_out) return MP_WAIT;
        drop_one(&c->closed_waiting);
        return MP_TIMED_OUT;
    }
    if (behind == 0) { // the open group: no notify has been granted to it
        if (!timed_out) return MP_WAIT;
        drop_one(&c->open_waiting);
        return MP_TIMED_OUT;
    }
    return MP_OK; // its group was retired: notified (or a garbled generation: a spurious wake-up)
}

/// The end of a blocking sleep slice: the caller's deadline, or the next look at the word.
static inline int64_t slice_end(int64_t deadline) {
    int64_t check = mp_monotonic_ns() + MP_OWNER_CHECK_NS;
    return check < deadline ? check : deadline;
}

mp_status_t mp_condition_wait(mp_condition_t *c, mp_mutex_t *m, int recursive, int64_t deadline) {
    int held = recursive ? mp_mutex_owner(m) == mp_thread_id() && m->depth > 0 : mp_mutex_owner(m) != 0;
    if (!held) return MP_NOT_HELD;
    int owner_died = 0;
    uint32_t g = join(c);
    uint32_t *word = word_of(c, g);
    mp_status_t status;
    for (;;) {
        uint32_t seq = MP_LOAD(word, MP_RELAXED);
        uint32_t depth = recursive ? mp_rmutex_unlock_all(m) : (mp_mutex_unlock(m), 0);
        int timed_out = 0;
        while (MP_LOAD(word, MP_RELAXED) == seq) {
            int64_t until = slice_end(deadline);
            if (mp_futex_wait(word, seq, until, (int)c->shared) == ETIMEDOUT && until == deadline) {
                timed_out = 1;
                break;
            }
        }
        mp_status_t relock = recursive ? mp_rmutex_lock_depth(m, depth) : mp_mutex_lock(m, MP_FOREVER);
        if (relock == MP_OWNER_DIED) owner_died = 1;
        status = settle(c, g, timed_out);
        if (status != MP_WAIT) break;
    }
    return owner_died ? MP_OWNER_DIED : status;
}

/// Closes the open group (mutex held): the closed group's waiters, all granted a notify (or none
/// left), become notified by their generation; the open group's become the closed group.
static void close_open_group(mp_condition_t *c) {
    c->generation++;
    set_count(&c->closed_waiting, c->open_waiting);
    c->closed_tokens = 0;
    set_count(&c->open_waiting, 0);
}

void mp_condition_notify(mp_condition_t *c, uint32_t n) {
    uint32_t woken[2] = {0, 0}; // wake-ups owed on each word
    while (n > 0) {
        if (c->closed_tokens > c->closed_waiting) c->closed_tokens = c->closed_waiting; // garbled
        if (c->closed_tokens == c->closed_waiting) { // the closed group is served (or empty)
            if (c->open_waiting == 0) break;
            close_open_group(c);
        }
        uint32_t idle = c->closed_waiting - c->closed_tokens, k = n < idle ? n : idle;
        uint32_t word = (c->generation - 1) & 1;
        // The word moves before the grant: a notifier killed between the two leaves a spurious
        // wake-up at most, never tokens that sleepers looking at an unchanged word do not see.
        if (woken[word] == 0) MP_ADD(&c->seq[word], 1, MP_RELAXED); // under the mutex (futex compare)
        c->closed_tokens += k;
        n -= k;
        uint32_t *w = &woken[word];
        *w = k > UINT32_MAX - *w ? UINT32_MAX : *w + k;
        // Every waiter of the closed group granted: close the open group now, so that the granted
        // ones read as notified by their generation, and newcomers stay out of the group served.
        if (c->closed_tokens == c->closed_waiting) close_open_group(c);
    }
    for (int i = 0; i < 2; i++) {
        if (woken[i] > 0) mp_futex_wake(&c->seq[i], woken[i] > INT_MAX ? INT_MAX : (int)woken[i], (int)c->shared);
    }
}

// MARK: - Awaiting (a coroutine, over a Lock): joins the open group and reads its word under the
// lock, releases it, waits while the word is unchanged (until `check_at` at the latest, for a
// token whose wake-up went to a waiter that died), re-acquires the lock, and settles as above.
// `target` holds the waiter's generation.

/// Waits on the word of generation `w->target` from its value now, until `check_at` at the latest.
static void await_word(mp_condition_t *c, mp_async_wait_t *w) {
    uint32_t *word = word_of(c, w->target);
    mp_async_wait_on(w, word, MP_LOAD(word, MP_RELAXED), c->shared);
    w->check_at = mp_monotonic_ns() + MP_OWNER_CHECK_NS;
}

mp_status_t mp_condition_wait_async_begin(mp_condition_t *c, mp_mutex_t *m, mp_async_wait_t *w) {
    if (mp_mutex_owner(m) == 0) return MP_NOT_HELD;
    w->target = join(c); // under the mutex, as the blocking wait
    w->registered = 1;
    await_word(c, w);
    mp_mutex_unlock(m);
    return MP_WAIT;
}

int mp_condition_async_notified(const mp_condition_t *c, mp_async_wait_t *w) {
    (void)c;
    if (MP_LOAD(w->word, MP_RELAXED) != w->expected) return 1;
    int64_t now = mp_monotonic_ns();
    if (now >= w->check_at) w->check_at = now + MP_OWNER_CHECK_NS; // looked again: the next look
    return 0;
}

mp_status_t mp_condition_wait_async_end(mp_condition_t *c, mp_mutex_t *m, mp_async_wait_t *w, int timed_out) {
    mp_status_t status = settle(c, w->target, timed_out);
    if (status != MP_WAIT) {
        w->registered = 0;
        return status;
    }
    // Woken by a notify another waiter of its group took: wait for the next, as the blocking wait.
    await_word(c, w);
    mp_mutex_unlock(m);
    return MP_WAIT;
}

void mp_condition_async_leave(mp_condition_t *c, mp_async_wait_t *w) {
    if (!w->registered) return;
    w->registered = 0;
    uint32_t behind = c->generation - w->target;
    if (behind == 1) {
        // Its group's tokens stay for the group's other waiters (a token beyond them is dropped),
        // and the wake-up it may have had goes to one of them.
        drop_one(&c->closed_waiting);
        if (c->closed_tokens > c->closed_waiting) c->closed_tokens = c->closed_waiting;
        if (c->closed_tokens > 0) mp_futex_wake(word_of(c, w->target), 1, (int)c->shared);
    } else if (behind == 0) {
        drop_one(&c->open_waiting);
    } else {
        mp_condition_notify(c, 1); // notified, and cancelled: the notify goes on to the next waiter
    }
}
