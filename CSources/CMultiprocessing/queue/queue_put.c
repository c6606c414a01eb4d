// The queue's producer side: everything here runs under `producer` (see queue.c's invariants).
//
// Writes: tail (release, publishing the record bytes before it), head_cache, produced (relaxed,
// after publishing), consumed_cache, streaming, and the ring bytes in [tail, head + capacity).
// Reads: head (acquire, pairs with the consumer's release: the space it frees has been read) and
// consumed (acquire, the same for a message slot). A whole message is published and then the lock
// released before the sleepers are read (unlock_and_wake); fragments wake under the lock, since
// the consumer reads them while this producer still holds it.
#define _GNU_SOURCE
#include "queue_internal.h"

/// Bytes a record of `payload` bytes needs at the current tail, PAD included.
static inline uint64_t needed(const mp_queue_view_t *v, uint64_t payload) {
    const mp_queue_t *q = v->header;
    uint64_t offset = offset_of(v, q->tail);
    uint64_t size = record_bytes(payload);
    return offset + size > v->capacity ? (v->capacity - offset) + size : size;
}

/// Whether `need` bytes are free between `head` and `tail`. Positions a peer has garbled (more than
/// a ring apart) leave no room: the put waits, and fails at its deadline, rather than overwrite
/// what may be unread.
static inline int room_between(const mp_queue_view_t *v, uint64_t head, uint64_t tail, uint64_t need) {
    uint64_t used = tail - head;
    return used <= v->capacity && v->capacity - used >= need;
}

static inline int fits(mp_queue_view_t *v, uint64_t need) {
    mp_queue_t *q = v->header;
    if (room_between(v, q->head_cache, q->tail, need)) return 1;
    q->head_cache = MP_LOAD(&q->head, MP_ACQUIRE); // pairs with the consumer's release of head
    return room_between(v, q->head_cache, q->tail, need);
}

/// Signed: `consumed` may run one ahead of `produced` for a moment (see mp_queue_put), or for good
/// after a producer died between publishing and counting.
static inline int64_t in_flight(const mp_queue_view_t *v) {
    const mp_queue_t *q = v->header;
    return (int64_t)(q->produced - q->consumed_cache);
}

static inline int has_slot(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    if (!v->max_messages || in_flight(v) < (int64_t)v->max_messages) return 1;
    q->consumed_cache = MP_LOAD(&q->consumed, MP_ACQUIRE); // pairs with the consumer's release
    return in_flight(v) < (int64_t)v->max_messages;
}

static int fits_any(mp_queue_view_t *v, uint64_t need) { return fits(v, need); }

static int slot_and_fits(mp_queue_view_t *v, uint64_t need) { return has_slot(v) && fits(v, need); }

/// Writes one record at the tail (space is known to be there) and publishes it. The caller wakes
/// the data sleepers.
static void write_record(mp_queue_view_t *v, uint32_t kind, const void *prefix, uint64_t prefix_len,
                         const void *data, uint64_t length) {
    mp_queue_t *q = v->header;
    uint64_t payload = prefix_len + length;
    uint64_t tail = q->tail;
    uint64_t offset = offset_of(v, tail); // within the ring whatever `tail` holds
    if (offset + record_bytes(payload) > v->capacity) {
        record_t pad = {(uint32_t)(v->capacity - offset - sizeof(record_t)), PAD};
        memcpy(ring(v) + offset, &pad, sizeof pad);
        tail += v->capacity - offset;
        offset = 0;
    }
    record_t header = {(uint32_t)payload, kind};
    memcpy(ring(v) + offset, &header, sizeof header);
    if (prefix_len) memcpy(ring(v) + offset + sizeof header, prefix, prefix_len);
    if (length) memcpy(ring(v) + offset + sizeof header + prefix_len, data, length);
    // Publishes the bytes above to the consumer. Only the producer writes `tail`, so its own plain
    // reads elsewhere are exact; the write itself must be atomic (the consumer reads concurrently).
    MP_STORE(&q->tail, tail + record_bytes(payload), MP_RELEASE);
}

