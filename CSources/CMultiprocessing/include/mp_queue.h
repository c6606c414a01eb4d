// The queue channel, its lanes, its awaited forms, and a pool's task claims (queue/).
// Part of CMultiprocessing.h (see it for the rules every header here follows).
#ifndef MP_QUEUE_H
#define MP_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "mp_sync.h"

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Queue channel

/// A multi-producer, multi-consumer message channel in shared memory: a byte ring of records (one
/// producer at a time under `producer`, one consumer at a time under `consumer`), a message count
/// with an optional limit, sleep words for "data" and "space", a shutdown flag, and the unfinished-
/// task counter of a JoinableQueue. The ring's `capacity` bytes follow the struct. See queue.c.
typedef struct mp_queue {
    // Producer line, published: the one the consumer polls. Besides `tail` it holds only what the
    // producer writes rarely, so that a polling consumer costs the producer one transfer per put.
    uint64_t tail;           // bytes published, release-stored
    uint64_t head_cache;     // the producer's last view of `head`
    uint64_t consumed_cache; // the producer's last view of `consumed`
    uint32_t streaming;      // a fragmented message is half-written
    uint32_t stream;         // the id of the last fragmented message started (in its FIRST)
    uint32_t producer_pad[8];
    // Producer line, private (changed under `producer` on every put; nobody else polls it).
    mp_mutex_t producer;
    uint64_t produced;       // messages started; relaxed-stored
    uint64_t producer_pad2[5];
    // Consumer line, published: what a producer waiting for space polls.
    uint64_t head;           // bytes consumed, release-stored
    uint64_t consumed;       // messages taken; release-stored
    uint64_t reader;         // stream id << 32 | pid of the consumer that took that FIRST; release-stored
    uint32_t delivered;      // the id of the last fragmented message read whole; release-stored
    uint32_t released;       // the id of a fragmented message its reader began to hand back early
    uint32_t consumer_pad[8];
    // Consumer line, private (changed under `consumer`).
    mp_mutex_t consumer;
    uint64_t tail_cache;     // the consumer's last view of `tail`
    uint64_t counted_end;    // the end of the records last counted in `consumed` (see queue_internal.h)
    uint64_t counting_value; // the value `consumed` takes when those records are counted
    uint32_t assembling;     // the consumer is inside a fragmented message
    uint32_t consumer_pad2[5];
    // Control line: written only when someone sleeps, at shutdown, or once at creation.
    uint32_t data_seq;
    uint32_t data_sleepers;
    uint32_t space_seq;
    uint32_t space_sleepers;
    uint32_t shutdown;     // 0, MP_QUEUE_SHUTDOWN, MP_QUEUE_SHUTDOWN_IMMEDIATE
    uint32_t shared;
    uint32_t max_messages; // 0: no limit
    uint32_t slot_size;    // a lane slot's bytes; 0: the queue has no lanes (see queue_lanes.c)
    uint64_t capacity;     // bytes, a power of two
    uint64_t control_pad2[3];
    // JoinableQueue line.
    uint32_t unfinished;   // put and not task-done; futex word for join()
    uint32_t join_sleepers;
    uint32_t joinable_pad[14];
} mp_queue_t;

#define MP_QUEUE_HEADER_SIZE 384u
#define MP_QUEUE_SHUTDOWN 1u
#define MP_QUEUE_SHUTDOWN_IMMEDIATE 2u

/// A process's handle on a queue: where the shared header and ring are mapped here, and the bounds
/// this process fixed when it made or attached the queue. Every operation takes the ring's size,
/// the message limits and the futex scope from here, never from the shared header, which any
/// process mapping the queue can write (see queue.c's "Trust"). Process-local memory, owned by the
/// Swift object that holds the mapping; `held` and `corrupted` change only under the consumer lock.
/// A queue's lanes (a shared layout private to the C code: queue_internal.h).
struct mp_queue_lanes;

