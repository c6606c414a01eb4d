// The queue's consumer side: everything here runs under `consumer` (see queue.c's invariants).
//
// Writes: head (release: the bytes before it have been read), tail_cache, consumed (release, with
// the counting_value/counted_end announcement before it, see count_taken), assembling. Reads: tail (acquire,
// pairs with the producer's release: the record's bytes are visible). A single-record message is
// released and then the lock before the space sleepers are read (unlock_and_wake); PADs, ABORTs
// and fragments wake under the lock, since a producer may be waiting for that space to go on.
#define _GNU_SOURCE
#include "queue_internal.h"

/// The next message's first record, checked (read_record), the consumer lock held: MP_OK with its
/// copied header in `*r` and its place in `*at`, MP_CORRUPTED (the lock released), or -1 when
/// there is none. Positions come from `head` (ours, though a peer can write it) and `tail_cache`.
static inline __attribute__((always_inline)) int next_record(mp_queue_view_t *v, record_t *r, const uint8_t **at) {
    mp_queue_t *q = v->header;
    if (!has_data(v, 0)) return -1;
    uint64_t head = q->head, tail = q->tail_cache;
    if (MP_UNLIKELY(!read_record(v, head, head, tail, r))) {
        mp_mutex_unlock(&q->consumer);
        return corrupted(v);
    }
    *at = v->ring + offset_of(v, head);
    v->held_at = head; // mp_queue_get_rest starts here: `head` itself may be rewritten meanwhile
    return MP_OK;
}

/// Takes the next message of lane `i` (the consumer lock held) into the view's `lane_copy`, where
/// the caller reads it as it reads a held record. A lane's messages are taken by CAS, by straight
/// gets without the lock too (mp_queue_straight.h), so this one is taken now, not at get_end: MP_OK
/// (the lock stays held until mp_queue_get_end), MP_BUSY (the lane was emptied meanwhile: pick
/// again), MP_CORRUPTED (its positions are impossible; the lock is still held).
static inline mp_status_t hold_lane(mp_queue_view_t *v, int i, const void **payload, uint64_t *length,
                                    uint64_t *total) {
    uint64_t taken = lane_take(v, (uint32_t)i, (uint8_t *)v->lane_copy, 0, 1);
    if (taken == UINT64_MAX) return MP_CORRUPTED;
    if (taken == 0) return MP_BUSY;
    v->held_lane = 1;
    v->held = v->slot_size;
    *payload = v->lane_copy;
    *length = *total = v->slot_size;
    return MP_OK;
}

/// Ends a batch that read ahead of `head` (mp_queue_get_next): counts its `counted` messages and
/// hands back its records up to `end` at once (one announcement, one move of `head`), so that a
/// consumer killed before that has taken none of them (as get_ring_copies, for fixed-size ones).
static void hand_back_batch(mp_queue_view_t *v, uint64_t end, uint64_t counted) {
    mp_queue_t *q = v->header;
    if (counted > 0) announce_count(v, counted, end);
    MP_FAULT_POINT(MP_FAULT_QUEUE_COUNTED);
    MP_STORE(&q->head, end, MP_RELEASE); // pairs with the producer's acquire of head
    v->batching = 0;
}

/// Consumes the message held: a single record (`head` moves past it), a batch's records up to and
/// including it, or nothing more for a lane's, which hold_lane took.
static inline void release_held(mp_queue_view_t *v) {
    // A ring record is the likely case (a lane's messages mostly go by the straight path, with no
    // lock): without the hint the compiler moved the record's release out of mp_queue_get_end into
    // a cold function, a call on every get.
    if (MP_LIKELY(v->held_lane < 0)) {
        if (MP_UNLIKELY(v->batching))
            hand_back_batch(v, v->held_at + record_bytes(v->held), v->batch_counted + !v->batch_recovering);
        else
            release_record(v, (uint32_t)v->held, 1);
    } else {
        v->held_lane = -1;
    }
}

