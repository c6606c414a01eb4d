// What the queue's files share (queue.c: layout, sleeping, shutdown, JoinableQueue; queue_put.c:
// the producer side; queue_get.c: the consumer side): the record format and the small steps both
// sides and the shutdown's discard take. The invariants are stated at the top of queue.c.
#ifndef MP_QUEUE_INTERNAL_H
#define MP_QUEUE_INTERNAL_H

#include "internal.h"

#include <limits.h>
#include <string.h>

enum { WHOLE = 1, FIRST = 2, MIDDLE = 3, LAST = 4, PAD = 5, ABORT = 6 };

typedef mp_queue_record_t record_t; // mp_queue_straight.h: the ring's straight paths read it inline
_Static_assert(sizeof(record_t) == 8, "a record header is 8 bytes: payloads and records stay 8-aligned");
_Static_assert(WHOLE == MP_QUEUE_RECORD_WHOLE, "the straight paths' WHOLE is the record format's");

/// What a FIRST record's payload starts with: the message's total length and its stream id (the
/// producer's `stream`; the reader announces it in `reader`, see queue.c's "Streams").
typedef struct {
    uint64_t total;
    uint64_t stream;
} first_prefix_t;
_Static_assert(sizeof(first_prefix_t) == 16, "a FIRST's prefix keeps its data 8-aligned");

/// The largest record payload: below 2^31, a multiple of 8 (see queue.c's header comment).
#define MAX_PAYLOAD (((uint64_t)1 << 31) - 8)
_Static_assert(MAX_PAYLOAD + sizeof(record_t) <= UINT32_MAX, "record and PAD sizes fit in a u32");
/// How long a reader or writer spins before it parks (see mp_queue_wait_until).
#define SPIN_NS (50 * 1000)
/// The most pauses between two looks of that spin (see mp_queue_wait_until).
#define SPIN_BACKOFF_MAX 32u
/// The most pauses a get that caught up with its producer waits before its first look (see
/// mp_queue_wait_until).
#define CATCH_UP_MAX 32u

static inline uint8_t *ring(mp_queue_view_t *v) { return v->ring; }
/// A position's record in the ring: always 8-aligned and at least 8 bytes before the end, whatever
/// the position (positions live in shared memory; see queue.c's "Trust").
static inline uint64_t offset_of(const mp_queue_view_t *v, uint64_t pos) { return mp_queue_offset_of(v, pos); }
static inline uint64_t padded(uint64_t n) { return (n + 7) & ~(uint64_t)7; }
static inline uint64_t record_bytes(uint64_t payload) { return mp_queue_record_bytes(payload); }

/// Copies up to 64 bytes (most messages) in two overlapping moves (mp_queue_straight.h).
static inline void copy_small(uint8_t *dst, const uint8_t *src, uint64_t n) { mp_queue_copy_small(dst, src, n); }

/// Copies a message's bytes: up to 64 inline (copy_small), more through memcpy, which then costs
/// less than the copy.
static inline void copy_bytes(uint8_t *dst, const uint8_t *src, uint64_t n) {
    if (n > 64) memcpy(dst, src, n);
    else copy_small(dst, src, n);
}

static inline uint64_t max_record(const mp_queue_view_t *v) {
    uint64_t quarter = v->capacity / 4 - sizeof(record_t);
    return quarter < MAX_PAYLOAD ? quarter : MAX_PAYLOAD;
}



/// Whether `deadline` has passed: MP_NOW, or any deadline before now (mp_base.h). A wait by such a
/// deadline is one look: no spin, no refill, no sleep (a nowait call, and a coroutine's try, which
/// must not hold its loop thread: queue_async.c).
static inline int deadline_passed(int64_t deadline) {
    return deadline != MP_FOREVER && (deadline == MP_NOW || deadline <= mp_monotonic_ns());
}

/// The queue's locks are process-owned (mp_queue_init): the mutex's fast path with the caller's pid.
static inline int try_lock_fast(mp_mutex_t *m) { return mp_mutex_try_fast(m, (uint32_t)mp_process_id()); }

