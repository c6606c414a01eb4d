// Lanes: a queue's lock-free single-producer rings, one per producer thread, for fixed-size elements.
//
// Layout: after the ring, the lanes' header (struct mp_queue_lanes: a claim line with `used`, a
// consumer line with `cursor` and `budget`, then MP_QUEUE_LANES lane headers of two lines each:
// the producer's `tail`, `head_cache`, `owner`; the consumers' `head`), then each lane's slots:
// `lane_slots` (a power of two) slots of `slot_stride` bytes. A queue has lanes when it is made
// with a slot size (Queue does so for an unbounded queue of a fixed-size BitwiseCopyable element
// of at most MP_QUEUE_MAX_SLOT bytes); a message of exactly that size from a thread that owns a
// lane goes into it, and every other message into the ring, as before.
//
// Who writes what:
// - A lane's owner (one thread, in any process) writes its slots in [tail, head + lane_slots),
//   then `tail` (release: publishes them), and `head_cache`. No lock, no locked instruction: the
//   put's fast path is a copy, a store, and one load of `data_sleepers`.
// - Consumers, any number at once, with or without the queue's consumer lock (the ring's), copy a
//   slot after an acquire load of `tail` (or of `tail_cache`, a value of `tail` another consumer
//   stored with release after its own acquire), then move `head` past it by a release CAS (the
//   producer's acquire load of `head` pairs with it before it overwrites the slot): a failed CAS
//   drops the copy, which the producer's next lap may have torn (mp_queue_lane_take). A straight
//   get (mp_queue_straight.h) takes the lock only when its lane is empty or its turn is over; a get
//   under the lock takes a lane's message into the view's `lane_copy` at once, not at get_end.
//   `cursor` and `budget` choose the lane: a consumer stays on a lane for LANE_BUDGET messages
//   while it has some, then moves on, and the ring gets a turn each time, so no producer starves
//   another. They are relaxed hints, which a lost update only moves by a turn.
// - Claiming: a thread's first put to the queue claims a free lane (CAS of `owner` from 0 to its
//   thread id, then `used` raised, release), or one whose owner has died (its messages stay,
//   before the new owner's), or none: it then uses the ring, for good, so that its messages keep
//   their order. Each thread remembers its choice per queue (a per-thread table keyed by the queue's
//   id, set at creation, so every handle of one queue in a process shares the choice, and by the
//   thread id, so a forked child, whose thread ids differ, chooses anew; the last choice, which the
//   straight put reads without its thread id, the child forgets at the fork). The table is not trimmed:
//   a thread keeps 56 bytes for each lane queue it ever put to. The last choice and a consumer's
//   turn also hold pointers into the view they were made through, keyed by that view's
//   `lane_nonce` (never reused in the process), so they are never used through another view, nor
//   after their view is gone.
//   A dead producer's lane is thus drained by the consumers and reused by the next producer that
//   finds no free lane. Thread ids are per pid namespace: every process must share one.
//
// Per-producer FIFO holds: a producer's messages are in one lane (or in the ring), in order.
// Between producers there is no order, as between the puts of two threads on the ring.
//
// A producer killed before its `tail` store leaves nothing visible; a consumer killed before its
// CAS has not moved `head`, and the next consumer reads the same message. After the CAS the
// message is the consumer's, copied whole, as a ring message is after mp_queue_get_end.
//
// Sleeping: a consumer with nothing to read announces itself in `data_sleepers` (seq_cst), then
// looks at every lane and the ring once more before it sleeps on `data_seq`; a producer, after its
// `tail` store, reads `data_sleepers` and wakes only if it is non-zero. The producer pays no fence
// for this (x86 could otherwise let its load pass its store): the sleeper issues
// membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) between its announcement and its last look, which
// makes every running thread of every registered process (each process registers when one of its
// threads claims a lane) execute a full barrier, so either the sleeper sees the producer's `tail`
// or the producer sees the sleeper. A process where membarrier cannot be used (a kernel or seccomp
// filter that refuses it) fences its own lane puts instead, and its consumers sleep at most 1 ms at
// a time (a lane producer elsewhere may not fence). TSan builds always fence (TSan does not model
// membarrier). A producer waiting for room in its lane sleeps on `space_seq` as a ring producer
// does: the consumer reads `space_sleepers` after its unlock's swap, a full barrier.
//
// Trust (see queue.c): `used`, `cursor`, `budget` are clamped where read (`tail_cache` too: a
// view that says nothing is waiting sends the consumer to `tail`); a slot's place is
// `pos & (lane_slots - 1)` whatever a position holds; a consumer that finds a lane's positions
// more than a lane apart reports MP_CORRUPTED; a producer that finds them so waits for room, and
// fails at its deadline. The slot size, the slot count and the lanes' place come from the view.
#define _GNU_SOURCE
#include "queue_internal.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