/// With the consumer lock held: waits for the first record of the next message (dropping PADs,
/// ABORTs and stale fragments on the way). On MP_OK the lock stays held (see mp_queue_get_begin);
/// otherwise it is released. Each record is checked before use (read_record). Past the deadline it
/// drops at most as many records as a ring can hold (capacity / 8): enough for whatever was there
/// at the deadline, and a bound on a peer that keeps writing PADs or moves `head` back.
MP_COLD static mp_status_t begin_locked(mp_queue_view_t *v, int64_t deadline, const void **payload,
                                        uint64_t *length, uint64_t *total) {
    mp_queue_t *q = v->header;
    uint64_t late = 0;
    for (;;) {
        if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) break;
        if (v->lanes) {
            int lane = lane_pick(v, 1);
            mp_status_t held = lane >= 0 ? hold_lane(v, lane, payload, length, total) : MP_BUSY;
            if (held == MP_OK) return MP_OK; // the lock stays held until mp_queue_get_end
            if (lane == -2 || held == MP_CORRUPTED) {
                mp_mutex_unlock(&q->consumer);
                return corrupted(v);
            }
            if (lane >= 0) continue; // a straight get emptied it first: pick again
        }
        if (!has_data(v, 0)) {
            if (v->lanes && lanes_have_data(v)) continue;
            if (MP_LOAD(&q->shutdown, MP_ACQUIRE)) break; // shut down and drained
            mp_status_t status = mp_queue_wait_until(v, &q->data_seq, &q->data_sleepers, has_any, 0, deadline,
                                                     MP_QUEUE_SHUTDOWN);
            if (status == MP_SHUTDOWN && has_any(v, 0)) continue; // drain what is left first
            if (status != MP_OK) {
                mp_mutex_unlock(&q->consumer);
                return status;
            }
        }
        record_t r;
        const uint8_t *at;
        int found = next_record(v, &r, &at);
        if (found == MP_CORRUPTED) return MP_CORRUPTED;
        if (found != MP_OK) continue;
        if (r.kind == WHOLE) {
            v->held = r.size;
            *payload = at + sizeof r;
            *length = *total = r.size;
            return MP_OK; // the lock stays held until mp_queue_get_end
        }
        if (r.kind == FIRST) {
            first_prefix_t prefix;
            memcpy(&prefix, at + sizeof r, sizeof prefix);
            uint64_t first = r.size - sizeof prefix;
            if (prefix.total <= first || prefix.total > v->max_message) {
                mp_mutex_unlock(&q->consumer);
                return corrupted(v);
            }
            // Announced before anything of it is consumed: its producer resends it if we die after
            // (see queue.c's "Streams"). Release: pairs with the producer's acquire in reader_died.
            MP_STORE(&q->reader, prefix.stream << 32 | (uint32_t)mp_process_id(), MP_RELEASE);
            MP_FAULT_POINT(MP_FAULT_QUEUE_STREAM);
            v->held = r.size;
            *total = prefix.total;
            *payload = at + sizeof r + sizeof prefix;
            *length = first;
            q->assembling = 1;
            return MP_OK; // the lock stays held until mp_queue_get_rest
        }
        consume(v, &r, 0); // PAD, ABORT, or fragments whose start a dead consumer took
        if (deadline != INT64_MAX && mp_monotonic_ns() >= deadline && ++late > v->capacity / sizeof r) {
            mp_mutex_unlock(&q->consumer);
            return MP_TIMED_OUT;
        }
    }
    mp_mutex_unlock(&q->consumer);
    return MP_SHUTDOWN;
}

/// Takes the consumer lock by `deadline`, the slow way; the lock is held on MP_OK.
MP_COLD static mp_status_t lock_consumer(mp_queue_view_t *v, int64_t deadline) {
    mp_queue_t *q = v->header;
    if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) return MP_SHUTDOWN;
    mp_status_t status = lock_by(&q->consumer, deadline);
    if (status == MP_OWNER_DIED) {
        q->assembling = 0; // the dead consumer's message is gone
        status = MP_OK;
    }
    return status;
}