/// The slow part of taking a queue lock by an absolute deadline; MP_TIMED_OUT for a busy try.
static inline mp_status_t lock_by(mp_mutex_t *m, int64_t deadline) {
    // A deadline that has passed is a try: no spin, one owner check (as mp_mutex_lock's MP_NOW).
    if (deadline != MP_FOREVER && deadline <= mp_monotonic_ns()) deadline = MP_NOW;
    mp_status_t status = mp_mutex_lock(m, deadline);
    return status == MP_BUSY ? MP_TIMED_OUT : status;
}

/// Bumps `seq` and wakes its sleepers if `sleepers` says there are any. The caller has ordered its
/// publishing store before this read of `sleepers` (a full barrier), pairing with the sleeper's
/// seq_cst increment and fence before its re-check (mp_queue_wait_until, queue_async.c).
static inline void wake_sleepers(mp_queue_view_t *v, uint32_t *seq, uint32_t *sleepers) {
    if (MP_UNLIKELY(MP_LOAD(sleepers, MP_RELAXED) > 0)) {
        MP_ADD(seq, 1, MP_RELEASE);
        mp_futex_wake(seq, INT_MAX, (int)v->shared);
    }
}

/// Wakes with a barrier of its own: for a publisher that still holds its lock.
static inline void wake_if_sleeping(mp_queue_view_t *v, uint32_t *seq, uint32_t *sleepers) {
    mp_full_barrier();
    wake_sleepers(v, seq, sleepers);
}

/// Releases `lock`, then wakes the sleepers of `seq`: the unlock's swap is the barrier that orders
/// the publishing store before the read of `sleepers` (mp_barrier_after_rmw), so a put or get that
/// published under the lock pays one locked instruction, not two.
static inline void unlock_and_wake(mp_queue_view_t *v, mp_mutex_t *lock, uint32_t *seq, uint32_t *sleepers) {
    mp_mutex_unlock(lock);
    mp_barrier_after_rmw();
    wake_sleepers(v, seq, sleepers);
}

// MARK: - Consumer steps (under `consumer`)

static inline int has_data(mp_queue_view_t *v, uint64_t unused) {
    mp_queue_t *q = v->header;
    (void)unused;
    if (q->tail_cache != q->head) return 1;
    q->tail_cache = MP_LOAD(&q->tail, MP_ACQUIRE); // pairs with the producer's release of tail
    return q->tail_cache != q->head;
}

/// Marks the queue unusable in this process: its shared state broke a check (queue.c's "Trust").
/// Relaxed atomics: the flag is set under the consumer lock and read by every put and get of this
/// process, on any thread; it orders nothing else. The straight lane paths test `lane_key` instead
/// of the flag: 0 turns them away too.
static inline mp_status_t corrupted(mp_queue_view_t *v) {
    MP_STORE(&v->corrupted, 1, MP_RELAXED);
    MP_STORE(&v->lane_key, 0, MP_RELAXED);
    return MP_CORRUPTED;
}

/// The size checks of the kinds other than WHOLE (see read_record).
static inline int record_kind_fits(const mp_queue_view_t *v, const record_t *r, uint64_t offset, uint64_t bytes) {
    uint64_t max = max_record(v);
    switch (r->kind) {
    case FIRST: return r->size == max; // stream_once writes a full record (its total: the caller)
    case MIDDLE: return r->size == max;
    case LAST: return r->size > 0 && r->size <= max;
    case PAD: return bytes == v->capacity - offset; // fills the ring to its end
    case ABORT: return r->size == 0;
    default: return 0;
    }
}

