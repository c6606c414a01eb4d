// Awaiting a Queue from a coroutine: get and put that never block and never spin, and say which
// word to wait on.
//
// The blocking paths (queue.c) hold the consumer (producer) lock while they spin, then sleep, for
// data (space). A coroutine holds neither while it waits, so that thousands can wait on one loop
// thread, and it never spins: its loop's thread runs the loop's other coroutines meanwhile. It
// waits on the lock word while another consumer (producer) holds the lock, and otherwise is
// announced in `data_sleepers` (`space_sleepers`) and waits on `data_seq` (`space_seq`), the words
// a producer (consumer) bumps and wakes after publishing whenever it reads a sleeper: queue.c's
// "Sleeping", with the sleeper's half in announce_sleeper (queue_internal.h), shared with the
// blocking sleep.
//
// The work itself is each side's try step (queue_get_try in queue_get.c, queue_put_try in
// queue_put.c): the lock by its CAS alone, and every wait inside a single look. A try that loses a
// race (the lock taken between our look and our CAS, the message taken by another consumer, the
// room filled by another producer) comes back at once, and the protocol here starts over, ending
// in a wait. A get looks for data without the lock first (tail against head: the get takes
// whatever lies between, PADs and stale records included, so a look that finds something is
// followed by a get that takes it, or consumes what it found); a put checks and announces itself
// under the producer lock with the put's own predicates (queue_put_try), so nothing here mirrors
// the record format.
//
// A lock waiter cannot take the lock with MP_MUTEX_WAITERS set as mutex.c's sleepers do (the try
// steps take it with a plain CAS), so a lock waiter that was woken passes one wake-up on
// (mp_queue_async_after_wait): another sleeper then flags the word again before it sleeps.
#define _GNU_SOURCE
#include "queue_internal.h"

enum { ON_LOCK = 1, ON_DATA = 2, ON_SPACE = 3 };

static inline void wait_on(mp_async_wait_t *w, uint32_t *word, uint32_t expected, uint32_t shared,
                           uint32_t target) {
    mp_async_wait_on(w, word, expected, shared);
    w->target = target;
}

/// Whether the lock's word is not free: the try's CAS (from 0) would fail. Not mp_mutex_owner: a
/// word a peer garbled into flag bits alone (no owner id) is not free either, and a loop that took
/// the owner's 0 for a free lock would retry the failing CAS forever; mp_mutex_await_free takes such
/// a word for a dead owner's, which the blocking path then recovers.
static inline int lock_taken(mp_mutex_t *lock) { return MP_LOAD(&lock->word, MP_RELAXED) != 0; }

/// Announces the caller as a sleeper of `seq` (announce_sleeper) and looks again: MP_WAIT if
/// `ready` still does not hold, the lock (if any) is still free and the queue is not shut down.
static mp_status_t sleep_unless(mp_queue_view_t *v, mp_async_wait_t *w, uint32_t *seq, uint32_t *sleepers,
                                uint32_t target, int (*ready)(mp_queue_view_t *, uint64_t), uint64_t arg,
                                mp_mutex_t *lock /* NULL: none to wait for */) {
    mp_queue_t *q = v->header;
    uint32_t observed = announce_sleeper(v, seq, sleepers);
    if (!ready(v, arg) && (lock == NULL || !lock_taken(lock)) && MP_LOAD(&q->shutdown, MP_SEQ_CST) == 0) {
        wait_on(w, seq, observed, v->shared, target);
        w->registered = 1;
        int64_t cap = v->lanes && target == ON_DATA ? lanes_sleep_cap(v, INT64_MAX) : INT64_MAX;
        w->check_at = cap == INT64_MAX ? 0 : cap; // a lane producer that may not fence: look again soon
        return MP_WAIT;
    }
    MP_SUB(sleepers, 1, MP_RELAXED);
    return MP_OK;
}

static int anything_to_get(mp_queue_view_t *v, uint64_t unused) {
    mp_queue_t *q = v->header;
    (void)unused;
    // acquire: pairs with the producer's release of tail (and the consumer's of head)
    if (MP_LOAD(&q->tail, MP_ACQUIRE) != MP_LOAD(&q->head, MP_ACQUIRE)) return 1;
    return v->lanes && lanes_have_data(v);
}

mp_status_t mp_queue_get_async(mp_queue_view_t *v, mp_async_wait_t *w, const void **payload, uint64_t *length,
                               uint64_t *total) {
    mp_queue_t *q = v->header;
    for (;;) {
        uint32_t down = MP_LOAD(&q->shutdown, MP_ACQUIRE);
        if (down == MP_QUEUE_SHUTDOWN_IMMEDIATE) return MP_SHUTDOWN;
        if (lock_taken(&q->consumer)) {
            mp_status_t s = mp_mutex_await_free(&q->consumer, w);
            if (s == MP_WAIT) w->target = ON_LOCK;
            if (s != MP_OK) return s;
            continue;
        }
        if (!down && !anything_to_get(v, 0)) {
            mp_status_t s =
                sleep_unless(v, w, &q->data_seq, &q->data_sleepers, ON_DATA, anything_to_get, 0, &q->consumer);
            if (s != MP_OK) return s;
            continue;
        }
        mp_status_t s = queue_get_try(v, payload, length, total);
        if (s != MP_TIMED_OUT && s != MP_BUSY) return s; // else another consumer was quicker: look again
    }
}

mp_status_t mp_queue_put_async(mp_queue_view_t *v, mp_async_wait_t *w, const void *data, uint64_t length,
                               int lanes) {
    mp_queue_t *q = v->header;
    int lane = lanes && v->lanes && length == v->slot_size ? lane_of_caller(v, 1) : -1;
    while (lane >= 0) { // the thread's lane (queue_lanes.c): no lock to wait for, only room
        if (MP_LOAD(&q->shutdown, MP_ACQUIRE)) return MP_SHUTDOWN;
        if (!lane_has_room(v, (uint64_t)lane)) {
            mp_status_t s =
                sleep_unless(v, w, &q->space_seq, &q->space_sleepers, ON_SPACE, lane_has_room, (uint64_t)lane, NULL);
            if (s != MP_OK) return s;
            continue;
        }
        mp_status_t s = mp_queue_put(v, data, length, MP_NOW); // the lane's put: one look, no back-off
        if (s != MP_TIMED_OUT) return s;
    }
    for (;;) {
        if (MP_LOAD(&q->shutdown, MP_ACQUIRE)) return MP_SHUTDOWN;
        if (lock_taken(&q->producer)) {
            mp_status_t s = mp_mutex_await_free(&q->producer, w);
            if (s == MP_WAIT) w->target = ON_LOCK;
            if (s != MP_OK) return s;
            continue;
        }
        uint32_t observed;
        mp_status_t s = queue_put_try(v, data, length, &observed);
        if (s == MP_WAIT) { // no room: announced in space_sleepers by the try
            wait_on(w, &q->space_seq, observed, v->shared, ON_SPACE);
            w->registered = 1;
            w->check_at = 0;
            return MP_WAIT;
        }
        if (s != MP_TIMED_OUT && s != MP_BUSY) return s; // else another producer was quicker: look again
    }
}

void mp_queue_async_after_wait(mp_queue_view_t *v, mp_async_wait_t *w, int woken) {
    mp_queue_t *q = v->header;
    if (w->target == ON_LOCK) {
        if (woken) mp_async_wait_forward(w);
    } else if (w->registered) {
        MP_SUB(w->target == ON_DATA ? &q->data_sleepers : &q->space_sleepers, 1, MP_RELAXED);
    }
    w->registered = 0;
    w->target = 0;
}