/// mp_queue_get_begin once its fast CAS took the consumer lock: the straight path (a whole message
/// is there), else begin_locked.
static inline __attribute__((always_inline)) mp_status_t begin_taken(mp_queue_view_t *v, int64_t deadline,
                                                                     const void **payload, uint64_t *length,
                                                                     uint64_t *total) {
    mp_queue_t *q = v->header;
    // Relaxed: as in begin_locked (an immediate shutdown discards under this lock, which we hold).
    if (MP_LIKELY(MP_LOAD(&q->shutdown, MP_RELAXED) != MP_QUEUE_SHUTDOWN_IMMEDIATE)) {
        if (v->lanes) {
            int lane = lane_pick_fast(v);
            mp_status_t held = lane >= 0 ? hold_lane(v, lane, payload, length, total) : MP_BUSY;
            if (MP_LIKELY(held == MP_OK)) return MP_OK; // the lock stays held until mp_queue_get_end
            if (lane == -2 || held == MP_CORRUPTED) {
                mp_mutex_unlock(&q->consumer);
                return corrupted(v);
            }
            if (lane >= 0) return begin_locked(v, deadline, payload, length, total); // emptied first: pick again
        }
        record_t r;
        const uint8_t *at;
        int found = next_record(v, &r, &at);
        if (MP_LIKELY(found == MP_OK && r.kind == WHOLE)) {
            v->held = r.size;
            *payload = at + sizeof r;
            *length = *total = r.size;
            return MP_OK; // the lock stays held until mp_queue_get_end
        }
        if (found == MP_CORRUPTED) return MP_CORRUPTED;
    }
    return begin_locked(v, deadline, payload, length, total);
}

mp_status_t mp_queue_get_begin(mp_queue_view_t *v, int64_t deadline, const void **payload, uint64_t *length,
                               uint64_t *total) {
    mp_queue_t *q = v->header;
    if (MP_UNLIKELY(MP_LOAD(&v->corrupted, MP_RELAXED))) return MP_CORRUPTED;
    if (MP_LIKELY(try_lock_fast(&q->consumer))) return begin_taken(v, deadline, payload, length, total);
    mp_status_t status = lock_consumer(v, deadline);
    if (status != MP_OK) return status;
    return begin_locked(v, deadline, payload, length, total);
}

mp_status_t queue_get_try(mp_queue_view_t *v, const void **payload, uint64_t *length, uint64_t *total) {
    mp_queue_t *q = v->header;
    if (MP_UNLIKELY(MP_LOAD(&v->corrupted, MP_RELAXED))) return MP_CORRUPTED;
    if (!try_lock_fast(&q->consumer)) return MP_BUSY;
    return begin_taken(v, MP_NOW, payload, length, total); // every wait in it one look
}

// Noinline: the toolchain's clang splits "cold" blocks out of a function into another (hot/cold
// splitting), and took the record's release, which every get of the ring runs, for one: a call on
// every get. A noinline function is never split (it is called from Swift, never inlined anyway).
__attribute__((noinline)) void mp_queue_get_end(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    release_held(v);
    unlock_and_wake(v, &q->consumer, &q->space_seq, &q->space_sleepers);
}