/// Rounds of refill's back-off (the longest waits 2^(REFILL_ROUNDS - 1) pauses).
#define REFILL_ROUNDS 10

/// A full ring: waits, briefly, for a run of room (a quarter of the ring, at most 4 KiB more than
/// `need`, and as many message slots) rather than for the one record. A producer that goes on the
/// moment a consumer frees one record reads the consumers' line on every put while they write it on
/// every get, and the two cores trade that line once per message. Backing off between reads (as the
/// Lock's spin does) lets the consumers free a run, which the producer then fills from its cached
/// `head_cache` (queue_lanes.c's lane_refill, the same for a lane). Bounded by rounds, not by the
/// clock: after about a thousand pauses it takes whatever room there is; the put's outcome is
/// unchanged, only when it is written. 1 if the put can go on.
static int refill(mp_queue_view_t *v, uint64_t need, int slot) {
    mp_queue_t *q = v->header;
    uint64_t extra = v->capacity / 4 < 4096 ? v->capacity / 4 : 4096;
    uint64_t want = need + extra <= v->capacity ? need + extra : need;
    int64_t extra_slots = v->max_messages / 4 < 64 ? (int64_t)(v->max_messages / 4) : 64;
    for (int round = 0; round < REFILL_ROUNDS; round++) {
        for (int pause = 0; pause < (1 << round); pause++) mp_cpu_relax();
        if (MP_LOAD(&q->shutdown, MP_RELAXED)) return 0; // the caller's wait reports it
        q->head_cache = MP_LOAD(&q->head, MP_ACQUIRE);         // pairs with the consumer's release
        q->consumed_cache = MP_LOAD(&q->consumed, MP_ACQUIRE); // the same, for a message slot
        int slots = !slot || !v->max_messages || in_flight(v) + extra_slots < (int64_t)v->max_messages;
        if (slots && room_between(v, q->head_cache, q->tail, want)) return 1;
    }
    return slot ? slot_and_fits(v, need) : fits(v, need);
}

static mp_status_t wait_space(mp_queue_view_t *v, uint64_t need, int slot, int64_t deadline) {
    mp_queue_t *q = v->header;
    if (slot ? slot_and_fits(v, need) : fits(v, need)) return MP_OK; // the common case: no loop
    // A passed deadline is one look (mp_queue_wait_until's), with no refill's back-off before it.
    if (!deadline_passed(deadline) && refill(v, need, slot)) return MP_OK;
    return mp_queue_wait_until(v, &q->space_seq, &q->space_sleepers, slot ? slot_and_fits : fits_any, need,
                               deadline, MP_QUEUE_SHUTDOWN);
}

/// Whether the consumer that took the FIRST of `stream` (at ring position `first_at`) has died
/// after consuming it: what it had read died with it. One that died before consuming it took
/// nothing: the FIRST is still there for the next consumer. Acquire: pairs with the reader's
/// release store of its announcement, and with the release of `head`.
static int reader_died(mp_queue_view_t *v, uint32_t stream, uint64_t first_at) {
    mp_queue_t *q = v->header;
    uint64_t reader = MP_LOAD(&q->reader, MP_ACQUIRE);
    if ((uint32_t)(reader >> 32) != stream || mp_process_alive((int32_t)(uint32_t)reader)) return 0;
    return MP_LOAD(&q->head, MP_ACQUIRE) > first_at;
}

static int stream_delivered(mp_queue_view_t *v, uint64_t stream) {
    mp_queue_t *q = v->header;
    return MP_LOAD(&q->delivered, MP_ACQUIRE) == (uint32_t)stream; // pairs with the reader's release
}

enum { STREAM_LOST = -100 }; // the reader of the stream died: send it again