typedef struct mp_queue_view {
    // Read by every put and get, written only when the view is filled (or `corrupted`, once).
    mp_queue_t *_Nullable header;
    uint8_t *_Nullable ring;
    uint64_t capacity;      // a power of two >= 4096
    uint64_t max_message;   // the longest message a get accepts: a longer one is corruption
    uint64_t max_whole;     // the longest WHOLE record: max_message, or a record's limit if smaller
    uint32_t max_messages;  // 0: no limit
    uint32_t shared;        // futexes are process-shared
    uint32_t corrupted;     // a violation was seen: every later call fails with MP_CORRUPTED
    uint32_t slot_size;     // lanes (queue_lanes.c), all zero without them: a lane message's length
    struct mp_queue_lanes *_Nullable lanes;
    uint8_t *_Nullable slots;   // lane i's slots start at slots + i * lane_slots * slot_stride
    uint64_t lane_slots;        // slots per lane, a power of two
    uint64_t queue_id;          // the queue's id, read once here: the key of a thread's lane choice
    uint64_t lane_nonce;        // this view's own id in the process, never reused (the straight put's choice)
    uint64_t lane_key;          // the straight lane paths' one test (mp_queue_straight.h); 0: none
    uint32_t slot_stride;       // slot_size rounded up to 8
    uint32_t reader_pad[15];
    // Written by every get (under the consumer lock), on a cache line of their own: the producer
    // threads of this process read the fields above on every put, and a line they share with
    // these would travel between the cores on every message.
    uint64_t held;          // bytes of the record a get holds between begin and end/rest
    int32_t held_lane;      // 1: the message a get holds is a lane's, taken into `lane_copy`; -1: a ring record
    uint32_t catch_up;      // pauses before a waiting get's first look, learned (mp_queue_wait_until)
    uint64_t held_at;       // the ring position of the record a get holds, as checked (not re-read)
    // A batch that reads records ahead of `head` (mp_queue_get_next on a queue without lanes):
    uint64_t batch_from;    // `head` when it began (its own copy: a peer may rewrite `head`)
    uint64_t batch_counted; // messages before `held_at` it will count when it ends
    uint32_t batching;      // 1 while it reads ahead; 0: a get hands back what it holds alone
    uint32_t batch_recovering; // it began on a dead consumer's counted records (counted_already)
    uint32_t consumer_pad[4];
    // The lane message a get under the consumer lock took (mp_queue_lane_take), until get_end;
    // 8-aligned, as a ring record's payload is.
    uint64_t lane_copy[512 / 8]; // MP_QUEUE_MAX_SLOT bytes
} mp_queue_view_t;

/// The most bytes a lane's slot holds: fixed-size elements up to this size travel in lanes.
#define MP_QUEUE_MAX_SLOT 512u

/// Bytes a queue with a ring of `capacity` bytes occupies: header, ring, and the lanes of
/// `slot_size`-byte slots (0: no lanes).
uint64_t mp_queue_size(uint64_t capacity, uint32_t slot_size);
/// Initialises a queue over `capacity` bytes (a power of two, >= 4096) following the header, with
/// lanes of `slot_size`-byte slots after the ring (0: none; at most MP_QUEUE_MAX_SLOT).
void mp_queue_init(mp_queue_t *_Nonnull q, uint64_t capacity, uint32_t max_messages, int shared,
                   uint32_t slot_size);
/// Fills `view` for the queue at `q`, mapped here in `mapped` bytes: its capacity, message limit
/// and slot size are read once, here, and must describe a queue (ring and lanes) that fills the
/// mapping exactly. `max_message` bounds the messages a get accepts. 0, or -EINVAL (the header
/// does not fit the mapping).
int32_t mp_queue_view_attach(mp_queue_view_t *_Nonnull view, mp_queue_t *_Nonnull q, uint64_t mapped,
                             uint64_t max_message, int shared);
/// The largest message that fits in one record (a quarter of the ring, below 2^31 bytes); larger
/// ones travel in fragments.
uint64_t mp_queue_max_record(const mp_queue_view_t *_Nonnull q);

/// Puts one message of `length` bytes. Waits (up to `deadline_ns`, absolute monotonic; INT64_MAX:
/// forever; <= now: do not wait) for the producer lock, a free message slot and ring space (and
/// room to drop a message a dead producer left half-written). A message larger than one record is
/// streamed in fragments (the deadline covers the first only). MP_OK, MP_TIMED_OUT (nothing was
/// put), MP_SHUTDOWN.
mp_status_t mp_queue_put(mp_queue_view_t *_Nonnull q, const void *_Nullable data, uint64_t length,
                         int64_t deadline_ns);

