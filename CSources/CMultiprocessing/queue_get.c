// The queue's consumer side: everything here runs under `consumer` (see queue.c's invariants).
//
// Writes: head (release: the bytes before it have been read), tail_cache, consumed (release, with
// the counting_* announcement before it, see release_record), assembling. Reads: tail (acquire,
// pairs with the producer's release: the record's bytes are visible). A single-record message is
// released and then the lock before the space sleepers are read (unlock_and_wake); PADs, ABORTs
// and fragments wake under the lock, since a producer may be waiting for that space to go on.
#define _GNU_SOURCE
#include "queue_internal.h"

/// With the consumer lock held: waits for the first record of the next message (dropping PADs,
/// ABORTs and stale fragments on the way). On MP_OK the lock stays held (see mp_queue_get_begin);
/// otherwise it is released.
MP_COLD static mp_status_t begin_locked(mp_queue_t *q, int64_t deadline, const void **payload,
                                        uint64_t *length, uint64_t *total) {
    for (;;) {
        if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) break;
        if (!has_data(q, 0)) {
            if (MP_LOAD(&q->shutdown, MP_ACQUIRE)) break; // shut down and drained
            mp_status_t status = mp_queue_wait_until(q, &q->data_seq, &q->data_sleepers, has_data, 0, deadline,
                                                     MP_QUEUE_SHUTDOWN);
            if (status == MP_SHUTDOWN && has_data(q, 0)) continue; // drain what is left first
            if (status != MP_OK) {
                mp_mutex_unlock(&q->consumer);
                return status;
            }
        }
        record_t *r = peek(q);
        if (r->kind == WHOLE) {
            *payload = r + 1;
            *length = *total = r->size;
            return MP_OK; // the lock stays held until mp_queue_get_end
        }
        if (r->kind == FIRST && r->size > sizeof(first_prefix_t)) {
            first_prefix_t prefix;
            memcpy(&prefix, r + 1, sizeof prefix);
            // Announced before anything of it is consumed: its producer resends it if we die after
            // (see queue.c's "Streams"). Release: pairs with the producer's acquire in reader_died.
            MP_STORE(&q->reader, prefix.stream << 32 | (uint32_t)mp_process_id(), MP_RELEASE);
            MP_FAULT_POINT(MP_FAULT_QUEUE_STREAM);
            *total = prefix.total;
            *payload = (const uint8_t *)(r + 1) + sizeof prefix;
            *length = r->size - sizeof prefix;
            q->assembling = 1;
            return MP_OK; // the lock stays held until mp_queue_get_rest
        }
        consume(q, r, 0); // PAD, ABORT, or fragments whose start a dead consumer took
    }
    mp_mutex_unlock(&q->consumer);
    return MP_SHUTDOWN;
}

/// Takes the consumer lock by `deadline`, the slow way; the lock is held on MP_OK.
MP_COLD static mp_status_t lock_consumer(mp_queue_t *q, int64_t deadline) {
    if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) return MP_SHUTDOWN;
    mp_status_t status = lock_by(&q->consumer, deadline);
    if (status == MP_OWNER_DIED) {
        q->assembling = 0; // the dead consumer's message is gone
        status = MP_OK;
    }
    return status;
}

mp_status_t mp_queue_get_begin(mp_queue_t *q, int64_t deadline, const void **payload, uint64_t *length,
                               uint64_t *total) {
    if (MP_LIKELY(try_lock_fast(&q->consumer))) {
        // The straight path: a whole message is there. Relaxed: as in begin_locked (an immediate
        // shutdown discards under this lock, which we now hold).
        if (MP_LIKELY(MP_LOAD(&q->shutdown, MP_RELAXED) != MP_QUEUE_SHUTDOWN_IMMEDIATE && has_data(q, 0))) {
            const record_t *r = peek(q);
            if (MP_LIKELY(r->kind == WHOLE)) {
                *payload = r + 1;
                *length = *total = r->size;
                return MP_OK; // the lock stays held until mp_queue_get_end
            }
        }
    } else {
        mp_status_t status = lock_consumer(q, deadline);
        if (status != MP_OK) return status;
    }
    return begin_locked(q, deadline, payload, length, total);
}

void mp_queue_get_end(mp_queue_t *q) {
    release_record(q, peek(q)->size, 1);
    unlock_and_wake(q, &q->consumer, &q->space_seq, &q->space_sleepers);
}

