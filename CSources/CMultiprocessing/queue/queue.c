// The message channel behind Queue, JoinableQueue and SimpleQueue: a byte ring in shared memory.
//
// Layout: the mp_queue_t header (384 bytes, one cache line each: the producer's published line
// (`tail`, the line a waiting consumer polls, with only fields the producer rarely writes), the
// producer's private line (its lock and `produced`, written on every put), the same two for the
// consumer (`head` and `consumed`; its lock and state), a control line written only when someone
// sleeps, a JoinableQueue line; so that a consumer polling `tail` costs the producer one line
// transfer per put, not one per store), then `capacity` bytes of ring, a power of two. Positions `head` and `tail` count bytes since the
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
// full barrier and reads `data_sleepers`, bumping `data_seq` and waking only if it is non-zero.
// The same holds for `space_seq`/`space_sleepers` (ring bytes or a message slot). The barrier is
// the lock release's atomic swap when the publisher checks after unlocking (a whole message), an
// explicit one when it goes on under its lock (fragments). With nobody asleep, put and get make no
// syscall. Shutdown bumps both words and wakes everyone. A wait by a passed deadline (MP_NOW) is
// one look, never a spin: nowait calls, and the try steps of coroutines, which then sleep through
// their event loop (io_uring futex wait) on the same words, announced as the blocking sleepers are
// (announce_sleeper), so that the loop's thread runs its other coroutines meanwhile.
// JoinableQueue: `unfinished` is itself the futex word of join(); the task_done that brings it to
// 0 wakes it when `join_sleepers` says someone (blocking or awaiting) is announced.
//
// Files: queue.c (this: layout, sleeping, count, shutdown, JoinableQueue and its join, blocking
// and awaited), queue_put.c (the producer side), queue_get.c (the consumer side), queue_lanes.c
// (the lanes of fixed-size slots), queue_async.c (awaiting get and put from a coroutine, through
// the sides' try steps, which never wait and never spin), queue_internal.h (the record format and
// the steps they share), and include/mp_queue_straight.h (the lanes' layout, and the put's straight
// paths inline in Swift's specialized put). Put and get of a single-record message take one
// straight path each: the lock's CAS, cached indices, one copy (a get's caller reads the record
// where it lies, between mp_queue_get_begin and mp_queue_get_end), the release store, the unlock,
// one load of the sleeper count. For a value of up to 64 bytes the put's is inline in the caller
// (mp_queue_put_straight): it decides only what it can from cached state and hands everything else,
// with the lock if it took it, to put_held; it writes the same words in the same order. The get's
// stays out of line: made cheaper than the put, it catches up with its producer and polls the
// producer's line, which slows every put (see Queue.receive).
//
// Streams (a message larger than one record is never lost to a consumer's death): the producer
// numbers each fragmented message (`stream`, in its FIRST); the consumer that takes a FIRST
// announces itself in `reader` (stream << 32 | pid, one store) before it reads it, and reads the
// message's records ahead of `head`, handing them back (head, and the count) only once it has the
// whole message: one killed midway leaves it whole in the ring. Only when it must wait for records
// not yet written does it hand back what it has read, after storing the id in `released` (seq_cst,
// full barrier, then a last look at `tail`; the producer stores `tail` for the LAST, full barrier,
// then reads `released`: one sees the other). The producer's put then waits until the reader
// stores the id in `delivered`. While it streams and while it waits, it checks every
// MP_OWNER_CHECK_NS whether the announced reader of its stream has died after handing part of it
// back: then what it took died with it, and the producer writes an ABORT (a consumer reading it
// drops what it has and takes the next message) and streams the whole message again under a new
// id. The next consumer drops the stale fragments and the ABORT, and reads the new copy. Each
// FIRST is counted once on each side (`produced`, `consumed`), so the count stays exact.
//
// Faults: the next producer after one that left a fragmented message half-written (`streaming`:
// it died, or gave up at a shutdown) writes ABORT first, within its own deadline; a consumer
// waiting for the rest of one gives up when the producer lock is free (its producer gave up) or its
// owner is dead, or at an immediate shutdown; a plain shutdown lets a live producer finish. The
// next consumer after a dead one drops stale MIDDLE/LAST fragments (their message died with the
// consumer that had taken its start), and does not count again a message the dead one had counted
// but not released (`counted_end`/`counting_value`, see count_taken in queue_internal.h).
//
// Trust (every byte of the region can be written by any process that maps it, in or out of turn):
// - Each process works through its own mp_queue_view_t: the ring's place and capacity, the message
//   limits and the futex scope are fixed when it makes or attaches the queue (the capacity read
//   once and checked against its mapping), never read from the shared header again. Offsets into
//   the ring are `pos & (capacity - 8)`: 8-aligned and inside the ring whatever `pos` holds.
// - A consumer copies each record's header before use and checks it (read_record): the positions
//   8-aligned and at most a ring apart, the record published and before the ring's end, a known
//   kind with a size its kind allows (a FIRST or a MIDDLE is one full record, a PAD fills the ring
//   to its end, an ABORT is empty), a FIRST's total above its record and within the view's message
//   limit, a fragment within its message's total. Only the copies are used; a payload's bytes are
//   the message, whatever they hold (the decoder checks them). A violation is MP_CORRUPTED, with
//   nothing written outside the region and the caller's buffer of `total` bytes, and the view then
//   refuses every later call.
// - A producer's writes stay in the ring by the same masks; positions more than a ring apart leave
//   it no room (it waits until its deadline rather than overwrite). A consumer that drops PADs and
//   stale records past its deadline drops at most a ring's worth (capacity / 8 records).
// - Not bounded by a deadline, by design: a fragmented put waits for its reader and a reader for
//   the rest of its message while the other side lives (see "Streams"); a peer that fakes the other
//   side can hold them until a shutdown.
#define _GNU_SOURCE
#include "queue_internal.h"