// MARK: - Geometry

/// Slots per lane: the ring's bytes spread over the lanes, a power of two, at least 64.
static uint64_t slots_per_lane(uint64_t capacity, uint32_t stride) {
    uint64_t want = capacity / MP_QUEUE_LANES / stride, slots = 64;
    while (slots * 2 <= want) slots *= 2;
    return slots;
}

static uint32_t stride_of(uint32_t slot_size) { return (uint32_t)mp_queue_stride_of(slot_size); } // the straight paths' too

uint64_t mp_queue_lanes_bytes(uint64_t capacity, uint32_t slot_size) {
    if (slot_size == 0) return 0;
    uint32_t stride = stride_of(slot_size);
    return sizeof(struct mp_queue_lanes) + MP_QUEUE_LANES * slots_per_lane(capacity, stride) * stride;
}

/// The views attached so far in this process (their `lane_nonce`s).
static uint64_t view_nonces;

void mp_queue_lanes_attach(mp_queue_view_t *view, uint8_t *after_ring, uint64_t capacity, uint32_t slot_size) {
    view->held_lane = -1;
    if (slot_size == 0) return;
    view->lanes = (struct mp_queue_lanes *)after_ring;
    // Read once (see "Trust"), and never 0: the straight put's choice check relies on it.
    uint64_t id = MP_LOAD(&view->lanes->queue_id, MP_RELAXED);
    view->queue_id = id != 0 ? id : 1;
    // This view's own name for the straight put's choice, which holds pointers into this mapping:
    // never reused in the process, so a choice made through a view that is gone never matches.
    view->lane_nonce = MP_ADD(&view_nonces, 1, MP_RELAXED) + 1;
    // The straight paths' tests, until the view is corrupted (queue_internal.h).
    view->lane_key = MP_LANE_KEY(view->lane_nonce) ^ slot_size;
    view->slot_size = slot_size;
    view->slot_stride = stride_of(slot_size);
    view->lane_slots = slots_per_lane(capacity, view->slot_stride);
    view->slots = after_ring + sizeof(struct mp_queue_lanes);
}

// MARK: - Fences

/// This process's membarrier state: 0 unknown, 1 registered (lane puts need no fence), 2 unusable
/// (lane puts fence; consumers cap their sleeps). Set once per process (a forked child, whose
/// registration is not inherited, registers again: `fence_pid`).
static uint32_t fence_state;
static int32_t fence_pid;

static uint32_t membarrier_state(void) {
    int32_t pid = mp_process_id();
    if (MP_LOAD(&fence_pid, MP_ACQUIRE) == pid) return MP_LOAD(&fence_state, MP_RELAXED);
    uint32_t state = 2;
#ifndef MP_TSAN
    long query = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (query > 0 && (query & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0)
        state = 1;
#endif
    MP_STORE(&fence_state, state, MP_RELAXED);
    MP_STORE(&fence_pid, pid, MP_RELEASE);
    return state;
}

uint32_t lanes_fenced = 1;

void lanes_before_sleep(mp_queue_view_t *v) {
    (void)v;
    if (membarrier_state() != 1) return; // lanes_sleep_cap bounds the sleep instead
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) != 0) MP_STORE(&fence_state, 2, MP_RELAXED);
}

int64_t lanes_sleep_cap(mp_queue_view_t *v, int64_t deadline) {
    (void)v;
    if (membarrier_state() == 1) return deadline;
    int64_t cap = mp_monotonic_ns() + 1000 * 1000;
    return cap < deadline ? cap : deadline;
}

// MARK: - The straight put's wake-up (mp_queue_straight.h), out of line: someone sleeps

void mp_queue_wake_consumers(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    MP_ADD(&q->data_seq, 1, MP_RELEASE);
    mp_futex_wake(&q->data_seq, INT_MAX, (int)v->shared);
}