/// Copies the header of the record at `pos` into `*out` and checks it against what a producer can
/// have written there, given the published span [head, tail): 1 if it could have, 0 if not. Only the
/// copy counts from here on (the ring's bytes may change under us), and every size the caller uses
/// comes from it. A payload's bytes are not checked: they are the message, whatever they hold.
///
/// Every get's straight path runs it: the span and place checks are combined without branches, a
/// WHOLE is one compare more (`max_whole`: the smaller of a record's and the view's message limit),
/// the other kinds go to record_kind_fits.
static inline __attribute__((always_inline)) int read_record(const mp_queue_view_t *v, uint64_t pos, uint64_t head,
                                                             uint64_t tail, record_t *out) {
    uint64_t offset = offset_of(v, pos);
    memcpy(out, v->ring + offset, sizeof *out);
    uint64_t span = tail - head, at = pos - head, bytes = record_bytes(out->size);
    // Positions 8-aligned and at most a ring apart, `pos` inside the published span, the record
    // within it and before the ring's end (`&`, not `&&`: one branch for all).
    int placed = (((head | tail | pos) & 7) == 0) & (span <= v->capacity) & (at < span) & (bytes <= span - at) &
                 (bytes <= v->capacity - offset);
    if (MP_UNLIKELY(!placed)) return 0;
    if (MP_LIKELY(out->kind == WHOLE)) return out->size <= v->max_whole;
    return record_kind_fits(v, out, offset, bytes);
}

/// Whether the records from `head` were counted already, by a consumer that died before it moved
/// `head` past them: its announcement (count_taken) is complete, its count has landed
/// (`consumed == counting_value`), and `head` lies before the end it announced, at most a ring
/// before it (so a peer's garbage there skips the counts of at most a ring's records).
static inline int counted_already(const mp_queue_view_t *v) {
    const mp_queue_t *q = v->header;
    uint64_t ahead = q->counted_end - q->head;
    return ahead - 1 < v->capacity && q->consumed == q->counting_value;
}

/// count_taken's count, the check for a dead consumer's made by the caller: announces the count
/// and makes it.
static inline void announce_count(mp_queue_view_t *v, uint64_t n, uint64_t end) {
    mp_queue_t *q = v->header;
    q->counting_value = q->consumed + n;
    // The value first, in program order too (a SIGKILL lands between any two instructions, and
    // the CPU makes a dead process's stores visible in that order): an end stored before its
    // value, the old value still equal to `consumed`, would read as this count landed.
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    q->counted_end = end;
    MP_STORE(&q->consumed, q->consumed + n, MP_RELEASE);
}

/// Counts `n` messages taken (in `consumed`) whose records run from `head` to `end`, before the
/// caller moves `head` there.
///
/// A consumer killed between counting messages and moving `head` past them leaves them to be read
/// again by the next consumer, which must not count them twice. So the count is announced first:
/// `counting_value` (what `consumed` becomes), then `counted_end`; counted_already then holds for
/// every record before that end, which the next consumer takes one by one without counting (a
/// batch's run too: counted once for all of its messages, with one announcement). Stores are
/// plain: only the consumer-lock holder reads or writes these. Until the next consumer takes them,
/// a dead consumer's counted messages are both in the ring and off the count: a bounded queue then
/// admits that many more (one message, or a batch: up to `maxSize`). The next consumer announces no
/// count of its own before `head` has passed them (a death in the middle of that announcement would
/// leave both counts unmarked: they would be counted again).
static inline void count_taken(mp_queue_view_t *v, uint64_t n, uint64_t end) {
    if (MP_UNLIKELY(counted_already(v))) {
        // counted by a consumer that died before it could release them
    } else {
        announce_count(v, n, end);
    }
    MP_FAULT_POINT(MP_FAULT_QUEUE_COUNTED);
}

/// Hands a record's bytes back to the producer (and a message slot with them, when `taken`), moving
/// `head` past a record of `size` payload bytes (a size read_record checked); the caller wakes the
/// space sleepers (wake_if_sleeping, or unlock_and_wake once it unlocks).
static inline void release_record(mp_queue_view_t *v, uint32_t size, int taken) {
    mp_queue_t *q = v->header;
    if (taken) count_taken(v, 1, q->head + sizeof(record_t)); // its header's end: this record alone
    MP_STORE(&q->head, q->head + record_bytes(size), MP_RELEASE);
}

/// release_record, then wakes at once (for a consumer that goes on under its lock).
static inline void consume(mp_queue_view_t *v, const record_t *r, int taken) {
    mp_queue_t *q = v->header;
    release_record(v, r->size, taken);
    wake_if_sleeping(v, &q->space_seq, &q->space_sleepers);
}

