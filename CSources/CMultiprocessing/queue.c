// The message channel behind Queue, JoinableQueue and SimpleQueue: a byte ring in shared memory.
//
// Layout: the mp_queue_t header (256 bytes: a producer line with the producer lock, a consumer
// line with the consumer lock, a control line written only when someone sleeps, a JoinableQueue
// line, so that a steady flow moves only the lines it must between cores), then `capacity` bytes
// of ring, a power of two. Positions `head` and `tail` count bytes since the
// start and never wrap (64 bits); a position's offset in the ring is `pos & (capacity - 1)`.
//
// Records: an 8-byte header {u32 size, u32 kind} and `size` payload bytes padded to 8. A record
// never wraps: when it does not fit before the end, a PAD record fills the rest. Kinds: WHOLE (a
// message), FIRST/MIDDLE/LAST (a message too large for one record, in order; FIRST's payload
// starts with the u64 total length), PAD, and ABORT (the producer of a fragmented message died or
// gave up: drop the fragments read so far). A payload is below 2^31 bytes (MAX_PAYLOAD), so the u32
// size never overflows, nor does a PAD's, which is smaller than the record it makes room for.
//
// Who writes what:
// - One producer at a time, under `producer` (a process-owned futex mutex): tail, head_cache,
//   produced, consumed_cache, streaming, and the ring bytes in [tail, head + capacity). One
//   consumer at a time, under `consumer`: head, tail_cache, consumed, assembling, counting_*. The
//   message count is produced - consumed; a bounded queue's producer waits while it reaches
//   max_messages.
//   So the ring itself is single-producer/single-consumer and per-producer FIFO order holds; the
//   locks make it multi-producer/multi-consumer.
// - Publishing: the producer writes a record's bytes, then stores `tail` with release; the consumer
//   loads `tail` with acquire before reading them (and stores `head` with release after reading,
//   which the producer's acquire load of `head` pairs with before it overwrites that space).
//   A record is visible only once published, so a producer killed mid-write leaves nothing torn.
//
// Sleeping (spin briefly, then park): a reader with no data adds itself to `data_sleepers`
// (seq_cst), re-checks `tail`, and sleeps on `data_seq`; a producer, after publishing, issues a
// seq_cst fence and reads `data_sleepers`, bumping `data_seq` and waking only if it is non-zero.
// The same holds for `space_seq`/`space_sleepers` (ring bytes or a message slot). With nobody
// asleep, put and get make no syscall. Shutdown bumps both words and wakes everyone.
//
// Faults: the next producer after one that left a fragmented message half-written (`streaming`:
// it died, or gave up at a shutdown) writes ABORT first, within its own deadline; a consumer
// waiting for the rest of one gives up when the producer lock is free (its producer gave up) or its
// owner is dead, or at an immediate shutdown; a plain shutdown lets a live producer finish. The
// next consumer after a dead one drops stale MIDDLE/LAST fragments (their message died with the
// consumer that had taken its start), and does not count again a message the dead one had counted
// but not released (`counting_head`/`counting_value`, see consume).
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>
#include <string.h>

_Static_assert(sizeof(mp_queue_t) == MP_QUEUE_HEADER_SIZE, "mp_queue_t is 256 bytes");
_Static_assert(offsetof(mp_queue_t, tail) == 0, "producer line first");
_Static_assert(offsetof(mp_queue_t, producer) + sizeof(mp_mutex_t) <= 64, "the producer lock shares its line");
_Static_assert(offsetof(mp_queue_t, head) == 64, "head on its own cache line");
_Static_assert(offsetof(mp_queue_t, consumer) + sizeof(mp_mutex_t) <= 128, "the consumer lock shares its line");
_Static_assert(offsetof(mp_queue_t, counting_head) % 8 == 0, "64-bit fields are aligned");
_Static_assert(offsetof(mp_queue_t, data_seq) == 128, "control line third");
_Static_assert(offsetof(mp_queue_t, unfinished) == 192, "JoinableQueue counters on the fourth line");