void mp_queue_wake_producers(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    MP_ADD(&q->space_seq, 1, MP_RELEASE);
    mp_futex_wake(&q->space_seq, INT_MAX, (int)v->shared);
}

// A copy that ThreadSanitizer does not see (mp_queue_lane_take's, in TSan builds): volatile byte
// reads, which the compiler cannot turn into a memcpy call (the sanitizer intercepts those).
__attribute__((no_sanitize("thread"))) void mp_queue_copy_unwatched(uint8_t *dst, const uint8_t *src, uint64_t n) {
    const volatile uint8_t *from = src;
    for (uint64_t k = 0; k < n; k++) dst[k] = from[k];
}

// MARK: - Claiming

/// The calling thread's choices, one per queue it has put to (never evicted: forgetting a ring
/// choice could let the thread take a lane later and overtake its own messages in the ring), and
/// the last one used, with what the straight put reads (mp_queue_put_lane_straight).
static __thread mp_lane_choice_t *choices;
static __thread uint32_t choice_count, choice_capacity;
__thread mp_lane_choice_t mp_last_lane_choice __attribute__((tls_model("initial-exec"))); // mp_queue_straight.h
__thread uint64_t mp_lane_taken[8] __attribute__((tls_model("initial-exec")));           // mp_queue_straight.h
__thread mp_lane_turn_t mp_lane_turn __attribute__((tls_model("initial-exec")));          // mp_queue_straight.h
#define last_choice mp_last_lane_choice

/// A forked child's thread is not the one that made the choices it inherits: it is a new
/// producer, and forgets them all. The straight put trusts `last_choice` without looking at its
/// `tid`; and a table entry's `tid` test is not enough either, since tids are reused: a process
/// forked later from this child may get the pid of the thread that chose, after another thread has
/// taken that lane over, and would put into it unclaimed beside its owner. (The fork servers'
/// children inherit a server's choices, which has none.)
static void forget_choice_in_child(void) {
    memset(&last_choice, 0, sizeof last_choice);
    choice_count = 0; // the table's memory stays for the child's own choices
}

__attribute__((constructor)) static void install_choice_fork_handler(void) {
    pthread_atfork(NULL, NULL, forget_choice_in_child);
}

static void mark_used(struct mp_queue_lanes *a, uint32_t i) {
    uint32_t used = MP_LOAD(&a->used, MP_RELAXED);
    // Release: the claim (and the new owner's `head_cache`) before consumers look at the lane.
    while (used < i + 1 && !MP_CAS(&a->used, &used, i + 1, MP_RELEASE, MP_RELAXED)) continue;
}

/// Takes lane `i` for thread `tid`: its view of the consumers' `head` starts where they are.
static int took(mp_queue_view_t *v, uint32_t i) {
    mp_lane_t *l = lane_at(v, i);
    l->head_cache = MP_LOAD(&l->head, MP_ACQUIRE);
    mark_used(v->lanes, i);
    return (int)i;
}

static int claim(mp_queue_view_t *v, int32_t tid) {
    MP_STORE(&lanes_fenced, membarrier_state() != 1, MP_RELAXED); // read by every lane put, on any thread
    struct mp_queue_lanes *a = v->lanes;
    for (uint32_t i = 0; i < MP_QUEUE_LANES; i++) // one a dead thread of the same id owned
        if (MP_LOAD(&a->lane[i].owner, MP_ACQUIRE) == (uint32_t)tid) return took(v, i);
    for (uint32_t i = 0; i < MP_QUEUE_LANES; i++) {
        uint32_t free = 0;
        if (MP_CAS(&a->lane[i].owner, &free, (uint32_t)tid, MP_ACQ_REL, MP_RELAXED)) return took(v, i);
    }
    for (uint32_t i = 0; i < MP_QUEUE_LANES; i++) { // all taken: one whose owner has died
        uint32_t owner = MP_LOAD(&a->lane[i].owner, MP_ACQUIRE);
        if (owner != 0 && !mp_thread_alive((int32_t)(owner & MP_MUTEX_TID_MASK)) &&
            MP_CAS(&a->lane[i].owner, &owner, (uint32_t)tid, MP_ACQ_REL, MP_RELAXED))
            return took(v, i);
    }
    return -1;
}