// MARK: - Lanes (queue_lanes.c)

static inline mp_lane_t *lane_at(mp_queue_view_t *v, uint32_t i) { return mp_queue_lane_at(v, i); }
static inline uint8_t *slot_at(mp_queue_view_t *v, uint32_t i, uint64_t pos) { return mp_queue_slot_at(v, i, pos); }
static inline uint64_t lane_take(mp_queue_view_t *v, uint32_t i, uint8_t *out, uint64_t stride, uint64_t max) {
    return mp_queue_lane_take(v, i, v->slot_size, out, stride, max);
}
#define LANE_BUDGET MP_QUEUE_LANE_BUDGET

/// The lanes a consumer looks at: what `used` says, never more than there are.
static inline uint32_t lanes_used(const mp_queue_view_t *v) {
    uint32_t used = MP_LOAD(&v->lanes->used, MP_ACQUIRE); // pairs with the claim's release
    return used < MP_QUEUE_LANES ? used : MP_QUEUE_LANES;
}

/// Under the consumer lock: the lane to take the next message from (its count checked), -1 when
/// the ring's turn has come or no lane has one, or -2 when a lane's positions are impossible.
__attribute__((visibility("hidden"))) int lane_pick(mp_queue_view_t *v, int ring_first);
/// The lanes' bytes for a ring of `capacity` and slots of `slot_size` (0 for none).
__attribute__((visibility("hidden"))) uint64_t mp_queue_lanes_bytes(uint64_t capacity, uint32_t slot_size);
/// Fills the view's lane fields for lanes at `after_ring` (held_lane -1 in any case).
__attribute__((visibility("hidden"))) void mp_queue_lanes_attach(mp_queue_view_t *view, uint8_t *after_ring,
                                                                 uint64_t capacity, uint32_t slot_size);
/// Under both locks, an immediate shutdown: drops every lane's messages.
__attribute__((visibility("hidden"))) void lanes_discard(mp_queue_view_t *v);
/// Messages in the lanes (a snapshot).
__attribute__((visibility("hidden"))) uint64_t lanes_count(mp_queue_view_t *v);
/// Whether any lane has a message (the sleeping consumer's check).
__attribute__((visibility("hidden"))) int lanes_have_data(mp_queue_view_t *v);
/// The calling thread's lane in this queue, claimed on its first put: its index, or -1 (the thread
/// uses the ring: every lane is owned by a live thread, or it has used the ring before).
__attribute__((visibility("hidden"))) int lane_of_caller(mp_queue_view_t *v, int claim);
/// A put of one slot-sized message through lane `i` (the caller's), waiting for room until `deadline`.
__attribute__((visibility("hidden"))) mp_status_t lane_put(mp_queue_view_t *v, uint32_t i, const void *data,
                                                           uint64_t count, uint64_t stride, int64_t deadline,
                                                           uint64_t *put);
/// Whether lane `i` has room for a message (the async put's check).
__attribute__((visibility("hidden"))) int lane_has_room(mp_queue_view_t *v, uint64_t i);
/// What a sleeping consumer does after announcing itself and before its last look: makes every
/// lane producer's earlier `tail` store visible to it (see queue_lanes.c's "Sleeping").
__attribute__((visibility("hidden"))) void lanes_before_sleep(mp_queue_view_t *v);
/// The longest a consumer may sleep before it looks at the lanes again: forever when lane
/// producers are fenced by membarrier, else 1 ms (see queue_lanes.c).
__attribute__((visibility("hidden"))) int64_t lanes_sleep_cap(mp_queue_view_t *v, int64_t deadline);

/// Whether this process's lane puts must fence (membarrier is unusable here; queue_lanes.c's
/// "Sleeping"), read by every out-of-line lane put. Written only by queue_lanes.c.
__attribute__((visibility("hidden"))) extern uint32_t lanes_fenced;