/// Waits for `need` bytes of room while streaming `stream`, forever unless shut down; checks the
/// stream's reader every MP_OWNER_CHECK_NS. MP_OK, MP_SHUTDOWN, or STREAM_LOST.
static int stream_space(mp_queue_view_t *v, uint64_t need, uint32_t stream, uint64_t first_at) {
    mp_queue_t *q = v->header;
    for (;;) {
        if (fits(v, need)) return MP_OK;
        mp_status_t status = mp_queue_wait_until(v, &q->space_seq, &q->space_sleepers, fits_any, need,
                                                 mp_monotonic_ns() + MP_OWNER_CHECK_NS, MP_QUEUE_SHUTDOWN);
        if (status == MP_OK || status == MP_SHUTDOWN) return status;
        if (reader_died(v, stream, first_at)) return STREAM_LOST;
    }
}

/// Waits until the reader of `stream` has consumed its LAST. A plain shutdown lets it finish (as it
/// lets a live producer finish, see await_fragment). MP_OK, MP_SHUTDOWN, or STREAM_LOST.
static int stream_arrival(mp_queue_view_t *v, uint32_t stream, uint64_t first_at) {
    mp_queue_t *q = v->header;
    for (;;) {
        mp_status_t status = mp_queue_wait_until(v, &q->space_seq, &q->space_sleepers, stream_delivered, stream,
                                                 mp_monotonic_ns() + MP_OWNER_CHECK_NS, MP_QUEUE_SHUTDOWN_IMMEDIATE);
        if (status == MP_OK) return MP_OK;
        if (status == MP_SHUTDOWN) return stream_delivered(v, stream) ? MP_OK : MP_SHUTDOWN;
        if (reader_died(v, stream, first_at)) return stream_delivered(v, stream) ? MP_OK : STREAM_LOST;
    }
}

/// Streams the message once under a new id: FIRST (total and id), MIDDLEs, a LAST, each woken
/// under the lock (the consumer reads them while this producer holds it); then waits until it
/// arrived. Room for the FIRST is there. MP_OK, MP_SHUTDOWN, or STREAM_LOST.
static int stream_once(mp_queue_view_t *v, const uint8_t *data, uint64_t length) {
    mp_queue_t *q = v->header;
    uint64_t max = max_record(v);
    uint32_t stream = q->stream + 1;
    if (stream == 0) stream = 1; // 0 is never an id: a fresh queue's `delivered` and `reader` hold it
    q->stream = stream;
    first_prefix_t prefix = {length, stream};
    uint64_t first = max - sizeof prefix;
    q->streaming = 1;
    write_record(v, FIRST, &prefix, sizeof prefix, data, first);
    uint64_t first_at = q->tail - record_bytes(max); // where the FIRST lies (after a PAD, if one)
    wake_if_sleeping(v, &q->data_seq, &q->data_sleepers);
    // Every FIRST counts a message, as every consumed FIRST does (see queue.c's "Streams").
    MP_STORE(&q->produced, q->produced + 1, MP_RELAXED);
    const uint8_t *p = data + first;
    uint64_t left = length - first;
    while (left > 0) {
        uint64_t piece = left < max ? left : max;
        int status = stream_space(v, needed(v, piece), stream, first_at);
        if (status != MP_OK) return status;
        write_record(v, left == piece ? LAST : MIDDLE, NULL, 0, p, piece);
        wake_if_sleeping(v, &q->data_seq, &q->data_sleepers);
        p += piece;
        left -= piece;
    }
    q->streaming = 0; // written whole: a producer dying from here on owes no ABORT
    // A reader that has handed nothing back leaves the message whole in the ring if it dies, as a
    // whole one: the put returns (and a thread that puts and then gets it itself does not wait for
    // itself). One that began to hand it back is seen through. The full barrier of the LAST's
    // wake orders its publication before this load (see mp_queue_get_rest).
    if (MP_LOAD(&q->released, MP_SEQ_CST) != stream) return MP_OK;
    return stream_arrival(v, stream, first_at);
}