/// Makes `choice` the thread's last, with what the straight put reads for view `v`: the key of
/// v's lanes, and the lane's header and slots in v's mapping. No key for the ring, nor where this
/// process's lane puts must fence (they then go out of line, through wake_consumers, which
/// fences), except under ThreadSanitizer, whose straight put always fences (mp_queue_straight.h).
static int remember(mp_queue_view_t *v, mp_lane_choice_t choice) {
    int straight = choice.lane >= 0;
#ifndef MP_TSAN
    straight = straight && !MP_LOAD(&lanes_fenced, MP_RELAXED);
#endif
    choice.key = straight ? MP_LANE_KEY(v->lane_nonce) : 0;
    choice.lane_header = straight ? lane_at(v, (uint32_t)choice.lane) : NULL;
    choice.slots = straight ? slot_at(v, (uint32_t)choice.lane, 0) : NULL;
    choice.mask = v->lane_slots - 1;
    choice.limit = straight ? MP_LOAD(&choice.lane_header->head_cache, MP_RELAXED) + v->lane_slots : 0;
    last_choice = choice;
    return choice.lane;
}

MP_COLD int lane_of_caller(mp_queue_view_t *v, int may_claim) {
    int32_t tid = mp_thread_id();
    if (MP_LIKELY(last_choice.queue_id == v->queue_id && last_choice.tid == tid)) {
        // Through another view of the same queue, the straight put's pointers are that view's.
        if (last_choice.key != MP_LANE_KEY(v->lane_nonce)) return remember(v, last_choice);
        return last_choice.lane;
    }
    for (uint32_t k = 0; k < choice_count; k++)
        if (choices[k].queue_id == v->queue_id && choices[k].tid == tid) return remember(v, choices[k]);
    if (!may_claim) return -1;
    int lane = claim(v, tid);
    mp_lane_choice_t choice = {.queue_id = v->queue_id, .tid = tid, .lane = lane};
    if (choice_count == choice_capacity) {
        uint32_t capacity = choice_capacity ? 2 * choice_capacity : 8;
        mp_lane_choice_t *grown = realloc(choices, capacity * sizeof *grown);
        if (grown == NULL) return remember(v, choice); // not kept in the table: claim() finds an owned lane again
        choices = grown;
        choice_capacity = capacity;
    }
    choices[choice_count++] = choice;
    return remember(v, choice);
}

// MARK: - Putting

static inline uint64_t lane_room(mp_queue_view_t *v, mp_lane_t *l, uint64_t tail) {
    uint64_t used = tail - l->head_cache;
    if (used < v->lane_slots) return v->lane_slots - used;
    l->head_cache = MP_LOAD(&l->head, MP_ACQUIRE); // pairs with the consumer's release of head
    used = tail - l->head_cache;
    return used < v->lane_slots ? v->lane_slots - used : 0; // positions a lane apart or garbled: none
}

/// Rounds of lane_refill's back-off (the longest waits 2^(REFILL_ROUNDS - 1) pauses).
#define REFILL_ROUNDS 10

/// A full lane: waits, briefly, for a run of room rather than for one slot. A producer that takes
/// each slot the moment a consumer frees it reads the consumers' line on every put, while they
/// write it on every get, and the two cores trade that line once per message (SPSC 8 B with the
/// producer ahead: 26 M msg/s; the consumers alone drain at over 80 M). Backing off between reads
/// (as the Lock's spin does), it lets the consumers free a run, then fills it from its cached
/// `head_cache` without touching their line. Bounded by rounds, not by the clock: after about a
/// thousand pauses it goes on with whatever room there is (the outcome of the put is unchanged,
/// only when its slot is written), and with none the caller's wait takes over as before.
static uint64_t lane_refill(mp_queue_view_t *v, mp_lane_t *l, uint64_t tail) {
    uint64_t want = v->lane_slots / 4 < 256 ? v->lane_slots / 4 : 256;
    uint64_t room = 0;
    for (int round = 0; round < REFILL_ROUNDS; round++) {
        for (int pause = 0; pause < (1 << round); pause++) mp_cpu_relax();
        room = lane_room(v, l, tail);
        if (room >= want) break;
    }
    return room;
}

int lane_has_room(mp_queue_view_t *v, uint64_t i) {
    mp_lane_t *l = lane_at(v, (uint32_t)i);
    return lane_room(v, l, MP_LOAD(&l->tail, MP_RELAXED)) > 0;
}

