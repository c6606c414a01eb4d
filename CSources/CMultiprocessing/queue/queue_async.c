// Awaiting a Queue from a coroutine: get and put that never block, and say which word to wait on.
//
// The blocking paths (queue.c) hold the consumer (producer) lock while they sleep for data
// (space). A coroutine holds neither while it waits, so that thousands can wait on one loop
// thread: it waits on the lock word while another consumer (producer) holds the lock, and
// otherwise registers in `data_sleepers` (`space_sleepers`) and waits on `data_seq` (`space_seq`),
// the words a producer (consumer) bumps and wakes after publishing whenever it reads a sleeper.
// The Dekker pairing is queue.c's: the sleeper reads the sequence word, adds itself (seq_cst),
// fences, then re-checks; the publisher stores, then reads the count behind a full barrier
// (mp_full_barrier, or the lock release's swap that precedes the read: unlock_and_wake in
// queue_internal.h).
// Once the queue looks ready, the real work is queue.c's own mp_queue_get_begin / mp_queue_put
// with a deadline in the past; if a racing consumer (producer) won, the protocol starts over.
//
// A lock waiter cannot take the lock with MP_MUTEX_WAITERS set as mutex.c's sleepers do (queue.c
// takes it with a plain try), so a lock waiter that was woken passes one wake-up on
// (mp_queue_async_after_wait): another sleeper then flags the word again before it sleeps.
//
// The "room" check mirrors queue.c's record format (an 8-byte header and the payload padded to
// 8; a record that does not fit before the end of the ring first pads it out). It must never say
// "no room" when queue.c would find room, or a producer could wait on a queue with space.
#define _GNU_SOURCE
#include "queue_internal.h"

enum { ON_LOCK = 1, ON_DATA = 2, ON_SPACE = 3 };

static inline void wait_on(mp_async_wait_t *w, uint32_t *word, uint32_t expected, uint32_t shared,
                           uint32_t target) {
    mp_async_wait_on(w, word, expected, shared);
    w->target = target;
}

/// Registers as a sleeper of `seq` and re-checks `ready`; MP_WAIT if it still does not hold.
static mp_status_t sleep_unless(mp_queue_view_t *v, mp_async_wait_t *w, uint32_t *seq, uint32_t *sleepers,
                                uint32_t target, int (*ready)(mp_queue_view_t *, uint64_t), uint64_t arg,
                                mp_mutex_t *lock /* NULL: none to wait for */) {
    mp_queue_t *q = v->header;
    uint32_t observed = MP_LOAD(seq, MP_ACQUIRE);
    MP_ADD(sleepers, 1, MP_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); // the re-check below must not pass the increment
    int lanes = v->lanes && target == ON_DATA; // lane producers do not fence: see queue_lanes.c
    if (lanes) lanes_before_sleep(v);
    if (!ready(v, arg) && (lock == NULL || mp_mutex_owner(lock) == 0) && MP_LOAD(&q->shutdown, MP_SEQ_CST) == 0) {
        wait_on(w, seq, observed, v->shared, target);
        w->registered = 1;
        int64_t cap = lanes ? lanes_sleep_cap(v, INT64_MAX) : INT64_MAX;
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

static int room_to_put(mp_queue_view_t *v, uint64_t length) {
    mp_queue_t *q = v->header;
    if (v->max_messages) {
        uint64_t consumed = MP_LOAD(&q->consumed, MP_ACQUIRE);
        uint64_t produced = MP_LOAD(&q->produced, MP_RELAXED);
        if ((int64_t)(produced - consumed) >= (int64_t)v->max_messages) return 0;
    }
    uint64_t tail = MP_LOAD(&q->tail, MP_RELAXED);
    uint64_t head = MP_LOAD(&q->head, MP_ACQUIRE); // pairs with the consumer's release of head
    uint64_t used = tail - head;
    if (used > v->capacity) return 0; // garbled by a peer: no room, as queue_put.c's fits says
    uint64_t offset = offset_of(v, tail);
    uint64_t size = record_bytes(length);
    uint64_t need = offset + size > v->capacity ? (v->capacity - offset) + size : size;
    return v->capacity - used >= need;
}

mp_status_t mp_queue_get_async(mp_queue_view_t *v, mp_async_wait_t *w, const void **payload, uint64_t *length,
                               uint64_t *total) {
    mp_queue_t *q = v->header;
    for (;;) {
        uint32_t down = MP_LOAD(&q->shutdown, MP_ACQUIRE);
        if (down == MP_QUEUE_SHUTDOWN_IMMEDIATE) return MP_SHUTDOWN;
        if (mp_mutex_owner(&q->consumer) != 0) {
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
        mp_status_t s = mp_queue_get_begin(v, 0, payload, length, total);
        if (s != MP_TIMED_OUT) return s; // else another consumer was quicker: look again
    }
}

mp_status_t mp_queue_put_async(mp_queue_view_t *v, mp_async_wait_t *w, const void *data, uint64_t length) {
    mp_queue_t *q = v->header;
    int lane = v->lanes && length == v->slot_size ? lane_of_caller(v, 1) : -1;
    while (lane >= 0) { // the thread's lane (queue_lanes.c): no lock to wait for, only room
        if (MP_LOAD(&q->shutdown, MP_ACQUIRE)) return MP_SHUTDOWN;
        if (!lane_has_room(v, (uint64_t)lane)) {
            mp_status_t s =
                sleep_unless(v, w, &q->space_seq, &q->space_sleepers, ON_SPACE, lane_has_room, (uint64_t)lane, NULL);
            if (s != MP_OK) return s;
            continue;
        }
        mp_status_t s = mp_queue_put(v, data, length, 0);
        if (s != MP_TIMED_OUT) return s;
    }
    for (;;) {
        if (MP_LOAD(&q->shutdown, MP_ACQUIRE)) return MP_SHUTDOWN;
        if (mp_mutex_owner(&q->producer) != 0) {
            mp_status_t s = mp_mutex_await_free(&q->producer, w);
            if (s == MP_WAIT) w->target = ON_LOCK;
            if (s != MP_OK) return s;
            continue;
        }
        if (!room_to_put(v, length)) {
            mp_status_t s =
                sleep_unless(v, w, &q->space_seq, &q->space_sleepers, ON_SPACE, room_to_put, length, &q->producer);
            if (s != MP_OK) return s;
            continue;
        }
        mp_status_t s = mp_queue_put(v, data, length, 0);
        if (s != MP_TIMED_OUT) return s; // else another producer was quicker: look again
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