/// A message larger than one record, streamed until a consumer has read it whole (see queue.c's
/// "Streams"). Only the wait for the first record's room honours `deadline`: once a consumer may be
/// reading, the message is finished or abandoned only at a shutdown.
static mp_status_t put_fragments(mp_queue_view_t *v, const uint8_t *data, uint64_t length, int64_t deadline) {
    mp_queue_t *q = v->header;
    mp_status_t status = wait_space(v, needed(v, max_record(v)), 1, deadline);
    if (status != MP_OK) return status;
    for (;;) {
        int outcome = stream_once(v, data, length);
        if (outcome != STREAM_LOST) return (mp_status_t)outcome;
        // Its reader died: end what is in the ring with an ABORT, then send it all again.
        q->streaming = 1;
        // Shut down meanwhile: `streaming` is set, the next put writes the ABORT.
        if (wait_space(v, needed(v, 0), 0, INT64_MAX) != MP_OK) return MP_SHUTDOWN;
        write_record(v, ABORT, NULL, 0, NULL, 0);
        q->streaming = 0;
        wake_if_sleeping(v, &q->data_seq, &q->data_sleepers);
        if (wait_space(v, needed(v, max_record(v)), 0, INT64_MAX) != MP_OK) return MP_SHUTDOWN;
    }
}

/// Every put that is not the straight path: the lock held, then an ABORT owed, a wait for space or a
/// slot, a PAD, or fragments. Releases the lock.
MP_COLD static mp_status_t put_locked(mp_queue_view_t *v, const void *data, uint64_t length, int64_t deadline) {
    mp_queue_t *q = v->header;
    mp_status_t status = MP_OK;
    if (q->streaming) {
        // A producer died or gave up midway through a fragmented message: tell the consumer to drop
        // it. No room within our deadline: put nothing, and leave the ABORT to the next put.
        status = wait_space(v, needed(v, 0), 0, deadline);
        if (status != MP_OK) {
            mp_mutex_unlock(&q->producer);
            return status;
        }
        write_record(v, ABORT, NULL, 0, NULL, 0);
        q->streaming = 0;
    }
    if (length <= max_record(v)) {
        status = wait_space(v, needed(v, length), 1, deadline);
        if (status == MP_OK) {
            write_record(v, WHOLE, NULL, 0, data, length);
            // After publishing: a producer killed in between leaves the count one low (harmless),
            // never one high (which would cost a bounded queue a slot for good).
            MP_STORE(&q->produced, q->produced + 1, MP_RELAXED);
        }
    } else {
        status = put_fragments(v, data, length, deadline);
    }
    // An ABORT or a WHOLE may have been published even when this put failed: wake for it.
    unlock_and_wake(v, &q->producer, &q->data_seq, &q->data_sleepers);
    return status;
}

/// Takes the producer lock by `deadline`, the slow way; the lock is held on MP_OK.
MP_COLD static mp_status_t lock_producer(mp_queue_view_t *v, int64_t deadline) {
    mp_queue_t *q = v->header;
    if (MP_LOAD(&q->shutdown, MP_RELAXED)) return MP_SHUTDOWN;
    return lock_by(&q->producer, deadline);
}

static __attribute__((noinline)) mp_status_t put_in_ring(mp_queue_view_t *v, const void *data, uint64_t length,
                                                         int64_t deadline);

/// Every put but a lane's straight path: claims the thread's lane, waits for room, or uses the ring.
static __attribute__((noinline)) mp_status_t put_slow(mp_queue_view_t *v, const void *data, uint64_t length,
                                                      int64_t deadline) {
    if (v->lanes && length == v->slot_size) {
        int lane = lane_of_caller(v, 1);
        uint64_t put;
        if (lane >= 0) return lane_put(v, (uint32_t)lane, data, 1, 0, deadline, &put);
    }
    return put_in_ring(v, data, length, deadline);
}

