// A queue's lanes and the straight paths over them, inline in the caller (queue/queue_lanes.c owns
// the protocol; this header is its inline half). Part of CMultiprocessing.h (see it for the rules
// every header here follows).
//
// Why inline: a put and a get of a fixed-size value through a lane cost a few dozen instructions,
// and the calls around them (arguments spilled to memory, the value copied through a pointer, a
// frame per call) cost as much again. Swift's specialized `Queue.put` and `get` inline these
// functions with the element's size as a constant; anything off the straight path (no lane yet,
// a full or empty lane, a shutdown, a sleeper to wake) returns to the out-of-line C paths, which
// take every decision these do not.
#ifndef MP_QUEUE_STRAIGHT_H
#define MP_QUEUE_STRAIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "mp_queue.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Every function here: inline even where the compiler's heuristics would not inline it (Swift's
/// optimizer otherwise keeps the larger ones as calls).
#define MP_STRAIGHT static inline __attribute__((always_inline))

/// How many lanes a queue has: producer threads beyond this many use the ring.
#define MP_QUEUE_LANES 8u
/// Messages a consumer takes from one lane in a row while others wait (then the next lane, and
/// the ring, get their turn).
#define MP_QUEUE_LANE_BUDGET 64u

/// One producer thread's single-producer ring of fixed-size slots. Its owner writes `tail` (and
/// `head_cache`, `owner` when it claims it); consumers, any number at once, move `head` by CAS
/// (mp_queue_lane_take). Positions count slots and never wrap.
typedef struct mp_lane {
    // Producer line: the one consumers poll.
    uint64_t tail;       // slots published, release-stored
    uint64_t head_cache; // the owner's last view of `head`
    uint32_t owner;      // the owning thread's id; 0: free
    uint32_t producer_pad[11];
    // Consumer line.
    uint64_t head;       // slots consumed, moved by a release CAS
    uint64_t tail_cache; // a value `tail` had (any consumer's last look), release-stored
    uint64_t consumer_pad[6];
} mp_lane_t;
_Static_assert(sizeof(mp_lane_t) == 128, "a lane's header is two cache lines");
_Static_assert(offsetof(mp_lane_t, head) == 64, "the consumer's line second");

/// The lanes' shared header, after the ring; the slots follow it.
struct mp_queue_lanes {
    // Claim line: written when a producer claims a lane (rarely).
    uint32_t used;     // lanes ever claimed: consumers look at [0, used); only grows
    uint32_t claim_pad0;
    uint64_t queue_id; // set once at creation: a thread's lane choice is keyed by it (queue_lanes.c)
    uint32_t claim_pad[12];
    // Consumer line: hints that every consumer reads and writes, relaxed (a lost update only
    // moves a turn).
    uint32_t cursor; // the lane a consumer looks at first
    uint32_t budget; // takes left from it before the others get a turn
    uint32_t consumer_pad[14];
    mp_lane_t lane[MP_QUEUE_LANES];
};
_Static_assert(sizeof(struct mp_queue_lanes) == 128 + 128 * MP_QUEUE_LANES, "lanes header layout");
_Static_assert(offsetof(struct mp_queue_lanes, cursor) == 64, "the consumer's state on its own line");
_Static_assert(offsetof(struct mp_queue_lanes, lane) % 64 == 0, "lanes start on a cache line");

/// A thread's lane in a queue (queue_lanes.c keeps one per queue it has put to), and, in its last
/// choice, what the straight put reads through the view it last used (`key` names that view).
typedef struct mp_lane_choice {
    uint64_t queue_id;
    int32_t tid;
    int32_t lane; // -1: the ring
    /// What the straight put compares with its view's `lane_key` and its message's size
    /// (mp_queue_put_lane_straight): MP_LANE_KEY(the view's lane_nonce) for a lane the put may
    /// take straight, 0 otherwise (the ring, or a process whose lane puts must fence: they go out
    /// of line, which fences).
    uint64_t key;
    /// The lane's header and its first slot in that view's mapping, and its slot count less one.
    /// Used only while `key` matches: a view's nonce is never reused, so these never outlive the
    /// mapping they point into.
    mp_lane_t *_Nullable lane_header;
    uint8_t *_Nullable slots;
    uint64_t mask;
    /// The lane's `head_cache` + its slot count: the straight put has room while `tail` is below
    /// it. The owner's private copy, set wherever it sets `head_cache` (queue_lanes.c).
    uint64_t limit;
} mp_lane_choice_t;