/// Whether the producer of the fragmented message being read has stopped writing it: the producer
/// lock is free (it gave up at a shutdown, or left it to a later put's ABORT) or its owner is dead.
static int producer_gone(mp_queue_t *q) {
    // Acquire: pairs with the unlock's release, so that if the producer published its last record
    // and then unlocked, the has_data re-check after this call sees that record.
    int32_t owner = (int32_t)(MP_LOAD(&q->producer.word, MP_ACQUIRE) & MP_MUTEX_TID_MASK);
    return owner == 0 || !mp_process_alive(owner);
}

/// Waits for the next fragment of the message being read; 0 if it will never come. Checks the
/// producer every OWNER_CHECK_NS; a plain shutdown lets a live producer finish (and the wait stays
/// asleep meanwhile), an immediate one ends the wait.
static int await_fragment(mp_queue_t *q) {
    for (;;) {
        int64_t check_at = mp_monotonic_ns() + OWNER_CHECK_NS;
        mp_status_t status = mp_queue_wait_until(q, &q->data_seq, &q->data_sleepers, has_data, 0, check_at,
                                                 MP_QUEUE_SHUTDOWN_IMMEDIATE);
        if (status == MP_OK) return 1;
        if (status == MP_SHUTDOWN) return 0;
        if (producer_gone(q)) return has_data(q, 0); // what it published before it went, or a stranger
    }
}

/// Hands back the records of the message being read, from `head` (its FIRST) to `pos`; counts the
/// message the first time (count_taken announces it, so a consumer that dies between the count
/// and the head's move is not counted twice).
static void hand_back(mp_queue_t *q, uint64_t pos, int *counted) {
    if (!*counted) {
        count_taken(q);
        *counted = 1;
    }
    MP_STORE(&q->head, pos, MP_RELEASE); // pairs with the producer's acquire of head
}

mp_status_t mp_queue_get_rest(mp_queue_t *q, void *dest, uint64_t total) {
    // Read ahead of `head` and hand the records back only once the message is whole, so that a
    // consumer killed midway leaves the message where it was. Only when it must wait for more
    // does it hand back what it has read (the producer may need the room), after saying so in
    // `released`; the producer then sees its put through (see queue.c's "Streams").
    record_t *r = peek(q);
    first_prefix_t prefix;
    memcpy(&prefix, r + 1, sizeof prefix);
    uint32_t stream = (uint32_t)prefix.stream;
    uint64_t got = r->size - sizeof prefix;
    memcpy(dest, (const uint8_t *)(r + 1) + sizeof prefix, got);
    uint64_t pos = q->head + record_bytes(r->size);
    int counted = 0;
    MP_FAULT_POINT(MP_FAULT_QUEUE_STREAM);
    mp_status_t status = MP_OK;
    while (got < total) {
        if (q->tail_cache == pos) q->tail_cache = MP_LOAD(&q->tail, MP_ACQUIRE); // pairs with the put's release
        if (q->tail_cache == pos) {
            // Seq_cst store, full barrier, then tail: against the producer's tail store, full barrier,
            // then `released` (stream_once). One of the two sees the other's store.
            MP_STORE(&q->released, stream, MP_SEQ_CST);
            mp_full_barrier();
            q->tail_cache = MP_LOAD(&q->tail, MP_ACQUIRE);
            if (q->tail_cache == pos) {
                hand_back(q, pos, &counted);
                wake_if_sleeping(q, &q->space_seq, &q->space_sleepers);
                MP_FAULT_POINT(MP_FAULT_QUEUE_STREAM);
                if (!await_fragment(q)) {
                    status = MP_ABORTED;
                    break;
                }
            }
        }
        r = (record_t *)(ring(q) + (pos & (q->capacity - 1)));
        if (r->kind == PAD) {
            pos += record_bytes(r->size);
            continue;
        }
        if ((r->kind != MIDDLE && r->kind != LAST) || got + r->size > total) {
            status = MP_ABORTED; // ABORT, or a stranger's record: this message is lost
            break;
        }
        memcpy((uint8_t *)dest + got, r + 1, r->size);
        got += r->size;
        pos += record_bytes(r->size);
        MP_FAULT_POINT(MP_FAULT_QUEUE_STREAM);
    }
    // What was read is handed back, whole message or aborted one (the record that ended an
    // aborted one stays, for the next get to drop).
    hand_back(q, pos, &counted);
    // Handed back whole: the message is this consumer's, as a whole one is after get_end.
    if (status == MP_OK) MP_STORE(&q->delivered, stream, MP_RELEASE); // pairs with stream_delivered
    wake_if_sleeping(q, &q->space_seq, &q->space_sleepers);
    q->assembling = 0;
    mp_mutex_unlock(&q->consumer);
    return status;
}