MP_COLD mp_status_t lane_put(mp_queue_view_t *v, uint32_t i, const void *data, uint64_t count, uint64_t stride,
                             int64_t deadline, uint64_t *put) {
    mp_queue_t *q = v->header;
    mp_lane_t *l = lane_at(v, i);
    const uint8_t *p = data;
    uint64_t tail = MP_LOAD(&l->tail, MP_RELAXED); // only this thread stores it
    uint64_t done = 0;
    mp_status_t status = MP_OK;
    while (done < count) {
        // Relaxed: a put that overlaps a shutdown may land; an immediate one discards what it finds.
        if (MP_UNLIKELY(MP_LOAD(&q->shutdown, MP_RELAXED))) {
            status = MP_SHUTDOWN;
            break;
        }
        uint64_t room = lane_room(v, l, tail);
        if (MP_UNLIKELY(room == 0)) {
            if (tail != MP_LOAD(&l->tail, MP_RELAXED)) { // the consumers may be waiting for these
                MP_STORE(&l->tail, tail, MP_RELEASE);
                wake_consumers(v);
            }
            if (!deadline_passed(deadline)) room = lane_refill(v, l, tail); // else one look: no back-off
        }
        if (MP_UNLIKELY(room == 0)) {
            if (tail != MP_LOAD(&l->tail, MP_RELAXED)) { // the consumers may be waiting for these
                MP_STORE(&l->tail, tail, MP_RELEASE);
                wake_consumers(v);
            }
            status = mp_queue_wait_until(v, &q->space_seq, &q->space_sleepers, lane_has_room, i, deadline,
                                         MP_QUEUE_SHUTDOWN);
            if (status != MP_OK) break;
            continue;
        }
        uint64_t n = count - done < room ? count - done : room;
        if (mp_queue_lane_run_is_packed(v->slot_size, stride)) {
            // Packed as the slots are: one move, or two where the run wraps at the lane's end.
            uint64_t first = mp_queue_lane_run_before_end(v, tail, n), bytes = first * stride;
            memcpy(slot_at(v, i, tail), p, bytes);
            if (n > first) memcpy(slot_at(v, i, tail + first), p + bytes, (n - first) * stride);
            p += n * stride;
        } else {
            for (uint64_t k = 0; k < n; k++, p += stride) copy_bytes(slot_at(v, i, tail + k), p, v->slot_size);
        }
        tail += n;
        done += n;
    }
    if (tail != MP_LOAD(&l->tail, MP_RELAXED)) {
        MP_STORE(&l->tail, tail, MP_RELEASE); // publishes the slots written (see "Who writes what")
        wake_consumers(v);
    }
    // The straight put's room, from the `head_cache` lane_room refreshed (the same lane whichever
    // view the choice was made through: one shared lane).
    if (last_choice.lane_header == l) last_choice.limit = l->head_cache + v->lane_slots;
    *put = done;
    return done == count ? MP_OK : status;
}

// MARK: - Taking (under the consumer lock)

int lanes_have_data(mp_queue_view_t *v) {
    // Reads only: a coroutine asks without the consumer lock (queue_async.c).
    uint32_t used = lanes_used(v);
    for (uint32_t i = 0; i < used; i++) {
        mp_lane_t *l = lane_at(v, i);
        // Acquire: pairs with the producer's release of tail. Garbled positions count as data:
        // the get that follows reports them.
        if (MP_LOAD(&l->tail, MP_ACQUIRE) != MP_LOAD(&l->head, MP_RELAXED)) return 1;
    }
    return 0;
}