/// After a lane's `tail` store: wakes the consumers if one sleeps (see queue_lanes.c's "Sleeping").
static inline void wake_consumers(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    if (MP_UNLIKELY(MP_LOAD(&lanes_fenced, MP_RELAXED))) mp_full_barrier();
    else __atomic_signal_fence(__ATOMIC_SEQ_CST); // the sleeper's membarrier is the other half
    wake_sleepers(v, &q->data_seq, &q->data_sleepers);
}

/// One message through lane `i`: the straight path inline (room known from the cached head, no
/// shutdown), anything else through lane_put.
static inline mp_status_t lane_put_one(mp_queue_view_t *v, uint32_t i, const void *data, int64_t deadline) {
    mp_lane_t *l = lane_at(v, i);
    uint64_t tail = MP_LOAD(&l->tail, MP_RELAXED); // only this thread stores it
    if (MP_UNLIKELY(tail - l->head_cache >= v->lane_slots || MP_LOAD(&v->header->shutdown, MP_RELAXED))) {
        uint64_t put;
        return lane_put(v, i, data, 1, 0, deadline, &put);
    }
    copy_bytes(slot_at(v, i, tail), data, v->slot_size);
    MP_STORE(&l->tail, tail + 1, MP_RELEASE); // publishes the slot (see queue_lanes.c)
    wake_consumers(v);
    return MP_OK;
}

/// Messages waiting in lane `i` (a look: straight gets may take them meanwhile, which
/// mp_queue_lane_take then finds), or UINT64_MAX when its positions are impossible (written by a
/// peer: more than a lane apart). As in mp_queue_lane_take, the producer's line is read only when
/// the consumers' view of `tail` has been used up.
static inline uint64_t lane_waiting(mp_queue_view_t *v, uint32_t i) {
    mp_lane_t *l = lane_at(v, i);
    uint64_t head = MP_LOAD(&l->head, MP_RELAXED);
    uint64_t n = MP_LOAD(&l->tail_cache, MP_ACQUIRE) - head; // pairs with its release store
    if (n - 1 < v->lane_slots) return n;                       // in [1, lane_slots]
    uint64_t tail = MP_LOAD(&l->tail, MP_ACQUIRE);             // pairs with the producer's release
    n = tail - head;
    if (n > v->lane_slots) { // impossible, unless a straight get moved `head` since
        head = MP_LOAD(&l->head, MP_RELAXED);
        n = tail - head;
        if (n > v->lane_slots) return UINT64_MAX;
    }
    MP_STORE(&l->tail_cache, tail, MP_RELEASE);
    return n;
}

/// Starts the calling thread's straight turn (mp_lane_turn) on lane `i` of `v`, for `left` takes:
/// after a pick, which took one of the consumers' `budget`. None on a corrupted view.
static inline void lanes_turn_to(mp_queue_view_t *v, uint32_t i, uint32_t left) {
    mp_lane_turn_t *t = &mp_lane_turn;
    t->key = MP_LOAD(&v->lane_key, MP_RELAXED) != 0 ? MP_LANE_KEY(v->lane_nonce) : 0;
    t->lane = lane_at(v, i);
    t->slots = slot_at(v, i, 0);
    t->mask = v->lane_slots - 1;
    t->left = left;
    t->known_tail = 0; // below any `head` but 0: the first get reads `tail`
}

/// Before a pick: a straight turn the calling thread spent in `v` ends the lane's turn for every
/// consumer (`budget` 0: lane_pick moves `cursor` on, the ring first), so that a consumer that
/// takes straight from one lane moves on after LANE_BUDGET messages, as one that takes under the
/// lock does.
static inline void lanes_end_spent_turn(mp_queue_view_t *v) {
    mp_lane_turn_t *t = &mp_lane_turn;
    if (t->key == MP_LANE_KEY(v->lane_nonce) && t->left == 0) {
        MP_STORE(&v->lanes->budget, 0, MP_RELAXED);
        t->key = 0;
    }
}