/// mp_queue_get_next on a queue without lanes: the batch reads each next record ahead of `head`,
/// where the caller reads it, and counts and hands back all of them once, when it ends (here,
/// mp_queue_get_end or mp_queue_get_leave), so that a consumer killed anywhere in a batch has taken
/// none of it: the next consumer reads them again, and counts each once. A batch that begins on a
/// dead consumer's counted records takes them uncounted and ends with them (see get_ring_copies).
static int get_next_ahead(mp_queue_view_t *v, const void **payload, uint64_t *length) {
    mp_queue_t *q = v->header;
    if (!v->batching) { // its first call: the message held is at `head` (next_record)
        v->batching = 1;
        v->batch_from = v->held_at;
        v->batch_recovering = (uint32_t)counted_already(v);
        v->batch_counted = 0;
    }
    v->batch_counted += !v->batch_recovering; // the message held is taken
    uint64_t from = v->batch_from, pos = v->held_at + record_bytes(v->held);
    // PADs are passed on the way; at most a ring's worth of records, whatever a peer writes.
    for (uint64_t n = 0; n <= v->capacity / sizeof(record_t); n++) {
        if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) break;
        // Positions never wrap (64 bits): a signed difference orders them.
        if (v->batch_recovering && (int64_t)(pos - q->counted_end) >= 0) break;
        if (q->tail_cache == pos) {
            q->tail_cache = MP_LOAD(&q->tail, MP_ACQUIRE); // pairs with the producer's release of tail
            if (q->tail_cache == pos) break;
        }
        record_t r;
        if (MP_UNLIKELY(!read_record(v, pos, from, q->tail_cache, &r))) {
            corrupted(v); // the messages taken so far are whole; the next call reports it
            break;
        }
        if (r.kind == PAD) {
            pos += record_bytes(r.size);
            continue;
        }
        if (r.kind != WHOLE) break; // an ABORT or a fragmented message: the single get's job
        v->held_at = pos;
        v->held = r.size;
        *payload = v->ring + offset_of(v, pos) + sizeof r;
        *length = r.size;
        return 1; // the lock stays held
    }
    hand_back_batch(v, pos, v->batch_counted);
    unlock_and_wake(v, &q->consumer, &q->space_seq, &q->space_sleepers);
    return 0;
}

int mp_queue_get_next(mp_queue_view_t *v, const void **payload, uint64_t *length) {
    mp_queue_t *q = v->header;
    if (!v->lanes && v->held_lane < 0) return get_next_ahead(v, payload, length);
    // With lanes, each message is counted and released on its own (an announcement of one record
    // here): a consumer killed midway has taken the ones before, as after a get that returned. The
    // wake-up check waits for the unlock: one for the whole batch.
    release_held(v);
    // PADs are dropped on the way; at most a ring's worth, whatever a peer writes.
    for (uint64_t n = 0; n <= v->capacity / sizeof(record_t); n++) {
        if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) break;
        // Ring records only: a lane's message would be taken before the caller could leave it
        // (mp_queue_get_leave), and a lane queue's batches go through mp_queue_get_copies.
        if (!has_data(v, 0)) break;
        record_t r;
        uint64_t head = q->head;
        if (MP_UNLIKELY(!read_record(v, head, head, q->tail_cache, &r))) {
            corrupted(v); // the messages taken so far are whole; the next call reports it
            break;
        }
        if (r.kind == PAD) {
            release_record(v, r.size, 0);
            continue;
        }
        if (r.kind != WHOLE) break; // an ABORT or a fragmented message: the single get's job
        v->held = r.size;
        *payload = v->ring + offset_of(v, head) + sizeof r;
        *length = r.size;
        return 1; // the lock stays held
    }
    unlock_and_wake(v, &q->consumer, &q->space_seq, &q->space_sleepers);
    return 0;
}

/// Copies out the run of whole `size`-byte records at `pos` (at most `max`), a position at or after
/// `head` (a batch reads ahead of it); the caller counts them and hands them back. It stops at the
/// first record that is not one (a PAD, a message of another size, a garbled header), which the
/// record-by-record path then reads. The run lies in [pos, tail_cache), within a ring of `head`,
/// and before the ring's end, so its records' places need no check: only each header, which a
/// peer may have written.
static inline uint64_t copy_fixed_run(mp_queue_view_t *v, uint64_t head, uint64_t pos, uint8_t *out, uint64_t size,
                                      uint64_t stride, uint64_t max) {
    mp_queue_t *q = v->header;
    uint64_t bytes = record_bytes(size), waiting = q->tail_cache - pos;
    if (((head | pos) & 7) != 0 || q->tail_cache - head > v->capacity || waiting > q->tail_cache - head) return 0;
    uint64_t n = waiting / bytes, before_end = (v->capacity - offset_of(v, pos)) / bytes;
    if (before_end < n) n = before_end;
    if (max < n) n = max;
    const uint8_t *at = v->ring + offset_of(v, pos);
    uint64_t k = 0;
    for (; k < n; k++, at += bytes, out += stride) {
        record_t r;
        memcpy(&r, at, sizeof r);
        if (r.kind != WHOLE || r.size != size) break;
        if (size == 8) memcpy(out, at + sizeof r, 8); // the commonest element: a constant-size move
        else copy_bytes(out, at + sizeof r, size);
    }
    return k;
}