/// A lane choice's key for the view whose `lane_nonce` is `id`: the top bit set, so that it is
/// never 0 (a new thread's zeroed choice, or a ring choice) and never a message size (what the
/// test yields on a view without lanes); the nonce above the low 16 bits, which a view's
/// `lane_key ^ size` holds as `slot_size ^ size`, so that a message of another size than the slots'
/// matches no key at all. (With the nonce in the low bits, `lane_key ^ size` of nonce n named the
/// view of nonce n ^ slot_size ^ size: nonces are small and consecutive, so a put of another size
/// went to another queue's lane through that view's choice.) Sound for 2^47 views per process.
#define MP_LANE_KEY(id) (((uint64_t)(id) << 16) | ((uint64_t)1 << 63))
_Static_assert(MP_QUEUE_MAX_SLOT < (1u << 16) && 64 < (1u << 16), "slot and message sizes below the key's nonce");

/// The calling thread's last lane choice. Initial-exec TLS: a plain %fs-relative load, so that a
/// put's straight path makes no call. Written only by queue_lanes.c, which zeroes it in a forked
/// child (pthread_atfork: the child's thread is not the one that chose).
extern __thread mp_lane_choice_t mp_last_lane_choice __attribute__((tls_model("initial-exec")));
/// A lane put's wake-up, out of line (a consumer sleeps on `data_seq`).
void mp_queue_wake_consumers(mp_queue_view_t *_Nonnull v);
/// A lane get's wake-up, out of line (a producer sleeps on `space_seq`).
void mp_queue_wake_producers(mp_queue_view_t *_Nonnull v);
/// mp_queue_lane_take's copy where ThreadSanitizer watches (queue_lanes.c): the same bytes, read
/// where the sanitizer does not look, since a copy that loses its race may overlap a producer's
/// write of the next lap's message, and is thrown away.
void mp_queue_copy_unwatched(uint8_t *_Nonnull dst, const uint8_t *_Nonnull src, uint64_t n);

/// Copies up to 64 bytes (most messages) in two overlapping moves, inline and without a call (with
/// a constant `n`, one or two moves). Nothing outside [0, n) is read or written; the two buffers
/// never overlap.
MP_STRAIGHT void mp_queue_copy_small(uint8_t *_Nonnull dst, const uint8_t *_Nonnull src, uint64_t n) {
#define MP_MOVE_PAIR(width)                                                                        \
    do {                                                                                           \
        uint8_t first[width], last[width];                                                         \
        __builtin_memcpy(first, src, width);                                                       \
        __builtin_memcpy(last, src + n - (width), width);                                          \
        __builtin_memcpy(dst, first, width);                                                       \
        __builtin_memcpy(dst + n - (width), last, width);                                          \
    } while (0)
    if (n >= 32) MP_MOVE_PAIR(32);
    else if (n >= 16) MP_MOVE_PAIR(16);
    else if (n >= 8) MP_MOVE_PAIR(8);
    else if (n >= 4) MP_MOVE_PAIR(4);
    else if (n > 0) {
        dst[0] = src[0];
        dst[n / 2] = src[n / 2];
        dst[n - 1] = src[n - 1];
    }
#undef MP_MOVE_PAIR
}

MP_STRAIGHT mp_lane_t *_Nonnull mp_queue_lane_at(mp_queue_view_t *_Nonnull v, uint32_t i) {
    return &v->lanes->lane[i];
}

/// A lane slot's stride for messages of `size` bytes, the queue's slot size (queue_lanes.c's
/// stride_of): the straight paths derive it from their constant size, so that no multiplication
/// by the view's `slot_stride` is left.
MP_STRAIGHT uint64_t mp_queue_stride_of(uint64_t size) { return (size + 7) & ~(uint64_t)7; }