mp_status_t mp_queue_put(mp_queue_view_t *v, const void *data, uint64_t length, int64_t deadline) {
    if (MP_UNLIKELY(MP_LOAD(&v->corrupted, MP_RELAXED))) return MP_CORRUPTED;
    // A lane's straight path (mp_queue_straight.h): no lock and no call; everything else is
    // put_slow's.
    if (v->lanes && mp_queue_put_lane_straight(v, data, length)) return MP_OK;
    // A queue without lanes goes straight to the ring (put_slow would only ask again).
    return v->lanes ? put_slow(v, data, length, deadline) : put_in_ring(v, data, length, deadline);
}

/// The ring put with the producer lock held (by its fast CAS or the slow way); releases it.
static inline __attribute__((always_inline)) mp_status_t put_held(mp_queue_view_t *v, const void *data,
                                                                  uint64_t length, int64_t deadline) {
    mp_queue_t *q = v->header;
    // Shut down before or while we took the lock: an immediate shutdown discards the ring's messages
    // under this lock, so nothing may be published behind it. Relaxed: the flag was stored before
    // the discard took the lock, whose release we acquired.
    if (MP_UNLIKELY(MP_LOAD(&q->shutdown, MP_RELAXED))) {
        mp_mutex_unlock(&q->producer);
        return MP_SHUTDOWN;
    }
    // The straight path: a whole message that fits before the end of the ring, a slot and room.
    uint64_t tail = q->tail, capacity = v->capacity;
    uint64_t offset = offset_of(v, tail);
    uint64_t size = record_bytes(length);
    if (MP_UNLIKELY(q->streaming || length > max_record(v) || offset + size > capacity || !has_slot(v) ||
                    !fits(v, size)))
        return put_locked(v, data, length, deadline);
    uint8_t *at = ring(v) + offset;
    record_t header = {(uint32_t)length, WHOLE};
    memcpy(at, &header, sizeof header);
    copy_bytes(at + sizeof header, data, length); // `data` may be NULL only when empty
    MP_STORE(&q->tail, tail + size, MP_RELEASE); // publishes the record (see write_record)
    MP_STORE(&q->produced, q->produced + 1, MP_RELAXED); // after publishing (see put_locked)
    unlock_and_wake(v, &q->producer, &q->data_seq, &q->data_sleepers);
    return MP_OK;
}

mp_status_t mp_queue_put_held(mp_queue_view_t *v, const void *data, uint64_t length, int64_t deadline) {
    return put_held(v, data, length, deadline);
}

/// mp_queue_put's ring path: the producer lock, one record (or a stream).
static __attribute__((noinline)) mp_status_t put_in_ring(mp_queue_view_t *v, const void *data, uint64_t length,
                                                         int64_t deadline) {
    mp_queue_t *q = v->header;
    if (MP_UNLIKELY(!try_lock_fast(&q->producer))) {
        mp_status_t status = lock_producer(v, deadline);
        if (status == MP_TIMED_OUT || status == MP_SHUTDOWN) return status;
        // MP_OK, or MP_OWNER_DIED: the dead producer's half-written message is `streaming`'s job.
    }
    return put_held(v, data, length, deadline);
}

/// Whether the put of a `length`-byte message can go on now: room (and a message slot) for its
/// record, or, when a dead producer's stream owes an ABORT first, room for that.
static int put_can_go_on(mp_queue_view_t *v, uint64_t length) {
    mp_queue_t *q = v->header;
    return q->streaming ? fits(v, needed(v, 0)) : slot_and_fits(v, needed(v, length));
}