/// Waits for the next message and holds the consumer lock. On MP_OK: `*payload`/`*length` are the
/// first record's bytes (in the ring: read them before mp_queue_get_end), and `*total` the whole
/// message's length (== *length unless fragmented: then call mp_queue_get_rest). MP_TIMED_OUT or
/// MP_SHUTDOWN (the lock is not held then).
mp_status_t mp_queue_get_begin(mp_queue_view_t *_Nonnull q, int64_t deadline_ns,
                               const void *_Nullable *_Nonnull payload, uint64_t *_Nonnull length,
                               uint64_t *_Nonnull total);
/// Copies the first record into `dest` and the remaining fragments after it, `total` bytes in all,
/// then releases the consumer lock. MP_OK, or MP_ABORTED (the producer died or gave up midway, or
/// the queue was shut down immediately: discard).
mp_status_t mp_queue_get_rest(mp_queue_view_t *_Nonnull q, void *_Nonnull dest, uint64_t total);
/// Consumes a single-record message whose bytes the caller has read; releases the consumer lock.
void mp_queue_get_end(mp_queue_view_t *_Nonnull q);

/// Puts up to `count` messages in order under one hold of the producer lock, publishing each run
/// of them with one store of the tail and waking consumers once per run. Message i is `size` bytes
/// at `data + i * stride` when `lengths` is NULL (a fixed-size element's batch), else `lengths[i]`
/// bytes, the messages back to back from `data`. Waits for room as mp_queue_put does, until
/// `deadline_ns` in all. `*put` is how many were put, in order; it stops
/// early, with MP_OK, before a message larger than one record (the caller puts that one with
/// mp_queue_put, which streams it). MP_OK, or MP_TIMED_OUT, MP_SHUTDOWN, MP_CORRUPTED once it
/// could put no more (the `*put` before it are in the queue). `lanes` 0 keeps the batch out of the
/// calling thread's lane, in the ring (see mp_queue_put_async).
mp_status_t mp_queue_put_batch(mp_queue_view_t *_Nonnull q, const void *_Nullable data,
                               const uint64_t *_Nullable lengths, uint64_t size, uint64_t stride, uint64_t count,
                               int lanes, int64_t deadline_ns, uint64_t *_Nonnull put);
/// A batch get's next step, after mp_queue_get_begin or this call gave a single-record message
/// whose bytes the caller has read: takes it, then, if the next message is already there and
/// in a single record, holds it as mp_queue_get_begin does (1: its bytes in `*payload` and
/// `*length`, the consumer lock still held; end with mp_queue_get_end, this call, or
/// mp_queue_get_leave). Otherwise releases the lock, waking producers once for the batch, and
/// returns 0 without waiting (the next message, if any, is left for a single get). On a queue
/// without lanes the batch's messages are counted and handed back together when it ends (a
/// consumer killed before has taken none of them); with lanes, each as it is taken.
int mp_queue_get_next(mp_queue_view_t *_Nonnull q, const void *_Nullable *_Nonnull payload,
                      uint64_t *_Nonnull length);
/// A batch get of fixed-size values, after mp_queue_get_begin gave a single-record message of
/// `size` bytes that the caller has read: consumes it, then copies up to `max` more messages of
/// exactly `size` bytes that are already there to `buffer + i * stride` (runs of a lane's slots
/// with one store of its head), and releases the consumer lock, waking producers once. It stops,
/// without waiting, before anything else (a message of another size, or in pieces). Returns how
/// many it copied. On a queue without lanes the held message and the copies are counted and handed
/// back together at the end: a consumer killed before has taken none of them.
uint64_t mp_queue_get_copies(mp_queue_view_t *_Nonnull q, void *_Nonnull buffer, uint64_t size, uint64_t stride,
                             uint64_t max);
/// Ends a batch get without consuming the message held (one the caller cannot take: another
/// size, or bytes that do not decode, left for the next get to report); releases the lock.
void mp_queue_get_leave(mp_queue_view_t *_Nonnull q);