/// Slot `pos` of lane `i`, `stride` apart (the view's `slot_stride`): inside the lanes whatever
/// `pos` holds (positions are shared memory).
MP_STRAIGHT uint8_t *_Nonnull mp_queue_slot_of(mp_queue_view_t *_Nonnull v, uint32_t i, uint64_t pos, uint64_t stride) {
    return v->slots + ((uint64_t)i * v->lane_slots + (pos & (v->lane_slots - 1))) * stride;
}

/// Slot `pos` of lane `i`.
MP_STRAIGHT uint8_t *_Nonnull mp_queue_slot_at(mp_queue_view_t *_Nonnull v, uint32_t i, uint64_t pos) {
    return mp_queue_slot_of(v, i, pos, v->slot_stride);
}

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MP_QUEUE_STRAIGHT_TSAN 1
#endif
#endif

/// Whether a run of messages of `size` bytes, `stride` apart in the caller's buffer, lies as a
/// lane's slots do (no padding in either: each slot is exactly `size` bytes), so that the run moves
/// as a block.
MP_STRAIGHT int mp_queue_lane_run_is_packed(uint64_t size, uint64_t stride) {
    return stride == size && mp_queue_stride_of(size) == size;
}

/// Of a run of `n` slots from position `pos`, how many lie before the lane's end (the rest wrap to
/// its start).
MP_STRAIGHT uint64_t mp_queue_lane_run_before_end(const mp_queue_view_t *_Nonnull v, uint64_t pos, uint64_t n) {
    uint64_t before_end = v->lane_slots - (pos & (v->lane_slots - 1));
    return n < before_end ? n : before_end;
}

/// A consumer's block copy out of a lane: memcpy, or where ThreadSanitizer watches the unwatched
/// copy (see mp_queue_copy_unwatched: a copy that loses its CAS may overlap the producer's writes).
MP_STRAIGHT void mp_queue_copy_run(uint8_t *_Nonnull dst, const uint8_t *_Nonnull src, uint64_t n) {
#ifdef MP_QUEUE_STRAIGHT_TSAN
    mp_queue_copy_unwatched(dst, src, n);
#else
    __builtin_memcpy(dst, src, n);
#endif
}