_Static_assert(sizeof(mp_queue_t) == MP_QUEUE_HEADER_SIZE, "mp_queue_t is 384 bytes");
_Static_assert(offsetof(mp_queue_view_t, held) - offsetof(mp_queue_view_t, slot_stride) >= 64,
               "a get's fields are a cache line away from what puts read");
_Static_assert(sizeof(mp_queue_view_t) - offsetof(mp_queue_view_t, held) >= 64, "and nothing follows them on their line");
_Static_assert(sizeof(((mp_queue_view_t *)0)->lane_copy) == MP_QUEUE_MAX_SLOT, "a lane's largest message fits");
_Static_assert(offsetof(mp_queue_view_t, lane_copy) % 8 == 0, "a lane message is 8-aligned, as a record's payload");
_Static_assert(offsetof(mp_queue_t, tail) == 0, "the published producer line first");
_Static_assert(offsetof(mp_queue_t, producer) == 64, "the producer lock on the second line");
_Static_assert(offsetof(mp_queue_t, produced) + sizeof(uint64_t) <= 128, "produced with the producer lock");
_Static_assert(offsetof(mp_queue_t, head) == 128, "the published consumer line third");
_Static_assert(offsetof(mp_queue_t, consumed) + sizeof(uint64_t) <= 192, "consumed with head");
_Static_assert(offsetof(mp_queue_t, delivered) + sizeof(uint32_t) <= 192, "a stream's reader and its arrival with head");
_Static_assert(offsetof(mp_queue_t, reader) % 8 == 0, "reader is one aligned 64-bit store");
_Static_assert(offsetof(mp_queue_t, consumer) == 192, "the consumer lock on the fourth line");
_Static_assert(offsetof(mp_queue_t, assembling) + sizeof(uint32_t) <= 256, "consumer state with its lock");
_Static_assert(offsetof(mp_queue_t, counted_end) % 8 == 0, "64-bit fields are aligned");
_Static_assert(offsetof(mp_queue_t, data_seq) == 256, "control line fifth");
_Static_assert(offsetof(mp_queue_t, unfinished) == 320, "JoinableQueue counters on the sixth line");

uint64_t mp_queue_size(uint64_t capacity, uint32_t slot_size) {
    return MP_QUEUE_HEADER_SIZE + capacity + mp_queue_lanes_bytes(capacity, slot_size);
}

uint64_t mp_queue_max_record(const mp_queue_view_t *v) { return max_record(v); }

int32_t mp_queue_view_attach(mp_queue_view_t *view, mp_queue_t *q, uint64_t mapped, uint64_t max_message,
                             int shared) {
    // Read once: from here on only the view's copies count.
    uint64_t capacity = MP_LOAD(&q->capacity, MP_ACQUIRE); // pairs with mp_queue_init's release fence
    uint32_t max_messages = MP_LOAD(&q->max_messages, MP_RELAXED);
    uint32_t slot_size = MP_LOAD(&q->slot_size, MP_RELAXED);
    if (capacity < 4096 || (capacity & (capacity - 1)) != 0 || capacity > mapped || slot_size > MP_QUEUE_MAX_SLOT ||
        mapped != mp_queue_size(capacity, slot_size))
        return -EINVAL;
    memset(view, 0, sizeof *view);
    view->header = q;
    view->ring = (uint8_t *)q + MP_QUEUE_HEADER_SIZE;
    view->capacity = capacity;
    view->max_message = max_message;
    view->max_messages = max_messages;
    view->shared = shared ? 1 : 0;
    uint64_t record = max_record(view);
    view->max_whole = record < max_message ? record : max_message;
    mp_queue_lanes_attach(view, view->ring + capacity, capacity, slot_size);
    return 0;
}