/// Under the consumer lock: lane_pick, with the common case inline: the current lane has a
/// message and budget left. `cursor` and `budget` are hints that straight gets write too.
static inline int lane_pick_fast(mp_queue_view_t *v) {
    struct mp_queue_lanes *a = v->lanes;
    lanes_end_spent_turn(v);
    uint32_t c = MP_LOAD(&a->cursor, MP_RELAXED), budget = MP_LOAD(&a->budget, MP_RELAXED);
    if (MP_LIKELY(c < MP_QUEUE_LANES && budget - 1 < LANE_BUDGET)) { // budget in [1, LANE_BUDGET]
        uint64_t n = lane_waiting(v, c);
        if (MP_LIKELY(n - 1 < v->lane_slots)) { // in [1, lane_slots]
            MP_STORE(&a->budget, budget - 1, MP_RELAXED);
            lanes_turn_to(v, c, budget - 1);
            return (int)c;
        }
    }
    return lane_pick(v, 1);
}

/// A sleeper's half of the pairing (queue.c's "Sleeping"): reads `seq`, counts itself in `sleepers`
/// (seq_cst) and fences, so that its next look at the queue sees a publication or the publisher
/// sees it (a data sleeper also makes the lanes' unfenced stores visible: queue_lanes.c). Returns
/// the value of `seq` to sleep on; the caller takes itself off `sleepers` after it slept or looked.
static inline uint32_t announce_sleeper(mp_queue_view_t *v, uint32_t *seq, uint32_t *sleepers) {
    uint32_t observed = MP_LOAD(seq, MP_ACQUIRE); // pairs with the publisher's release bump
    MP_ADD(sleepers, 1, MP_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); // the look that follows must not pass the increment
    if (v->lanes && seq == &v->header->data_seq) lanes_before_sleep(v); // lane producers do not fence
    return observed;
}

/// Whether the ring or a lane has a message (a consumer's wait predicate).
static inline int has_any(mp_queue_view_t *v, uint64_t unused) {
    return has_data(v, unused) || (v->lanes && lanes_have_data(v));
}

/// Spins briefly, then sleeps on `seq` until `ready(v, arg)` holds, the deadline passes, or the
/// shutdown level reaches `stop_at` (MP_QUEUE_SHUTDOWN, or MP_QUEUE_SHUTDOWN_IMMEDIATE for a wait
/// that a plain shutdown must not end). A passed deadline (deadline_passed) is one look; the spin
/// never outlasts the deadline. queue.c.
__attribute__((visibility("hidden"))) mp_status_t
mp_queue_wait_until(mp_queue_view_t *v, uint32_t *seq, uint32_t *sleepers, int (*ready)(mp_queue_view_t *, uint64_t),
                    uint64_t arg, int64_t deadline, uint32_t stop_at);

// MARK: - A coroutine's steps (queue_async.c): never wait, never spin

/// mp_queue_get_begin for a coroutine: the consumer lock by its CAS alone (MP_BUSY when held: the
/// caller awaits the lock word, whose owner mp_mutex_await_free checks on a schedule, so a lost
/// race costs no owner check), then the message there, by a passed deadline: MP_OK (held, as
/// mp_queue_get_begin), MP_TIMED_OUT (none after all: the lock released), MP_SHUTDOWN,
/// MP_CORRUPTED. queue_get.c.
__attribute__((visibility("hidden"))) mp_status_t queue_get_try(mp_queue_view_t *v, const void **payload,
                                                                uint64_t *length, uint64_t *total);
/// mp_queue_put of one record-sized message into the ring for a coroutine: the producer lock by its
/// CAS alone (MP_BUSY when held, as queue_get_try), then what the put needs first (the ABORT a dead
/// producer's stream owes, or the record's room and message slot), checked with the put's own
/// predicates under the lock: with none, the caller is announced in `space_sleepers`
/// (announce_sleeper, `*observed` the `space_seq` to sleep on), the lock released, and MP_WAIT
/// returned; the caller takes itself off after its sleep. Else the put by a passed deadline:
/// MP_OK, or MP_TIMED_OUT (a racing consumer-side change: look again), MP_SHUTDOWN, MP_CORRUPTED.
/// queue_put.c.
__attribute__((visibility("hidden"))) mp_status_t queue_put_try(mp_queue_view_t *v, const void *data,
                                                                uint64_t length, uint32_t *observed);

#endif