/// Takes up to `max` (at least 1) messages of `size` bytes (the queue's slot size, which callers
/// checked or read from the view) from lane `i`'s head, any number of consumers at once
/// (queue_lanes.c's "Who writes what"): copies them to `out`, `stride` bytes apart, then moves
/// `head` past them with one CAS. A CAS that fails means another consumer took them first: the
/// copies are dropped (they may be torn: the producer may be writing its next lap there) and the
/// take starts again from the `head` it found. A consumer killed before its CAS has taken nothing.
/// Returns the count taken (0: the lane is empty), or UINT64_MAX when its positions are impossible
/// (written by a peer: more than a lane apart).
MP_STRAIGHT uint64_t mp_queue_lane_take(mp_queue_view_t *_Nonnull v, uint32_t i, uint64_t size,
                                        uint8_t *_Nonnull out, uint64_t stride, uint64_t max) {
    mp_lane_t *l = mp_queue_lane_at(v, i);
    // Read before the atomic loads below, which the compiler otherwise makes it read again after.
    uint64_t lane_slots = v->lane_slots;
    uint64_t head = __atomic_load_n(&l->head, __ATOMIC_RELAXED); // checked by the CAS
    for (;;) {
        // Acquire: pairs with the release store of the consumer that read `tail` (itself an
        // acquire of the producer's release), so the slots below it are visible here too. The
        // producer's line is read only when that view is used up: a consumer that keeps up with
        // its producer does not pull the line over on every get.
        uint64_t tail = __atomic_load_n(&l->tail_cache, __ATOMIC_ACQUIRE), n = tail - head;
        if (n - 1 >= lane_slots) { // none by that view (or `head` moved past it, or garbled)
            tail = __atomic_load_n(&l->tail, __ATOMIC_ACQUIRE); // pairs with the producer's release
            n = tail - head;
            if (n == 0) return 0;
            if (n > lane_slots) { // impossible, unless `head` moved on since it was read
                uint64_t now = __atomic_load_n(&l->head, __ATOMIC_RELAXED);
                if (now == head) return UINT64_MAX;
                head = now;
                continue;
            }
            __atomic_store_n(&l->tail_cache, tail, __ATOMIC_RELEASE);
        }
        // The slot after this take, when the view shows it published: its line is on its way while
        // the CAS below waits (a locked instruction lets no later load start), so a consumer in
        // another process that takes one message at a time does not wait for each line in turn.
        if (n > max) {
            __builtin_prefetch(mp_queue_slot_of(v, i, head + max, mp_queue_stride_of(size)));
            n = max;
        }
        if (mp_queue_lane_run_is_packed(size, stride) && n > 1) {
            // A batch whose messages lie packed as the slots do: one move, or two where the run
            // wraps at the lane's end (the straight get, one message, never comes here).
            uint64_t first = mp_queue_lane_run_before_end(v, head, n);
            mp_queue_copy_run(out, mp_queue_slot_of(v, i, head, size), first * size);
            if (n > first) mp_queue_copy_run(out + first * size, mp_queue_slot_of(v, i, head + first, size), (n - first) * size);
        } else {
            for (uint64_t k = 0; k < n; k++) {
                const uint8_t *slot = mp_queue_slot_of(v, i, head + k, mp_queue_stride_of(size));
#ifdef MP_QUEUE_STRAIGHT_TSAN
                mp_queue_copy_unwatched(out + k * stride, slot, size);
#else
                if (size <= 64) mp_queue_copy_small(out + k * stride, slot, size); // a constant in the straight paths
                else __builtin_memcpy(out + k * stride, slot, size);
#endif
            }
        }
        // Release: the copies above happen before a producer that sees the new `head` writes
        // these slots again (its acquire load of `head`). Fails, and reloads `head`, when another
        // consumer moved it: positions never repeat (64 bits), so an equal `head` is the same message.
        if (__atomic_compare_exchange_n(&l->head, &head, head + n, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) return n;
    }
}

/// A full barrier right after an atomic read-modify-write (the unlock's swap): on x86-64 the RMW
/// is a locked instruction and already one, so only the compiler is stopped; elsewhere, and under
/// ThreadSanitizer, the C11 fence (internal.h's mp_barrier_after_rmw, for the inline paths).
MP_STRAIGHT void mp_queue_barrier_after_rmw(void) {
#if defined(__x86_64__) && !defined(MP_QUEUE_STRAIGHT_TSAN)
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/// mp_queue_put's straight path on a lane: a message of `size` bytes (the queue's slot size, at
/// most 64) into the calling thread's lane of the view it put through last, with room by the cached
/// head and no shutdown. No lock and no locked instruction: a copy, the release store of `tail`, one
/// load of `data_sleepers` (queue_lanes.c's "Sleeping": the sleeper's membarrier is the other half;
/// a process that cannot use membarrier has no straight key, and fences out of line). 1 if put; 0 if
/// the straight path does not apply, and nothing was done (call mp_queue_put).
MP_STRAIGHT int mp_queue_put_lane_straight(mp_queue_view_t *_Nonnull v, const void *_Nonnull data, uint64_t size) {
    mp_lane_choice_t *last = &mp_last_lane_choice;
    // The choice's address as a plain pointer, computed once (the compiler otherwise rebuilds the
    // %fs-relative offset for each of its fields; a loop of puts computes it once, outside).
    __asm__("" : "+r"(last));
    // One test for all of: the view has lanes and is sound, its slots hold `size` bytes, and the
    // thread's last choice is a lane it may put to straight, made through this view (whose
    // pointers it holds). A sound lanes view's `lane_key` is MP_LANE_KEY(lane_nonce) ^ slot_size
    // (mp_queue_lanes_attach), else 0 (no lanes, or corrupted), so `lane_key ^ size` is the
    // choice's key only for a straight lane choice through this view with `size` the slot size: a
    // ring choice's key and a new thread's are 0, and a view without lanes yields `size` (never 0
    // here). A forked child's inherited choice was zeroed (queue_lanes.c).
    if (size == 0 || size > 64 || (__atomic_load_n(&v->lane_key, __ATOMIC_RELAXED) ^ size) != last->key) return 0;
    mp_queue_t *q = v->header; // read once: after the slot's stores the compiler would read it again
    mp_lane_t *l = last->lane_header;
    uint64_t tail = __atomic_load_n(&l->tail, __ATOMIC_RELAXED); // only this thread stores it
    if (__builtin_expect(tail >= last->limit || __atomic_load_n(&q->shutdown, __ATOMIC_RELAXED) != 0, 0)) return 0;
    // The slot inside the lane whatever `tail` holds (the mask), as mp_queue_slot_of.
    mp_queue_copy_small(last->slots + (tail & last->mask) * mp_queue_stride_of(size), (const uint8_t *)data, size);
    __atomic_store_n(&l->tail, tail + 1, __ATOMIC_RELEASE); // publishes the slot
#ifdef MP_QUEUE_STRAIGHT_TSAN
    __atomic_thread_fence(__ATOMIC_SEQ_CST); // TSan builds always fence (TSan does not model membarrier)
#else
    __atomic_signal_fence(__ATOMIC_SEQ_CST); // the sleeper's membarrier is the other half
#endif
    if (__builtin_expect(__atomic_load_n(&q->data_sleepers, __ATOMIC_RELAXED) != 0, 0)) mp_queue_wake_consumers(v);
    return 1;
}

/// mp_queue_put_lane_straight for a message of at most 8 bytes, passed in a register (`word`: the
/// message's bytes, from the first), so that the caller keeps no copy in memory.
MP_STRAIGHT int mp_queue_put_lane_word(mp_queue_view_t *_Nonnull v, uint64_t size, uint64_t word) {
    return size <= 8 && mp_queue_put_lane_straight(v, &word, size);
}

/// A consumer thread's turn on one lane, in the view it last took from straight: the straight get
/// takes from that lane alone, at most `left` more messages, with no shared hint read or written.
/// queue_lanes.c starts a turn (from the consumers' `cursor` and `budget`, which it moves on) and
/// ends it; the straight get only counts it down and caches `tail`. Thread-private.
typedef struct mp_lane_turn {
    /// MP_LANE_KEY(the view's lane_nonce) while the turn is in that view; 0: none. The pointers
    /// below are used only while it matches the view's `lane_key` (see mp_lane_choice_t).
    uint64_t key;
    mp_lane_t *_Nullable lane;
    const uint8_t *_Nullable slots; // the lane's first slot
    uint64_t mask;                  // its slot count less one
    uint64_t left;                  // straight takes left in the turn
    /// A value the lane's `tail` had, read with acquire by this thread (so the slots below it are
    /// visible here): while `head` is below it, a get does not read the producer's line.
    uint64_t known_tail;
} mp_lane_turn_t;

/// The calling thread's turn (initial-exec TLS, as mp_last_lane_choice). Written by the straight
/// get (`left`, `known_tail`) and by queue_lanes.c.
extern __thread mp_lane_turn_t mp_lane_turn __attribute__((tls_model("initial-exec")));

/// The straight get's out-of-line step when the calling thread has no turn in view `v` (its turn
/// is in another view, or none), or has spent it; no lock. A new turn starts on the lane of the
/// consumers' `cursor`, for the `budget` it has left (taking one of it); a spent turn goes on for
/// another LANE_BUDGET when nothing else waits (no other lane and the ring empty), else it ends
/// and the lane's turn with it. 1 if the thread has a turn in `v`; 0 when `v` has no sound lanes of
/// `size`-byte slots, or the turn is over (the locked get moves on).
int mp_queue_lane_turn_begin(mp_queue_view_t *_Nonnull v, uint64_t size);

/// mp_queue_get_begin's straight path on a lane, with no lock: the next message of `size` bytes (the
/// queue's slot size, at most 64) from the lane of the thread's turn, copied to `out`, then the
/// producers woken if one waits for room (the CAS is the barrier before that read). 1 if taken; 0
/// if the straight path does not apply (the lane is empty, the turn is over, a shutdown, a garbled
/// lane), and nothing was taken (call mp_queue_get_begin, which decides all of those and starts the
/// next turn).
MP_STRAIGHT int mp_queue_take_lane_straight(mp_queue_view_t *_Nonnull v, uint64_t size, uint8_t *_Nonnull out) {
    mp_lane_turn_t *t = &mp_lane_turn;
    if (size == 0 || size > 64) return 0;
    // One test for: the view has lanes and is sound, its slots hold `size` bytes, and the thread's
    // turn is in this view (mp_queue_put_lane_straight's test, against the turn's key).
    if (__builtin_expect((__atomic_load_n(&v->lane_key, __ATOMIC_RELAXED) ^ size) != t->key || t->left == 0, 0) &&
        !mp_queue_lane_turn_begin(v, size))
        return 0;
    mp_queue_t *q = v->header; // read once: after the take's CAS the compiler would read it again
    // Relaxed shutdown: a get that overlaps an immediate shutdown may take a message it discards.
    if (__builtin_expect(__atomic_load_n(&q->shutdown, __ATOMIC_RELAXED) == MP_QUEUE_SHUTDOWN_IMMEDIATE, 0)) return 0;
    mp_lane_t *l = t->lane;
    uint64_t mask = t->mask, stride = mp_queue_stride_of(size);
    uint64_t head = __atomic_load_n(&l->head, __ATOMIC_RELAXED); // checked by the CAS
    for (;;) {
        uint64_t n = t->known_tail - head;
        if (n - 1 > mask) { // none by that view (or `head` moved past it, or garbled)
            uint64_t tail = __atomic_load_n(&l->tail, __ATOMIC_ACQUIRE); // pairs with the producer's release
            n = tail - head;
            if (n - 1 > mask) return 0; // empty, or positions more than a lane apart: the locked get decides
            t->known_tail = tail;
        }
        // The next slot, when published: its line is on its way while the CAS below waits (see
        // mp_queue_lane_take).
        if (n > 1) __builtin_prefetch(t->slots + ((head + 1) & mask) * stride);
        const uint8_t *slot = t->slots + (head & mask) * stride; // inside the lane whatever `head` holds
#ifdef MP_QUEUE_STRAIGHT_TSAN
        mp_queue_copy_unwatched(out, slot, size); // a copy that loses its CAS may be torn (mp_queue_lane_take)
#else
        mp_queue_copy_small(out, slot, size);
#endif
        // Release: the copy happens before a producer that sees the new `head` writes the slot
        // again. Fails, and reloads `head`, when another consumer moved it.
        if (__atomic_compare_exchange_n(&l->head, &head, head + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)) break;
    }
    t->left--;
    mp_queue_barrier_after_rmw(); // the CAS orders `head` before the read of the sleepers
    if (__builtin_expect(__atomic_load_n(&q->space_sleepers, __ATOMIC_RELAXED) > 0, 0)) mp_queue_wake_producers(v);
    return 1;
}

/// A straight get's value of at most 8 bytes, in registers: `taken` 0 when nothing was taken.
typedef struct mp_lane_word {
    uint64_t taken;
    uint64_t word; // the message's bytes, from the first
} mp_lane_word_t;

/// mp_queue_take_lane_straight for a message of at most 8 bytes, returned in registers.
MP_STRAIGHT mp_lane_word_t mp_queue_get_lane_word(mp_queue_view_t *_Nonnull v, uint64_t size) {
    mp_lane_word_t r = {0, 0}; // copied into by address, then a register once inlined
    if (size <= 8) r.taken = (uint64_t)mp_queue_take_lane_straight(v, size, (uint8_t *)&r.word);
    return r;
}

/// Where a lane's straight get of a message of more than 8 bytes copies it: the calling thread's
/// own, read by the caller before its next get (a stack buffer in the caller instead made every
/// get, the ring's too, pay for a stack protector and a call more). Written only by
/// mp_queue_get_lane_straight.
extern __thread uint64_t mp_lane_taken[8] __attribute__((tls_model("initial-exec")));

/// mp_queue_take_lane_straight into the thread's `mp_lane_taken`: the copy if taken, else NULL.
MP_STRAIGHT const void *_Nullable mp_queue_get_lane_straight(mp_queue_view_t *_Nonnull v, uint64_t size) {
    return mp_queue_take_lane_straight(v, size, (uint8_t *)mp_lane_taken) ? mp_lane_taken : 0;
}

// MARK: - The ring's straight path (queue_put.c owns the producer's protocol; this is the inline
// prefix of put_held)

/// A ring record's header (queue.c's format): the payload's bytes and its kind.
typedef struct mp_queue_record {
    uint32_t size;
    uint32_t kind;
} mp_queue_record_t;
/// A record that holds a message whole.
#define MP_QUEUE_RECORD_WHOLE 1u

/// A position's record in the ring: 8-aligned and at least 8 bytes before the end, whatever the
/// position holds.
MP_STRAIGHT uint64_t mp_queue_offset_of(const mp_queue_view_t *_Nonnull v, uint64_t pos) {
    return pos & (v->capacity - 8);
}
/// The ring bytes a record of `payload` bytes takes: its header and the payload padded to 8.
MP_STRAIGHT uint64_t mp_queue_record_bytes(uint64_t payload) {
    return sizeof(mp_queue_record_t) + ((payload + 7) & ~(uint64_t)7);
}

/// The ring put with the producer lock held: the out-of-line rest of mp_queue_put_straight
/// (waits, PADs, an ABORT owed, a stream). Releases the lock; mp_queue_put's outcomes.
mp_status_t mp_queue_put_held(mp_queue_view_t *_Nonnull v, const void *_Nullable data, uint64_t length,
                              int64_t deadline_ns);

/// mp_queue_put's straight path into the ring: a message of `size` bytes (at most 64) that takes no
/// lane (a queue without lanes, or lanes of another size: the caller knows which, and takes a lane's
/// straight path itself), with the producer lock by its CAS, as a whole record before the ring's
/// end, within the cached room and message count. MP_OK when put;
/// MP_BUSY when the straight path does not apply and nothing was done (call mp_queue_put);
/// otherwise the outcome of mp_queue_put_held, which took over with the lock held.
MP_STRAIGHT mp_status_t mp_queue_put_straight(mp_queue_view_t *_Nonnull v, const void *_Nonnull data, uint64_t size,
                                              int64_t deadline_ns) {
    mp_queue_t *q = v->header;
    if (size > 64 || __atomic_load_n(&v->corrupted, __ATOMIC_RELAXED)) return MP_BUSY;
    // The queue's locks are process-owned (mp_queue_init): the mutex's fast path with the pid.
    if (!mp_mutex_try_fast(&q->producer, (uint32_t)mp_process_id())) return MP_BUSY;
    uint64_t tail = q->tail, offset = mp_queue_offset_of(v, tail), bytes = mp_queue_record_bytes(size);
    uint64_t used = tail - q->head_cache;
    // Relaxed shutdown: as put_held (an immediate shutdown discards under this lock, which we hold).
    int64_t in_flight = (int64_t)(q->produced - q->consumed_cache); // may run one ahead: see has_slot
    if (__builtin_expect(__atomic_load_n(&q->shutdown, __ATOMIC_RELAXED) || q->streaming || size > v->max_whole ||
                             offset + bytes > v->capacity || used > v->capacity || v->capacity - used < bytes ||
                             (v->max_messages && in_flight >= (int64_t)v->max_messages),
                         0))
        return mp_queue_put_held(v, data, size, deadline_ns);
    uint8_t *at = v->ring + offset;
    mp_queue_record_t header = {(uint32_t)size, MP_QUEUE_RECORD_WHOLE};
    __builtin_memcpy(at, &header, sizeof header);
    mp_queue_copy_small(at + sizeof header, (const uint8_t *)data, size);
    __atomic_store_n(&q->tail, tail + bytes, __ATOMIC_RELEASE);        // publishes the record
    __atomic_store_n(&q->produced, q->produced + 1, __ATOMIC_RELAXED); // after publishing (see put_locked)
    mp_mutex_unlock(&q->producer);
    mp_queue_barrier_after_rmw(); // the unlock's swap orders `tail` before the read of the sleepers
    if (__builtin_expect(__atomic_load_n(&q->data_sleepers, __ATOMIC_RELAXED) > 0, 0)) mp_queue_wake_consumers(v);
    return MP_OK;
}

#ifdef __cplusplus
}
#endif

#endif