mp_status_t queue_put_try(mp_queue_view_t *v, const void *data, uint64_t length, uint32_t *observed) {
    mp_queue_t *q = v->header;
    if (MP_UNLIKELY(MP_LOAD(&v->corrupted, MP_RELAXED))) return MP_CORRUPTED;
    if (MP_LOAD(&q->shutdown, MP_RELAXED)) return MP_SHUTDOWN;
    if (!try_lock_fast(&q->producer)) return MP_BUSY;
    if (!put_can_go_on(v, length)) {
        // Announced while the lock still holds `tail` where the predicate saw it: a consumer that
        // frees room after the look below reads the announcement (queue.c's "Sleeping").
        *observed = announce_sleeper(v, &q->space_seq, &q->space_sleepers);
        if (!put_can_go_on(v, length) && !MP_LOAD(&q->shutdown, MP_SEQ_CST)) {
            mp_mutex_unlock(&q->producer); // nothing published: no data sleeper to wake
            return MP_WAIT;
        }
        MP_SUB(&q->space_sleepers, 1, MP_RELAXED);
    }
    return put_held(v, data, length, MP_NOW); // every wait in it one look
}

/// Publishes the records written since the last publication (tail first, then the count, as
/// put_locked) and wakes the consumers once for all of them, the lock still held.
/// How many records of `bytes` fit at `tail` by the producer's cached view of the consumers (at most
/// `want`): none past the ring's end (the message-by-message path writes the PAD), none beyond the
/// free bytes or message slots last seen (that path refreshes the view, or waits).
static inline uint64_t fixed_run_room(mp_queue_view_t *v, uint64_t tail, uint64_t produced, uint64_t bytes,
                                      uint64_t want) {
    mp_queue_t *q = v->header;
    uint64_t used = tail - q->head_cache;
    if (used > v->capacity) return 0; // positions garbled by a peer: the checked path decides
    uint64_t n = (v->capacity - used) / bytes, before_end = (v->capacity - offset_of(v, tail)) / bytes;
    if (before_end < n) n = before_end;
    if (v->max_messages) {
        int64_t slots = (int64_t)v->max_messages - (int64_t)(produced - q->consumed_cache);
        if (slots < (int64_t)n) n = slots > 0 ? (uint64_t)slots : 0;
    }
    return n < want ? n : want;
}

/// Writes `n` whole records of `size` payload bytes from `p` (elements `stride` apart) at `at`, one
/// after another: header and payload, no check between (fixed_run_room made the room). Not yet
/// published.
static inline void write_fixed_run(uint8_t *at, const uint8_t *p, uint64_t size, uint64_t stride, uint64_t n) {
    record_t header = {(uint32_t)size, WHOLE};
    uint64_t bytes = record_bytes(size);
    if (size == 8) { // the commonest element (Int, Double): constant-size moves
        for (uint64_t k = 0; k < n; k++, at += bytes, p += stride) {
            memcpy(at, &header, sizeof header);
            memcpy(at + sizeof header, p, 8);
        }
        return;
    }
    for (uint64_t k = 0; k < n; k++, at += bytes, p += stride) {
        memcpy(at, &header, sizeof header);
        copy_bytes(at + sizeof header, p, size);
    }
}

static void publish_run(mp_queue_view_t *v, uint64_t tail, uint64_t produced) {
    mp_queue_t *q = v->header;
    if (tail == q->tail) return;
    MP_STORE(&q->tail, tail, MP_RELEASE); // publishes every record of the run (see write_record)
    MP_STORE(&q->produced, produced, MP_RELAXED);
    wake_if_sleeping(v, &q->data_seq, &q->data_sleepers);
}