MP_COLD int lane_pick(mp_queue_view_t *v, int ring_first) {
    struct mp_queue_lanes *a = v->lanes;
    uint32_t used = lanes_used(v);
    if (used == 0) return -1;
    lanes_end_spent_turn(v);
    // Relaxed hints (straight gets write them too, without the lock): clamped where read.
    uint32_t cursor = MP_LOAD(&a->cursor, MP_RELAXED), budget = MP_LOAD(&a->budget, MP_RELAXED);
    uint32_t c = cursor < used ? cursor : 0;
    if (budget == 0 || budget > LANE_BUDGET) { // the lane's turn is over: the ring's, then the next
        budget = LANE_BUDGET;
        c = c + 1 < used ? c + 1 : 0;
        MP_STORE(&a->budget, budget, MP_RELAXED);
        MP_STORE(&a->cursor, c, MP_RELAXED);
        if (ring_first && has_data(v, 0)) return -1;
    }
    for (uint32_t k = 0; k < used; k++) {
        uint32_t i = c + k < used ? c + k : c + k - used;
        uint64_t n = lane_waiting(v, i);
        if (n == 0) continue;
        if (n == UINT64_MAX) return -2;
        if (i != c) {
            // The lane whose turn it was ran dry before its budget: its turn is over too, so the
            // ring has its turn before the next lane's (else lanes that each hold a message or two
            // whenever the cursor reaches them would keep a ring message waiting for ever).
            MP_STORE(&a->cursor, i, MP_RELAXED);
            budget = LANE_BUDGET;
            if (ring_first && has_data(v, 0)) {
                MP_STORE(&a->budget, budget, MP_RELAXED);
                return -1;
            }
        }
        MP_STORE(&a->budget, budget - 1, MP_RELAXED);
        lanes_turn_to(v, i, budget - 1);
        return (int)i;
    }
    return -1;
}

/// Whether any lane but `except` (an index; MP_QUEUE_LANES for none) or the ring has a message: a
/// relaxed look without the lock, for a straight turn's renewal (a message that arrives just after
/// waits at most one more turn).
static int others_waiting(mp_queue_view_t *v, uint32_t except) {
    mp_queue_t *q = v->header;
    if (MP_LOAD(&q->tail, MP_RELAXED) != MP_LOAD(&q->head, MP_RELAXED)) return 1;
    uint32_t used = lanes_used(v);
    for (uint32_t i = 0; i < used; i++) {
        mp_lane_t *l = lane_at(v, i);
        if (i != except && MP_LOAD(&l->tail, MP_RELAXED) != MP_LOAD(&l->head, MP_RELAXED)) return 1;
    }
    return 0;
}

int mp_queue_lane_turn_begin(mp_queue_view_t *v, uint64_t size) {
    mp_lane_turn_t *t = &mp_lane_turn;
    uint64_t key = MP_LANE_KEY(v->lane_nonce);
    // No lanes (no nonce: `lane_key` 0), slots of another size, or a corrupted view.
    if ((MP_LOAD(&v->lane_key, MP_RELAXED) ^ size) != key) return 0;
    struct mp_queue_lanes *a = v->lanes;
    if (t->key == key) { // spent (see mp_queue_take_lane_straight)
        uint32_t i = (uint32_t)(t->lane - &a->lane[0]);
        if (!others_waiting(v, i)) { // nothing else to give a turn to: another turn on this lane
            t->left = LANE_BUDGET;
            return 1;
        }
        lanes_end_spent_turn(v);
        return 0;
    }
    // Relaxed hints, clamped (see "Trust"), as lane_pick_fast reads them.
    uint32_t c = MP_LOAD(&a->cursor, MP_RELAXED), budget = MP_LOAD(&a->budget, MP_RELAXED);
    if (c >= MP_QUEUE_LANES || budget - 1 >= LANE_BUDGET) return 0; // that lane's turn is over
    // Each turn started takes one of the lane's budget, so that a consumer that keeps switching
    // between queues (a new turn each time) moves the cursor on too.
    MP_STORE(&a->budget, budget - 1, MP_RELAXED);
    lanes_turn_to(v, c, budget);
    return 1;
}

void lanes_discard(mp_queue_view_t *v) {
    uint32_t used = lanes_used(v);
    for (uint32_t i = 0; i < used; i++) {
        mp_lane_t *l = lane_at(v, i);
        uint64_t tail = MP_LOAD(&l->tail, MP_ACQUIRE), head = MP_LOAD(&l->head, MP_RELAXED);
        // A CAS, not a store: a straight get may have moved `head` past the `tail` read here.
        while (tail - head - 1 < v->lane_slots && !MP_CAS(&l->head, &head, tail, MP_RELEASE, MP_RELAXED)) continue;
    }
}

uint64_t lanes_count(mp_queue_view_t *v) {
    uint64_t n = 0;
    uint32_t used = lanes_used(v);
    for (uint32_t i = 0; i < used; i++) {
        mp_lane_t *l = lane_at(v, i);
        uint64_t waiting = MP_LOAD(&l->tail, MP_RELAXED) - MP_LOAD(&l->head, MP_RELAXED);
        if (waiting <= v->lane_slots) n += waiting; // a snapshot; garbled positions count nothing
    }
    return n;
}