/// copy_fixed_run at `head`, then the run counted and handed back at once (one announcement, one
/// move of `head`: a consumer killed before that has taken none of them). 0 while the records at
/// `head` are a dead consumer's counted ones: the record-by-record path takes them, uncounted.
static inline uint64_t take_fixed_run(mp_queue_view_t *v, uint8_t *out, uint64_t size, uint64_t stride,
                                      uint64_t max) {
    mp_queue_t *q = v->header;
    uint64_t head = q->head;
    if (counted_already(v)) return 0;
    uint64_t k = copy_fixed_run(v, head, head, out, size, stride, max);
    if (k > 0) {
        count_taken(v, k, head + k * record_bytes(size));
        MP_STORE(&q->head, head + k * record_bytes(size), MP_RELEASE); // pairs with the producer's acquire of head
    }
    return k;
}

/// mp_queue_get_copies on a queue without lanes: the whole batch, the held message included, is
/// read ahead of `head`, then counted and handed back at once at the end (one announcement, one
/// move of `head`), so that a consumer killed anywhere before that has taken none of it: the next
/// consumer reads the batch's messages again, and counts each once. (A lane's messages are taken
/// one CAS at a time, so a queue with lanes hands back as it goes: see mp_queue_get_copies.)
static uint64_t get_ring_copies(mp_queue_view_t *v, uint8_t *out, uint64_t size, uint64_t stride, uint64_t max) {
    mp_queue_t *q = v->header;
    uint64_t head = q->head, pos = head + record_bytes(v->held); // past the held record (begin checked it)
    // The records before `counted_end` were counted by a consumer that died before it moved `head`:
    // this batch takes them again, uncounted, and ends where they end. Announcing a count of the
    // ones after them while they are still at `head` would count them twice if this consumer died
    // in the middle of the announcement (its value stored, `consumed` not yet).
    int recovering = counted_already(v);
    uint64_t fresh = q->counted_end, counted = !recovering, got = 0;
    while (got < max && MP_LOAD(&q->shutdown, MP_RELAXED) != MP_QUEUE_SHUTDOWN_IMMEDIATE) {
        // Positions never wrap (64 bits): a signed difference orders them.
        if (recovering && (int64_t)(pos - fresh) >= 0) break;
        if (q->tail_cache == pos) {
            q->tail_cache = MP_LOAD(&q->tail, MP_ACQUIRE); // pairs with the producer's release of tail
            if (q->tail_cache == pos) break;
        }
        if (!recovering) {
            uint64_t run = copy_fixed_run(v, head, pos, out + got * stride, size, stride, max - got);
            if (run > 0) {
                pos += run * record_bytes(size);
                counted += run;
                got += run;
                continue;
            }
        }
        record_t r;
        if (MP_UNLIKELY(!read_record(v, pos, head, q->tail_cache, &r))) {
            corrupted(v); // the messages read so far are whole: handed back below
            break;
        }
        if (r.kind != PAD && (r.kind != WHOLE || r.size != size)) break; // left for a single get
        if (r.kind == WHOLE) {
            copy_bytes(out + got * stride, v->ring + offset_of(v, pos) + sizeof r, size);
            counted += !recovering;
            got++;
        }
        pos += record_bytes(r.size);
    }
    if (counted > 0) announce_count(v, counted, pos);
    MP_FAULT_POINT(MP_FAULT_QUEUE_COUNTED);
    MP_STORE(&q->head, pos, MP_RELEASE); // pairs with the producer's acquire of head
    unlock_and_wake(v, &q->consumer, &q->space_seq, &q->space_sleepers);
    return got;
}