void mp_queue_init(mp_queue_t *q, uint64_t capacity, uint32_t max_messages, int shared, uint32_t slot_size) {
    memset(q, 0, sizeof *q);
    if (slot_size > MP_QUEUE_MAX_SLOT || max_messages) slot_size = 0; // a bounded queue counts in the ring
    // The lanes' header starts empty, with an id no other queue has; their slots need no value.
    if (slot_size) {
        struct mp_queue_lanes *lanes = (struct mp_queue_lanes *)((uint8_t *)q + MP_QUEUE_HEADER_SIZE + capacity);
        memset(lanes, 0, sizeof *lanes);
        static uint64_t made; // queues made by this process
        uint64_t n = MP_ADD(&made, 1, MP_RELAXED) + 1;
        lanes->queue_id = ((uint64_t)mp_process_id() << 40) ^ ((uint64_t)mp_monotonic_ns() << 8) ^ n;
    }
    q->slot_size = slot_size;
    q->capacity = capacity;
    q->max_messages = max_messages;
    q->shared = shared ? 1 : 0;
    // Process-owned: the lock fast paths (try_lock_fast) store the pid.
    uint32_t flags = (shared ? MP_MUTEX_SHARED : 0) | MP_MUTEX_PROCESS_OWNED;
    mp_mutex_init(&q->producer, flags);
    mp_mutex_init(&q->consumer, flags);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

mp_status_t mp_queue_wait_until(mp_queue_view_t *v, uint32_t *seq, uint32_t *sleepers,
                                int (*ready)(mp_queue_view_t *, uint64_t), uint64_t arg, int64_t deadline,
                                uint32_t stop_at) {
    mp_queue_t *q = v->header;
    // Spin by time, not by count: a consumer that parks while its producer is merely between two
    // puts makes every later put pay a FUTEX_WAKE, which slows the producer, which makes the consumer
    // park again (a stable slow mode). SPIN_NS covers a producer's gap between messages.
    // The spin backs off (1, 2, 4 ... SPIN_BACKOFF_MAX pauses between looks), as the Lock's does:
    // `ready` reads the other side's line, and a spinner that read it on every pause pulled it away
    // from the producer (or consumer) writing it on every message, so that both ran at the speed of
    // that line's transfers (cross-process 64 B on lanes, the consumer waiting: 4-18 M msg/s, most of
    // its time in lanes_have_data). Capped low: a waiter still sees a message within ~1 µs.
    // A passed deadline is one look (mp_base.h's MP_NOW): a nowait call returns at once, and a
    // coroutine's try (queue_async.c) never holds its loop thread for the spin (nor, before it
    // released it, the lock it took: the other consumers' or producers' turn).
    if (deadline_passed(deadline)) {
        if (ready(v, arg)) return MP_OK;
        return MP_LOAD(&q->shutdown, MP_RELAXED) >= stop_at ? MP_SHUTDOWN : MP_TIMED_OUT;
    }
    // A get that catches up with a streaming producer: it found the queue empty, and the next
    // message came within its first look. Looking at once, it takes that line (`tail`) from the
    // producer on every message, and the producer, whose next put waits for it, falls back into
    // step: both run at one line transfer per message. So such a get learns to wait a few pauses
    // before its first look (`catch_up`, doubled each time the first look finds data, halved when
    // it does not, at most CATCH_UP_MAX): a run of messages gathers, and it takes them from its
    // cached view of `tail` while the producer keeps the line. A get that waits longer (a round
    // trip's reply) never grows it, so a ping-pong's latency is unchanged (round trip p50 340 ns
    // before and after). Medians of interleaved runs: cross-process 64 B 12 -> 19 M msg/s through
    // the ring, 16 -> 25 on lanes. Relaxed: a hint shared by the view's consumer threads.
    int data = seq == &q->data_seq;
    uint32_t first = data ? MP_LOAD(&v->catch_up, MP_RELAXED) : 0;
    for (uint32_t pause = 0; pause < first; pause++) mp_cpu_relax();
    int64_t spin_until = 0; // the clock is read only once a short spin has not been enough
    uint32_t backoff = 1;
    for (uint32_t spin = 1;; spin++) {
        if (ready(v, arg)) {
            if (data) {
                uint32_t learned = spin == 1 ? (first ? 2 * first : 1) : first / 2;
                MP_STORE(&v->catch_up, learned < CATCH_UP_MAX ? learned : CATCH_UP_MAX, MP_RELAXED);
            }
            return MP_OK;
        }
        if (MP_LOAD(&q->shutdown, MP_RELAXED) >= stop_at) return MP_SHUTDOWN;
        for (uint32_t pause = 0; pause < backoff; pause++) mp_cpu_relax();
        if (backoff < SPIN_BACKOFF_MAX) backoff *= 2;
        if ((spin & 7) == 0) {
            int64_t now = mp_monotonic_ns();
            if (spin_until == 0) spin_until = deadline - now < SPIN_NS ? deadline : now + SPIN_NS; // not past it
            else if (now >= spin_until) break;
        }
    }
    for (;;) {
        uint32_t observed = announce_sleeper(v, seq, sleepers);
        int lanes = v->lanes && seq == &q->data_seq;
        int ok = ready(v, arg);
        int down = MP_LOAD(&q->shutdown, MP_SEQ_CST) >= stop_at;
        if (ok || down || mp_monotonic_ns() >= deadline) {
            MP_SUB(sleepers, 1, MP_RELAXED);
            return ok ? MP_OK : down ? MP_SHUTDOWN : MP_TIMED_OUT;
        }
        mp_futex_wait(seq, observed, lanes ? lanes_sleep_cap(v, deadline) : deadline, (int)v->shared);
        MP_SUB(sleepers, 1, MP_RELAXED);
    }
}

int32_t mp_queue_count(const mp_queue_view_t *v) {
    const mp_queue_t *q = v->header;
    uint64_t consumed = MP_LOAD(&q->consumed, MP_RELAXED);
    uint64_t produced = MP_LOAD(&q->produced, MP_RELAXED);
    uint64_t n = produced > consumed ? produced - consumed : 0; // consumed may be briefly ahead
    if (v->lanes) n += lanes_count((mp_queue_view_t *)v);
    return n > INT32_MAX ? INT32_MAX : (int32_t)n;
}

/// The immediate shutdown's discard (Python 3.13: the items left are dropped and a task is marked
/// done for each, so join() returns once the tasks already taken are done). Under both locks, taken
/// in the producers' order (producer, then consumer): every waiting put and get has been woken and
/// gives up, and a put that takes the producer lock after this sees the shutdown and publishes
/// nothing. Only complete messages are counted: a half-written one's put failed and undid its task.
static void discard_rest(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    mp_mutex_lock(&q->producer, MP_FOREVER); // a dead holder's half-written message goes below
    q->streaming = 0;
    if (mp_mutex_lock(&q->consumer, MP_FOREVER) == MP_OWNER_DIED) q->assembling = 0;
    uint64_t complete = 0;
    int open = 0; // inside a fragmented message whose FIRST was seen here
    // At most as many records as the ring holds: both locks are ours, so only a peer writing out of
    // turn could add more. A record that fails its check ends the discard (and the queue, here).
    for (uint64_t n = 0; n <= v->capacity / sizeof(record_t) && has_data(v, 0); n++) {
        record_t r;
        if (!read_record(v, q->head, q->head, q->tail_cache, &r)) {
            corrupted(v);
            break;
        }
        switch (r.kind) {
        case WHOLE: complete++; open = 0; break;
        case FIRST: open = 1; break;
        case LAST: complete += (uint64_t)open; open = 0; break;
        case ABORT: open = 0; break;
        default: break; // PAD, MIDDLE
        }
        consume(v, &r, r.kind == WHOLE || r.kind == FIRST);
    }
    while (complete-- > 0 && mp_queue_task_done(v) == MP_OK) {}
    if (v->lanes) lanes_discard(v);
    mp_mutex_unlock(&q->consumer);
    mp_mutex_unlock(&q->producer);
}

void mp_queue_shutdown(mp_queue_view_t *v, int immediate) {
    mp_queue_t *q = v->header;
    uint32_t level = immediate ? MP_QUEUE_SHUTDOWN_IMMEDIATE : MP_QUEUE_SHUTDOWN;
    uint32_t current = MP_LOAD(&q->shutdown, MP_RELAXED);
    // The level only rises: a plain shutdown after an immediate one changes nothing.
    while (current < level && !MP_CAS(&q->shutdown, &current, level, MP_SEQ_CST, MP_RELAXED)) continue;
    MP_ADD(&q->data_seq, 1, MP_RELEASE);
    MP_ADD(&q->space_seq, 1, MP_RELEASE);
    mp_futex_wake(&q->data_seq, INT_MAX, (int)v->shared);
    mp_futex_wake(&q->space_seq, INT_MAX, (int)v->shared);
    if (immediate) discard_rest(v);
}

// MARK: - JoinableQueue

void mp_queue_task_add(mp_queue_view_t *v) { MP_ADD(&v->header->unfinished, 1, MP_RELAXED); }

void mp_queue_task_add_many(mp_queue_view_t *v, uint32_t count) {
    MP_ADD(&v->header->unfinished, count, MP_RELAXED);
}

void mp_queue_task_undo(mp_queue_view_t *v) { mp_queue_task_undo_many(v, 1); }

void mp_queue_task_undo_many(mp_queue_view_t *v, uint32_t count) {
    mp_queue_t *q = v->header;
    // Never below 0: an extra task_done (the caller's bug) that lands between a put's count and
    // its undo finds the count the put added, and takes it; the undo then takes what is left, so
    // the count stays right and a join still ends (a plain subtraction wrapped to 2^32 - 1 there,
    // and every join after it waited for ever).
    uint32_t n = MP_LOAD(&q->unfinished, MP_RELAXED), take;
    do {
        take = n < count ? n : count;
        if (take == 0) return;
    } while (!MP_CAS(&q->unfinished, &n, n - take, MP_SEQ_CST, MP_RELAXED));
    if (n == take && MP_LOAD(&q->join_sleepers, MP_SEQ_CST) > 0) mp_futex_wake(&q->unfinished, INT_MAX, (int)v->shared);
}

mp_status_t mp_queue_task_done(mp_queue_view_t *v) {
    mp_queue_t *q = v->header;
    uint32_t n = MP_LOAD(&q->unfinished, MP_RELAXED);
    do {
        if (n == 0) return MP_OVERFLOW;
    } while (!MP_CAS(&q->unfinished, &n, n - 1, MP_SEQ_CST, MP_RELAXED));
    if (n == 1 && MP_LOAD(&q->join_sleepers, MP_SEQ_CST) > 0) mp_futex_wake(&q->unfinished, INT_MAX, (int)v->shared);
    return MP_OK;
}

/// A joiner's announcement: counts it in `join_sleepers`, then reads `unfinished` (both seq_cst,
/// pairing with the last task_done's seq_cst decrement and its read of `join_sleepers`: either this
/// read sees 0, or that one sees the joiner and wakes the word). Returns the count to sleep on (0:
/// done); the joiner leaves `join_sleepers` after it slept or looked (join_leave).
static uint32_t join_announce(mp_queue_t *q) {
    MP_ADD(&q->join_sleepers, 1, MP_SEQ_CST);
    return MP_LOAD(&q->unfinished, MP_SEQ_CST);
}

static void join_leave(mp_queue_t *q) { MP_SUB(&q->join_sleepers, 1, MP_RELAXED); }

mp_status_t mp_queue_join(mp_queue_view_t *v, int64_t deadline) {
    mp_queue_t *q = v->header;
    for (;;) {
        uint32_t n = MP_LOAD(&q->unfinished, MP_ACQUIRE);
        if (n == 0) return MP_OK;
        n = join_announce(q);
        int timed_out = n != 0 && mp_futex_wait(&q->unfinished, n, deadline, (int)v->shared) == ETIMEDOUT;
        join_leave(q);
        if (timed_out && MP_LOAD(&q->unfinished, MP_ACQUIRE) != 0) return MP_TIMED_OUT;
    }
}

mp_status_t mp_queue_join_async(mp_queue_view_t *v, mp_async_wait_t *w) {
    mp_queue_t *q = v->header;
    mp_queue_join_async_leave(v, w); // the last wait's announcement: the look below announces anew
    if (MP_LOAD(&q->unfinished, MP_ACQUIRE) == 0) return MP_OK; // acquire: the tasks' work happened before
    uint32_t n = join_announce(q);
    if (n == 0) {
        join_leave(q);
        return MP_OK;
    }
    mp_async_wait_on(w, &q->unfinished, n, v->shared);
    w->registered = 1;
    return MP_WAIT;
}

void mp_queue_join_async_leave(mp_queue_view_t *v, mp_async_wait_t *w) {
    if (w->registered) join_leave(v->header);
    w->registered = 0;
}