/// Messages waiting (a snapshot: started by a producer and not yet taken).
int32_t mp_queue_count(const mp_queue_view_t *_Nonnull q);
/// Shuts the queue down (Python 3.13's shutdown): puts fail; gets fail once the queue is empty, or
/// at once when `immediate`. Wakes every sleeper. An immediate shutdown also discards the messages
/// left and marks one task done for each (JoinableQueue); it waits for the put or get in progress
/// to give up (a few microseconds, or a dead holder's owner check).
void mp_queue_shutdown(mp_queue_view_t *_Nonnull q, int immediate);

/// JoinableQueue: one task done. MP_OVERFLOW if none is unfinished.
mp_status_t mp_queue_task_done(mp_queue_view_t *_Nonnull q);
/// JoinableQueue: waits until every put message has been task-done. MP_OK or MP_TIMED_OUT.
mp_status_t mp_queue_join(mp_queue_view_t *_Nonnull q, int64_t deadline_ns);
/// JoinableQueue: counts a put that is about to happen (undone by mp_queue_task_undo on failure).
void mp_queue_task_add(mp_queue_view_t *_Nonnull q);
void mp_queue_task_undo(mp_queue_view_t *_Nonnull q);
/// The same for `count` puts (a batch).
void mp_queue_task_add_many(mp_queue_view_t *_Nonnull q, uint32_t count);
void mp_queue_task_undo_many(mp_queue_view_t *_Nonnull q, uint32_t count);

// MARK: - Pool claims

/// A worker of a process pool records, in its own 8-byte slot of a shared array, the id of the
/// task it takes, while it holds the task queue's consumer lock and before it consumes the message
/// (see queue/pool_claims.c). Release store: pairs with the acquire loads of mp_pool_claimed and of the parent.
void mp_pool_claim(uint64_t *_Nonnull slot, uint64_t task);
/// The task id in `slot` (acquire), 0 if none was ever taken.
uint64_t mp_pool_slot(const uint64_t *_Nonnull slot);
/// Whether any of the `count` slots holds `task`: a message at the queue's head that a worker has
/// claimed was left there by a worker that died before consuming it.
int mp_pool_claimed(const uint64_t *_Nonnull slots, uint32_t count, uint64_t task);

// MARK: - Awaiting (queue_async.c; the join: queue.c). Never blocks, never spins: the caller waits
// on `w` through its event loop.

/// Queue get without blocking: MP_OK (as mp_queue_get_begin: the consumer lock is held),
/// MP_SHUTDOWN, MP_CORRUPTED, MP_WAIT (for the consumer lock or for data), or MP_OWNER_DIED (the
/// consumer lock's holder died: take the blocking path, which recovers it).
mp_status_t mp_queue_get_async(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w,
                               const void *_Nullable *_Nonnull payload, uint64_t *_Nonnull length,
                               uint64_t *_Nonnull total);
/// Queue put of one record-sized message without blocking: MP_OK, MP_SHUTDOWN, MP_CORRUPTED,
/// MP_WAIT (for the producer lock, a slot or ring space), or MP_OWNER_DIED (as for get). A lane is
/// a thread's, and a coroutine's puts keep their order in one only while they run on one thread
/// (an event loop's): `lanes` 0 sends the message through the ring, for the rest of a batch whose
/// coroutine may resume on another thread (a Task of Swift's global executor).
mp_status_t mp_queue_put_async(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w,
                               const void *_Nullable data, uint64_t length, int lanes);
/// After a wait of get or put: undoes the sleeper registration, passes a lock wake-up on.
void mp_queue_async_after_wait(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w, int woken);
/// JoinableQueue join without blocking (queue.c): MP_OK once no task is unfinished, else MP_WAIT
/// (the caller is counted among the joiners: wait on `w`, then call again, or leave).
mp_status_t mp_queue_join_async(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w);
/// A joiner that gives up (timeout, cancellation) leaves the joiners; harmless when not counted.
void mp_queue_join_async_leave(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w);

#ifdef __cplusplus
}
#endif

#endif