uint64_t mp_queue_get_copies(mp_queue_view_t *v, void *buffer, uint64_t size, uint64_t stride, uint64_t max) {
    mp_queue_t *q = v->header;
    if (!v->lanes) return get_ring_copies(v, buffer, size, stride, max);
    // With lanes, each message is handed back as it is taken (a lane's by its CAS, the ring's by
    // run or by record): a consumer killed midway has taken the ones before, as after a get that
    // returned.
    release_held(v);
    uint8_t *out = buffer;
    uint64_t got = 0;
    while (got < max && MP_LOAD(&q->shutdown, MP_RELAXED) != MP_QUEUE_SHUTDOWN_IMMEDIATE) {
        if (v->lanes && v->slot_size == size) {
            int lane = lane_pick_fast(v);
            if (lane == -2) {
                corrupted(v);
                break;
            }
            if (lane >= 0) {
                // A run of the lane's slots, within the lane's turn: one CAS of `head` for all.
                struct mp_queue_lanes *a = v->lanes;
                uint32_t budget = MP_LOAD(&a->budget, MP_RELAXED);
                uint64_t turn = (uint64_t)(budget < LANE_BUDGET ? budget : LANE_BUDGET) + 1; // the pick took one
                uint64_t n = lane_take(v, (uint32_t)lane, out + got * stride, stride, turn < max - got ? turn : max - got);
                if (n == UINT64_MAX) {
                    corrupted(v);
                    break;
                }
                uint32_t more = n > 1 ? (uint32_t)(n - 1) : 0; // beyond the one the pick counted
                if (more) MP_STORE(&a->budget, budget > more ? budget - more : 0, MP_RELAXED);
                got += n; // 0: a straight get emptied it first; the pick looks again
                continue;
            }
        }
        if (!has_data(v, 0)) break;
        uint64_t run = take_fixed_run(v, out + got * stride, size, stride, max - got);
        if (run > 0) {
            got += run;
            continue;
        }
        record_t r;
        uint64_t head = q->head;
        if (MP_UNLIKELY(!read_record(v, head, head, q->tail_cache, &r))) {
            corrupted(v);
            break;
        }
        if (r.kind == PAD) {
            release_record(v, r.size, 0);
            continue;
        }
        if (r.kind != WHOLE || r.size != size) break; // left for a single get (pieces, another type)
        copy_bytes(out + got * stride, v->ring + offset_of(v, head) + sizeof r, size);
        release_record(v, r.size, 1);
        got++;
    }
    unlock_and_wake(v, &q->consumer, &q->space_seq, &q->space_sleepers);
    return got;
}

void mp_queue_get_leave(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    // A ring record stays where it is, for the next get (get_next holds no lane message); a batch
    // that read ahead hands back the records before it.
    if (v->batching) hand_back_batch(v, v->held_at, v->batch_counted);
    v->held_lane = -1;
    unlock_and_wake(v, &q->consumer, &q->space_seq, &q->space_sleepers); // the batch before it freed room
}

/// Whether the producer of the fragmented message being read has stopped writing it: the producer
/// lock is free (it gave up at a shutdown, or left it to a later put's ABORT) or its owner is dead.
static int producer_gone(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    // Acquire: pairs with the unlock's release, so that if the producer published its last record
    // and then unlocked, the has_data re-check after this call sees that record.
    int32_t owner = (int32_t)(MP_LOAD(&q->producer.word, MP_ACQUIRE) & MP_MUTEX_TID_MASK);
    return owner == 0 || !mp_process_alive(owner);
}