enum { WHOLE = 1, FIRST = 2, MIDDLE = 3, LAST = 4, PAD = 5, ABORT = 6 };

typedef struct {
    uint32_t size;
    uint32_t kind;
} record_t;

#define OWNER_CHECK_NS (20 * 1000 * 1000)
/// The largest record payload: below 2^31, a multiple of 8 (see the header comment).
#define MAX_PAYLOAD (((uint64_t)1 << 31) - 8)
_Static_assert(MAX_PAYLOAD + sizeof(record_t) <= UINT32_MAX, "record and PAD sizes fit in a u32");
/// How long a reader or writer spins before it parks (see wait_until).
#define SPIN_NS (50 * 1000)

static inline uint8_t *ring(mp_queue_t *q) { return (uint8_t *)q + MP_QUEUE_HEADER_SIZE; }
static inline uint64_t padded(uint64_t n) { return (n + 7) & ~(uint64_t)7; }
static inline uint64_t record_bytes(uint64_t payload) { return sizeof(record_t) + padded(payload); }

uint64_t mp_queue_size(uint64_t capacity) { return MP_QUEUE_HEADER_SIZE + capacity; }

uint64_t mp_queue_max_record(const mp_queue_t *q) {
    uint64_t quarter = q->capacity / 4 - sizeof(record_t);
    return quarter < MAX_PAYLOAD ? quarter : MAX_PAYLOAD;
}