mp_status_t mp_queue_put_batch(mp_queue_view_t *v, const void *data, const uint64_t *lengths, uint64_t size,
                               uint64_t stride, uint64_t count, int lanes, int64_t deadline, uint64_t *put) {
    mp_queue_t *q = v->header;
    *put = 0;
    if (count == 0) return MP_OK;
    if (MP_UNLIKELY(MP_LOAD(&v->corrupted, MP_RELAXED))) return MP_CORRUPTED;
    if (lanes && v->lanes && lengths == NULL && size == v->slot_size) { // one store of the lane's tail for all
        int lane = lane_of_caller(v, 1);
        if (lane >= 0) return lane_put(v, (uint32_t)lane, data, count, stride, deadline, put);
    }
    if (MP_UNLIKELY(!try_lock_fast(&q->producer))) {
        mp_status_t status = lock_producer(v, deadline);
        if (status == MP_TIMED_OUT || status == MP_SHUTDOWN) return status;
    }
    if (MP_UNLIKELY(MP_LOAD(&q->shutdown, MP_RELAXED))) { // as mp_queue_put
        mp_mutex_unlock(&q->producer);
        return MP_SHUTDOWN;
    }
    mp_status_t status = MP_OK;
    if (MP_UNLIKELY(q->streaming)) { // a dead producer's half-written message: as put_locked
        status = wait_space(v, needed(v, 0), 0, deadline);
        if (status != MP_OK) {
            mp_mutex_unlock(&q->producer);
            return status;
        }
        write_record(v, ABORT, NULL, 0, NULL, 0);
        q->streaming = 0;
    }
    // Records are written ahead of the published tail and published a run at a time: a producer
    // killed midway leaves the unpublished ones unseen (nothing half-written is ever visible).
    const uint8_t *p = data;
    uint64_t i = 0, tail = q->tail, produced = q->produced, capacity = v->capacity, max = max_record(v);
    while (i < count) {
        if (lengths == NULL && size <= max) { // equal sizes: a run the cached room holds, in one go
            uint64_t n = fixed_run_room(v, tail, produced, record_bytes(size), count - i);
            if (n > 0) {
                write_fixed_run(ring(v) + offset_of(v, tail), p, size, stride, n);
                tail += n * record_bytes(size);
                produced += n;
                p += n * stride;
                i += n;
                continue;
            }
        }
        uint64_t length = lengths ? lengths[i] : size;
        if (length > max) break; // streamed by the caller's mp_queue_put
        uint64_t bytes = record_bytes(length), offset = offset_of(v, tail);
        uint64_t need = offset + bytes > capacity ? (capacity - offset) + bytes : bytes;
        int slot = !v->max_messages || (int64_t)(produced - q->consumed_cache) < (int64_t)v->max_messages;
        if (!slot || !room_between(v, q->head_cache, tail, need)) {
            q->head_cache = MP_LOAD(&q->head, MP_ACQUIRE);         // pairs with the consumer's release
            q->consumed_cache = MP_LOAD(&q->consumed, MP_ACQUIRE); // the same, for a message slot
            slot = !v->max_messages || (int64_t)(produced - q->consumed_cache) < (int64_t)v->max_messages;
            if (!slot || !room_between(v, q->head_cache, tail, need)) {
                // Full: let the consumers have the run so far, then wait as a single put does.
                publish_run(v, tail, produced);
                status = wait_space(v, need, 1, deadline);
                if (status != MP_OK) break;
                continue;
            }
        }
        if (offset + bytes > capacity) {
            record_t pad = {(uint32_t)(capacity - offset - sizeof(record_t)), PAD};
            memcpy(ring(v) + offset, &pad, sizeof pad);
            tail += capacity - offset;
            offset = 0;
        }
        uint8_t *at = ring(v) + offset;
        record_t header = {(uint32_t)length, WHOLE};
        memcpy(at, &header, sizeof header);
        copy_bytes(at + sizeof header, p, length);
        tail += bytes;
        produced++;
        p += lengths ? length : stride;
        i++;
    }
    if (tail != q->tail) {
        MP_STORE(&q->tail, tail, MP_RELEASE); // publishes the last run (see write_record)
        MP_STORE(&q->produced, produced, MP_RELAXED);
    }
    *put = i;
    unlock_and_wake(v, &q->producer, &q->data_seq, &q->data_sleepers);
    return i == count || status == MP_OK ? MP_OK : status;
}