/// Waits for the next fragment of the message being read; 0 if it will never come. Checks the
/// producer every MP_OWNER_CHECK_NS; a plain shutdown lets a live producer finish (and the wait stays
/// asleep meanwhile), an immediate one ends the wait.
static int await_fragment(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    for (;;) {
        int64_t check_at = mp_monotonic_ns() + MP_OWNER_CHECK_NS;
        mp_status_t status = mp_queue_wait_until(v, &q->data_seq, &q->data_sleepers, has_data, 0, check_at,
                                                 MP_QUEUE_SHUTDOWN_IMMEDIATE);
        if (status == MP_OK) return 1;
        if (status == MP_SHUTDOWN) return 0;
        if (producer_gone(v)) return has_data(v, 0); // what it published before it went, or a stranger
    }
}

/// Hands back the records of the message being read, from `head` (its FIRST) to `pos`; counts the
/// message the first time (count_taken announces it, so a consumer that dies between the count
/// and the head's move is not counted twice).
static void hand_back(mp_queue_view_t *v, uint64_t pos, int *counted) {
    mp_queue_t *q = v->header;
    if (!*counted) {
        count_taken(v, 1, q->head + sizeof(record_t)); // the FIRST alone: at `head` still
        *counted = 1;
    }
    MP_STORE(&q->head, pos, MP_RELEASE); // pairs with the producer's acquire of head
}

mp_status_t mp_queue_get_rest(mp_queue_view_t *v, void *dest, uint64_t total) {
    mp_queue_t *q = v->header;
    // Read ahead of `head` and hand the records back only once the message is whole, so that a
    // consumer killed midway leaves the message where it was. Only when it must wait for more
    // does it hand back what it has read (the producer may need the room), after saying so in
    // `released`; the producer then sees its put through (see queue.c's "Streams").
    // `base` is the head as this consumer set it (the FIRST's place, then each hand-back): the
    // published span that each record is checked against is [base, tail). The FIRST's place is the
    // one mp_queue_get_begin checked, kept in the view: `head` is shared memory, and a peer that
    // rewrote it since would otherwise move the FIRST's copy anywhere, past the ring's end too.
    uint64_t base = v->held_at;
    const uint8_t *first = v->ring + offset_of(v, base);
    first_prefix_t prefix;
    memcpy(&prefix, first + sizeof(record_t), sizeof prefix);
    uint32_t stream = (uint32_t)prefix.stream;
    uint64_t got = v->held - sizeof prefix; // checked at begin: the FIRST's size, below `total`
    memcpy(dest, first + sizeof(record_t) + sizeof prefix, got);
    uint64_t pos = base + record_bytes(v->held);
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
                hand_back(v, pos, &counted);
                base = pos;
                wake_if_sleeping(v, &q->space_seq, &q->space_sleepers);
                MP_FAULT_POINT(MP_FAULT_QUEUE_STREAM);
                if (!await_fragment(v)) {
                    status = MP_ABORTED;
                    break;
                }
            }
        }
        record_t r;
        if (!read_record(v, pos, base, q->tail_cache, &r)) {
            status = corrupted(v);
            break;
        }
        if (r.kind == PAD) {
            pos += record_bytes(r.size);
            continue;
        }
        if ((r.kind != MIDDLE && r.kind != LAST) || got + r.size > total) {
            status = MP_ABORTED; // ABORT, or a stranger's record: this message is lost
            break;
        }
        memcpy((uint8_t *)dest + got, v->ring + offset_of(v, pos) + sizeof r, r.size);
        got += r.size;
        pos += record_bytes(r.size);
        MP_FAULT_POINT(MP_FAULT_QUEUE_STREAM);
    }
    // What was read is handed back, whole message or aborted one (the record that ended an
    // aborted one stays, for the next get to drop).
    hand_back(v, pos, &counted);
    // Handed back whole: the message is this consumer's, as a whole one is after get_end.
    if (status == MP_OK) MP_STORE(&q->delivered, stream, MP_RELEASE); // pairs with stream_delivered
    wake_if_sleeping(v, &q->space_seq, &q->space_sleepers);
    q->assembling = 0;
    mp_mutex_unlock(&q->consumer);
    return status;
}