void mp_queue_init(mp_queue_t *q, uint64_t capacity, uint32_t max_messages, int shared) {
    memset(q, 0, sizeof *q);
    q->capacity = capacity;
    q->max_messages = max_messages;
    q->shared = shared ? 1 : 0;
    uint32_t flags = (shared ? MP_MUTEX_SHARED : 0) | MP_MUTEX_PROCESS_OWNED;
    mp_mutex_init(&q->producer, flags);
    mp_mutex_init(&q->consumer, flags);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static inline int64_t relative(int64_t deadline) {
    if (deadline == INT64_MAX) return MP_FOREVER;
    int64_t left = deadline - mp_monotonic_ns();
    return left > 0 ? left : 0;
}

/// Wakes the sleepers of `seq` if `sleepers` says there are any; the caller's preceding store
/// must be ordered before the read of `sleepers` (the fence), pairing with the sleeper's seq_cst.
static inline void wake_if_sleeping(mp_queue_t *q, uint32_t *seq, uint32_t *sleepers) {
    mp_full_barrier();
    if (MP_LOAD(sleepers, MP_RELAXED) > 0) {
        MP_ADD(seq, 1, MP_RELEASE);
        mp_futex_wake(seq, INT_MAX, (int)q->shared);
    }
}

/// Spins briefly, then sleeps on `seq` until `ready(q, arg)` holds, the deadline passes, or the
/// shutdown level reaches `stop_at` (MP_QUEUE_SHUTDOWN, or MP_QUEUE_SHUTDOWN_IMMEDIATE for a wait
/// that a plain shutdown must not end).
static mp_status_t wait_until(mp_queue_t *q, uint32_t *seq, uint32_t *sleepers,
                              int (*ready)(mp_queue_t *, uint64_t), uint64_t arg, int64_t deadline,
                              uint32_t stop_at) {
    // Spin by time, not by count: a consumer that parks while its producer is merely between two
    // puts makes every later put pay a FUTEX_WAKE, which slows the producer, which makes the consumer
    // park again (a stable slow mode). SPIN_NS covers a producer's gap between messages.
    int64_t spin_until = 0; // the clock is read only once a short spin has not been enough
    for (uint32_t spin = 1;; spin++) {
        if (ready(q, arg)) return MP_OK;
        if (MP_LOAD(&q->shutdown, MP_RELAXED) >= stop_at) return MP_SHUTDOWN;
        mp_cpu_relax();
        if ((spin & 63) == 0) {
            int64_t now = mp_monotonic_ns();
            if (spin_until == 0) spin_until = now + SPIN_NS;
            else if (now >= spin_until) break;
        }
    }
    for (;;) {
        uint32_t observed = MP_LOAD(seq, MP_ACQUIRE);
        MP_ADD(sleepers, 1, MP_SEQ_CST);
        __atomic_thread_fence(__ATOMIC_SEQ_CST); // the re-check below must not pass the increment
        int ok = ready(q, arg);
        int down = MP_LOAD(&q->shutdown, MP_SEQ_CST) >= stop_at;
        if (ok || down || mp_monotonic_ns() >= deadline) {
            MP_SUB(sleepers, 1, MP_RELAXED);
            return ok ? MP_OK : down ? MP_SHUTDOWN : MP_TIMED_OUT;
        }
        mp_futex_wait(seq, observed, deadline, (int)q->shared);
        MP_SUB(sleepers, 1, MP_RELAXED);
    }
}

// MARK: - Producer side (under `producer`)

/// Bytes a record of `payload` bytes needs at the current tail, PAD included.
static inline uint64_t needed(const mp_queue_t *q, uint64_t payload) {
    uint64_t offset = q->tail & (q->capacity - 1);
    uint64_t size = record_bytes(payload);
    return offset + size > q->capacity ? (q->capacity - offset) + size : size;
}

static int fits(mp_queue_t *q, uint64_t need) {
    if (q->capacity - (q->tail - q->head_cache) >= need) return 1;
    q->head_cache = MP_LOAD(&q->head, MP_ACQUIRE); // pairs with the consumer's release of head
    return q->capacity - (q->tail - q->head_cache) >= need;
}

/// Signed: `consumed` may run one ahead of `produced` for a moment (see mp_queue_put), or for good
/// after a producer died between publishing and counting.
static inline int64_t in_flight(const mp_queue_t *q) { return (int64_t)(q->produced - q->consumed_cache); }

static int slot_and_fits(mp_queue_t *q, uint64_t need) {
    if (q->max_messages && in_flight(q) >= (int64_t)q->max_messages) {
        q->consumed_cache = MP_LOAD(&q->consumed, MP_ACQUIRE);
        if (in_flight(q) >= (int64_t)q->max_messages) return 0;
    }
    return fits(q, need);
}

/// Writes one record at the tail (space is known to be there) and publishes it.
static void write_record(mp_queue_t *q, uint32_t kind, const void *prefix, uint64_t prefix_len,
                         const void *data, uint64_t length) {
    uint64_t payload = prefix_len + length;
    uint64_t offset = q->tail & (q->capacity - 1);
    uint64_t tail = q->tail;
    if (offset + record_bytes(payload) > q->capacity) {
        record_t pad = {(uint32_t)(q->capacity - offset - sizeof(record_t)), PAD};
        memcpy(ring(q) + offset, &pad, sizeof pad);
        tail += q->capacity - offset;
        offset = 0;
    }
    record_t header = {(uint32_t)payload, kind};
    memcpy(ring(q) + offset, &header, sizeof header);
    if (prefix_len) memcpy(ring(q) + offset + sizeof header, prefix, prefix_len);
    if (length) memcpy(ring(q) + offset + sizeof header + prefix_len, data, length);
    // Publishes the bytes above to the consumer. Only the producer writes `tail`, so its own plain
    // reads elsewhere are exact; the write itself must be atomic (the consumer reads concurrently).
    MP_STORE(&q->tail, tail + record_bytes(payload), MP_RELEASE);
    wake_if_sleeping(q, &q->data_seq, &q->data_sleepers);
}

static mp_status_t wait_space(mp_queue_t *q, uint64_t need, int slot, int64_t deadline) {
    if (slot ? slot_and_fits(q, need) : fits(q, need)) return MP_OK; // the common case: no loop
    return wait_until(q, &q->space_seq, &q->space_sleepers,
                      slot ? (int (*)(mp_queue_t *, uint64_t))slot_and_fits : fits, need, deadline,
                      MP_QUEUE_SHUTDOWN);
}

mp_status_t mp_queue_put(mp_queue_t *q, const void *data, uint64_t length, int64_t deadline) {
    if (MP_LOAD(&q->shutdown, MP_RELAXED)) return MP_SHUTDOWN;
    mp_status_t status = mp_mutex_lock(&q->producer, relative(deadline));
    if (status == MP_TIMED_OUT || status == MP_BUSY) return MP_TIMED_OUT;
    // Shut down while we waited for the lock: an immediate shutdown discards the ring's messages
    // under this lock, so nothing may be published behind it. Relaxed: the flag was stored before
    // the discard took the lock, whose release we acquired.
    if (MP_LOAD(&q->shutdown, MP_RELAXED)) {
        mp_mutex_unlock(&q->producer);
        return MP_SHUTDOWN;
    }
    if (q->streaming) {
        // A producer died or gave up midway through a fragmented message: tell the consumer to drop
        // it. No room within our deadline: put nothing, and leave the ABORT to the next put.
        status = wait_space(q, needed(q, 0), 0, deadline);
        if (status != MP_OK) {
            mp_mutex_unlock(&q->producer);
            return status;
        }
        write_record(q, ABORT, NULL, 0, NULL, 0);
        q->streaming = 0;
    }
    uint64_t max = mp_queue_max_record(q);
    if (length <= max) {
        status = wait_space(q, needed(q, length), 1, deadline);
        if (status == MP_OK) {
            write_record(q, WHOLE, NULL, 0, data, length);
            // After publishing: a producer killed in between leaves the count one low (harmless),
            // never one high (which would cost a bounded queue a slot for good).
            MP_STORE(&q->produced, q->produced + 1, MP_RELAXED);
        }
    } else {
        uint64_t total = length, first = max - sizeof total;
        status = wait_space(q, needed(q, max), 1, deadline);
        if (status == MP_OK) {
            q->streaming = 1;
            write_record(q, FIRST, &total, sizeof total, data, first);
            MP_STORE(&q->produced, q->produced + 1, MP_RELAXED);
            const uint8_t *p = (const uint8_t *)data + first;
            uint64_t left = length - first;
            while (left > 0 && status == MP_OK) {
                uint64_t piece = left < max ? left : max;
                status = wait_space(q, needed(q, piece), 0, INT64_MAX);
                if (status == MP_OK) write_record(q, left == piece ? LAST : MIDDLE, NULL, 0, p, piece);
                p += piece;
                left -= piece;
            }
            if (status == MP_OK) q->streaming = 0; // else shut down midway: the ABORT path applies
        }
    }
    mp_mutex_unlock(&q->producer);
    return status;
}

// MARK: - Consumer side (under `consumer`)

static int has_data(mp_queue_t *q, uint64_t unused) {
    (void)unused;
    if (q->tail_cache != q->head) return 1;
    q->tail_cache = MP_LOAD(&q->tail, MP_ACQUIRE); // pairs with the producer's release of tail
    return q->tail_cache != q->head;
}

static inline record_t *peek(mp_queue_t *q) {
    return (record_t *)(ring(q) + (q->head & (q->capacity - 1)));
}

/// Hands a record's bytes back to the producer (and a message slot with them, when `taken`).
///
/// A consumer killed between counting a message and moving `head` past it leaves the message to be
/// read again by the next consumer, which must not count it twice. So the count is announced first:
/// `counting_value` (what `consumed` becomes), then `counting_head` (odd, so it never equals a
/// real head + 1 of another message: heads are multiples of 8). A message whose announcement is
/// complete and whose count has landed (`consumed == counting_value`) was counted already. Stores
/// are plain: only the consumer-lock holder reads or writes these.
static inline void consume(mp_queue_t *q, const record_t *r, int taken) {
    if (taken) {
        uint64_t mark = q->head + 1;
        if (MP_UNLIKELY(q->counting_head == mark && q->consumed == q->counting_value)) {
            // counted by a consumer that died before it could release the message
        } else {
            q->counting_value = q->consumed + 1;
            q->counting_head = mark;
            MP_STORE(&q->consumed, q->consumed + 1, MP_RELEASE);
        }
        MP_FAULT_POINT(MP_FAULT_QUEUE_COUNTED);
    }
    MP_STORE(&q->head, q->head + record_bytes(r->size), MP_RELEASE);
    wake_if_sleeping(q, &q->space_seq, &q->space_sleepers);
}

mp_status_t mp_queue_get_begin(mp_queue_t *q, int64_t deadline, const void **payload, uint64_t *length,
                               uint64_t *total) {
    if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) return MP_SHUTDOWN;
    mp_status_t status = mp_mutex_lock(&q->consumer, relative(deadline));
    if (status == MP_TIMED_OUT || status == MP_BUSY) return MP_TIMED_OUT;
    if (status == MP_OWNER_DIED) q->assembling = 0; // the dead consumer's message is gone
    for (;;) {
        if (MP_LOAD(&q->shutdown, MP_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE) break;
        if (!has_data(q, 0)) {
            if (MP_LOAD(&q->shutdown, MP_ACQUIRE)) break; // shut down and drained
            status =
                wait_until(q, &q->data_seq, &q->data_sleepers, has_data, 0, deadline, MP_QUEUE_SHUTDOWN);
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
        if (r->kind == FIRST) {
            memcpy(total, r + 1, sizeof *total);
            *payload = (const uint8_t *)(r + 1) + sizeof *total;
            *length = r->size - sizeof *total;
            q->assembling = 1;
            return MP_OK; // the lock stays held until mp_queue_get_rest
        }
        consume(q, r, 0); // PAD, ABORT, or fragments whose start a dead consumer took
    }
    mp_mutex_unlock(&q->consumer);
    return MP_SHUTDOWN;
}

void mp_queue_get_end(mp_queue_t *q) {
    consume(q, peek(q), 1);
    mp_mutex_unlock(&q->consumer);
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
        mp_status_t status = wait_until(q, &q->data_seq, &q->data_sleepers, has_data, 0, check_at,
                                        MP_QUEUE_SHUTDOWN_IMMEDIATE);
        if (status == MP_OK) return 1;
        if (status == MP_SHUTDOWN) return 0;
        if (producer_gone(q)) return has_data(q, 0); // what it published before it went, or a stranger
    }
}

mp_status_t mp_queue_get_rest(mp_queue_t *q, void *dest, uint64_t total) {
    record_t *r = peek(q);
    uint64_t got = r->size - sizeof total;
    memcpy(dest, (const uint8_t *)(r + 1) + sizeof total, got);
    consume(q, r, 1);
    mp_status_t status = MP_OK;
    while (got < total) {
        if (!has_data(q, 0) && !await_fragment(q)) {
            status = MP_ABORTED;
            break;
        }
        r = peek(q);
        if (r->kind == PAD) {
            consume(q, r, 0);
            continue;
        }
        if ((r->kind != MIDDLE && r->kind != LAST) || got + r->size > total) {
            status = MP_ABORTED; // ABORT, or a stranger's record: this message is lost
            break;
        }
        memcpy((uint8_t *)dest + got, r + 1, r->size);
        got += r->size;
        consume(q, r, 0);
    }
    q->assembling = 0;
    mp_mutex_unlock(&q->consumer);
    return status;
}

int32_t mp_queue_count(const mp_queue_t *q) {
    uint64_t consumed = MP_LOAD(&q->consumed, MP_RELAXED);
    uint64_t produced = MP_LOAD(&q->produced, MP_RELAXED);
    uint64_t n = produced > consumed ? produced - consumed : 0; // consumed may be briefly ahead
    return n > INT32_MAX ? INT32_MAX : (int32_t)n;
}

/// The immediate shutdown's discard (Python 3.13: the items left are dropped and a task is marked
/// done for each, so join() returns once the tasks already taken are done). Under both locks, taken
/// in the producers' order (producer, then consumer): every waiting put and get has been woken and
/// gives up, and a put that takes the producer lock after this sees the shutdown and publishes
/// nothing. Only complete messages are counted: a half-written one's put failed and undid its task.
static void discard_rest(mp_queue_t *q) {
    mp_mutex_lock(&q->producer, MP_FOREVER); // a dead holder's half-written message goes below
    q->streaming = 0;
    if (mp_mutex_lock(&q->consumer, MP_FOREVER) == MP_OWNER_DIED) q->assembling = 0;
    uint64_t complete = 0;
    int open = 0; // inside a fragmented message whose FIRST was seen here
    while (has_data(q, 0)) {
        record_t *r = peek(q);
        switch (r->kind) {
        case WHOLE: complete++; open = 0; break;
        case FIRST: open = 1; break;
        case LAST: complete += (uint64_t)open; open = 0; break;
        case ABORT: open = 0; break;
        default: break; // PAD, MIDDLE
        }
        consume(q, r, r->kind == WHOLE || r->kind == FIRST);
    }
    while (complete-- > 0 && mp_queue_task_done(q) == MP_OK) {}
    mp_mutex_unlock(&q->consumer);
    mp_mutex_unlock(&q->producer);
}

void mp_queue_shutdown(mp_queue_t *q, int immediate) {
    uint32_t level = immediate ? MP_QUEUE_SHUTDOWN_IMMEDIATE : MP_QUEUE_SHUTDOWN;
    uint32_t current = MP_LOAD(&q->shutdown, MP_RELAXED);
    // The level only rises: a plain shutdown after an immediate one changes nothing.
    while (current < level && !MP_CAS(&q->shutdown, &current, level, MP_SEQ_CST, MP_RELAXED)) continue;
    MP_ADD(&q->data_seq, 1, MP_RELEASE);
    MP_ADD(&q->space_seq, 1, MP_RELEASE);
    mp_futex_wake(&q->data_seq, INT_MAX, (int)q->shared);
    mp_futex_wake(&q->space_seq, INT_MAX, (int)q->shared);
    if (immediate) discard_rest(q);
}

// MARK: - JoinableQueue

void mp_queue_task_add(mp_queue_t *q) { MP_ADD(&q->unfinished, 1, MP_RELAXED); }

void mp_queue_task_undo(mp_queue_t *q) {
    if (MP_SUB(&q->unfinished, 1, MP_SEQ_CST) == 1 && MP_LOAD(&q->join_sleepers, MP_SEQ_CST) > 0)
        mp_futex_wake(&q->unfinished, INT_MAX, (int)q->shared);
}

mp_status_t mp_queue_task_done(mp_queue_t *q) {
    uint32_t v = MP_LOAD(&q->unfinished, MP_RELAXED);
    do {
        if (v == 0) return MP_OVERFLOW;
    } while (!MP_CAS(&q->unfinished, &v, v - 1, MP_SEQ_CST, MP_RELAXED));
    if (v == 1 && MP_LOAD(&q->join_sleepers, MP_SEQ_CST) > 0) mp_futex_wake(&q->unfinished, INT_MAX, (int)q->shared);
    return MP_OK;
}

mp_status_t mp_queue_join(mp_queue_t *q, int64_t deadline) {
    for (;;) {
        uint32_t v = MP_LOAD(&q->unfinished, MP_ACQUIRE);
        if (v == 0) return MP_OK;
        MP_ADD(&q->join_sleepers, 1, MP_SEQ_CST);
        v = MP_LOAD(&q->unfinished, MP_SEQ_CST);
        int timed_out = v != 0 && mp_futex_wait(&q->unfinished, v, deadline, (int)q->shared) == ETIMEDOUT;
        MP_SUB(&q->join_sleepers, 1, MP_RELAXED);
        if (timed_out && MP_LOAD(&q->unfinished, MP_ACQUIRE) != 0) return MP_TIMED_OUT;
    }
}
