// CMultiprocessing: the C mechanisms under `import Multiprocessing`.
//
// Only stdint/stddef here: importing libc types through two modules breaks clean builds, so every
// libc type crossing this boundary is spelled as a fixed-width integer. Every struct lives in memory
// that may be shared between processes; its fields are plain integers that only the C side touches
// atomically (Swift cannot see `_Atomic` fields). Layouts are pinned with `_Static_assert` in the .c
// files. Each exported name starts with `mp_`.
#ifndef C_MULTIPROCESSING_H
#define C_MULTIPROCESSING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Status codes

/// Outcome of a blocking or trying operation. Errors that are the caller's fault (a bad argument)
/// are caught in Swift before the call; these are the outcomes of a well-formed call.
typedef int32_t mp_status_t;
#define MP_OK 0
/// The deadline passed first.
#define MP_TIMED_OUT 1
/// A non-blocking try found the object taken.
#define MP_BUSY 2
/// The lock was acquired, but its previous owner died holding it (like a robust mutex's EOWNERDEAD).
#define MP_OWNER_DIED 3
/// Release of something the caller does not hold.
#define MP_NOT_HELD 4
/// A counter would pass its limit (bounded semaphore, recursion depth).
#define MP_OVERFLOW 5
/// The barrier is broken (aborted, reset while waiting, or a waiter timed out).
#define MP_BROKEN 6
/// The queue has been shut down.
#define MP_SHUTDOWN 7
/// A message was abandoned midway (its producer died): the caller should read the next one.
#define MP_ABORTED 8
/// A queue's shared state broke this process's checks (another process wrote into it out of turn):
/// the operation did nothing, and the queue refuses every later one in this process.
#define MP_CORRUPTED 9

/// Wait forever (the `timeout_ns` argument of every blocking call).
#define MP_FOREVER (-1)

// MARK: - Threads

/// Caches of the caller's ids: 0 until first asked, cleared in a forked child (futex.c). Read only
/// through mp_thread_id()/mp_process_id().
extern __thread int32_t mp_tid_cache __attribute__((tls_model("initial-exec")));
extern int32_t mp_pid_cache;
int32_t mp_thread_id_slow(void);
int32_t mp_process_id_slow(void);

/// The calling thread's kernel thread id, cached per thread (no syscall after the first call) and
/// refreshed in a forked child.
static inline int32_t mp_thread_id(void) {
    int32_t tid = mp_tid_cache;
    return __builtin_expect(tid != 0, 1) ? tid : mp_thread_id_slow();
}

/// The calling process's id, cached and refreshed in a forked child.
static inline int32_t mp_process_id(void) {
    int32_t pid = __atomic_load_n(&mp_pid_cache, __ATOMIC_RELAXED);
    return __builtin_expect(pid != 0, 1) ? pid : mp_process_id_slow();
}

/// Names the calling thread for the OS (the kernel keeps the first 15 bytes).
void mp_set_thread_name(const char *_Nonnull name);
/// Copies the calling thread's OS name into `buffer` (at least 16 bytes), NUL-terminated.
void mp_get_thread_name(char *_Nonnull buffer);

/// Whether the thread `tid` still runs (a zombie counts as dead). Uses a thread pidfd where the
/// kernel has them (>= 6.9) and /proc otherwise; a recycled tid reads as alive (see mutex.c).
int mp_thread_alive(int32_t tid);

/// Whether the process `pid` still runs (a zombie counts as dead), by pidfd.
int mp_process_alive(int32_t pid);

// MARK: - Mutex (Lock and RLock)

/// A futex mutex usable across threads and processes. `word` is 0 when free, else the owner's id,
/// with `MP_MUTEX_WAITERS` set while someone may sleep on it. The owner's id is its process id for
/// a process-owned mutex (Lock: any thread may release it, and only the process's death frees it)
/// or its thread id otherwise (RLock). `depth` counts RLock recursion and is touched only by the
/// owner. `flags` holds MP_MUTEX_SHARED and MP_MUTEX_PROCESS_OWNED. `dead_owner` is the id of the
/// owner whose death the current owner recovered from (valid after MP_OWNER_DIED).
typedef struct mp_mutex {
    uint32_t word;
    uint32_t depth;
    uint32_t flags;
    uint32_t dead_owner;
} mp_mutex_t;

#define MP_MUTEX_WAITERS 0x80000000u
#define MP_MUTEX_TID_MASK 0x3fffffffu
/// Process-shared futex calls (the mutex lives in shared memory).
#define MP_MUTEX_SHARED 1u
/// The owner is a process (its pid in the word), not a thread.
#define MP_MUTEX_PROCESS_OWNED 2u

void mp_mutex_init(mp_mutex_t *_Nonnull m, uint32_t flags);
/// The contended part of mp_mutex_lock (spin, then sleep; owner-death checks).
mp_status_t mp_mutex_lock_contended(mp_mutex_t *_Nonnull m, uint32_t id, int64_t timeout_ns);
/// The failed fast path of a try (`timeout_ns` 0): takes the lock if it has come free, or over from
/// an owner that has died (MP_OWNER_DIED), else MP_BUSY.
mp_status_t mp_mutex_try_contended(mp_mutex_t *_Nonnull m, uint32_t id);
/// Wakes one sleeper of `m` (the unlock found the WAITERS bit).
void mp_mutex_wake_one(mp_mutex_t *_Nonnull m);

/// The lock's fast path, the one place its word goes from free to held without a wait: one CAS
/// 0 -> `id` (acquire: pairs with the unlock's release swap). 1 if taken. The queues call it with
/// the caller's pid (their locks are process-owned).
static inline int mp_mutex_try_fast(mp_mutex_t *_Nonnull m, uint32_t id) {
    uint32_t expected = 0;
    return __atomic_compare_exchange_n(&m->word, &expected, id, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

/// Acquires. `timeout_ns`: 0 = try once, `MP_FOREVER`, or a relative time on the monotonic clock.
/// Returns MP_OK, MP_BUSY (try), MP_TIMED_OUT or MP_OWNER_DIED (acquired; the owner died). Every
/// acquire that would fail checks the owner's liveness at least once (a few syscalls, only when the
/// lock is taken), so a dead owner is taken over by tries and short timeouts too. The fast path is
/// inline here (one CAS, acquire: pairs with the unlock's release swap); see mutex.c.
static inline mp_status_t mp_mutex_lock(mp_mutex_t *_Nonnull m, int64_t timeout_ns) {
    uint32_t id = (uint32_t)((m->flags & MP_MUTEX_PROCESS_OWNED) ? mp_process_id() : mp_thread_id());
    if (__builtin_expect(mp_mutex_try_fast(m, id), 1)) return MP_OK;
    if (timeout_ns == 0) return mp_mutex_try_contended(m, id);
    return mp_mutex_lock_contended(m, id, timeout_ns);
}

/// Releases: one swap to 0 (release), and a wake only if someone sleeps. Any thread may release a
/// held `Lock` (as in Python); MP_NOT_HELD if it was free.
static inline mp_status_t mp_mutex_unlock(mp_mutex_t *_Nonnull m) {
    uint32_t old = __atomic_exchange_n(&m->word, 0u, __ATOMIC_RELEASE);
    if (__builtin_expect(old == 0, 0)) return MP_NOT_HELD;
    if (__builtin_expect((old & MP_MUTEX_WAITERS) != 0, 0)) mp_mutex_wake_one(m);
    return MP_OK;
}
/// The owner's tid, or 0 when free (a snapshot).
int32_t mp_mutex_owner(const mp_mutex_t *_Nonnull m);

// MARK: - Private lock (the library's own bookkeeping)

/// Forks between the program's start and this process (bumped in each forked child; futex.c).
extern uint32_t mp_fork_generation;

/// A process-private mutex that is usable in a forked child even if a thread of the parent, which
/// did not come along, held it at the fork: a lock from an older fork generation re-initialises
/// itself on first use. Never fork while holding one (the forking thread's hold is dropped too).
typedef struct mp_private_lock {
    mp_mutex_t mutex;
    uint32_t generation;
    uint32_t reserved;
} mp_private_lock_t;

void mp_private_lock_init(mp_private_lock_t *_Nonnull l);
/// The cold path of mp_private_lock_lock: re-initialises a lock from an older generation, once.
void mp_private_lock_repair(mp_private_lock_t *_Nonnull l);

/// Acquires, waiting as long as it takes. The generation check is one load (acquire: pairs with
/// the release that publishes a repaired lock) and a compare.
static inline void mp_private_lock_lock(mp_private_lock_t *_Nonnull l) {
    if (__builtin_expect(__atomic_load_n(&l->generation, __ATOMIC_ACQUIRE) !=
                             __atomic_load_n(&mp_fork_generation, __ATOMIC_RELAXED),
                         0))
        mp_private_lock_repair(l);
    (void)mp_mutex_lock(&l->mutex, MP_FOREVER);
}

static inline void mp_private_lock_unlock(mp_private_lock_t *_Nonnull l) { (void)mp_mutex_unlock(&l->mutex); }

/// Recursive acquire: the owner re-enters by counting. MP_OVERFLOW past 2^31-1 levels.
mp_status_t mp_rmutex_lock(mp_mutex_t *_Nonnull m, int64_t timeout_ns);
/// Recursive release: MP_NOT_HELD unless the calling thread owns it.
mp_status_t mp_rmutex_unlock(mp_mutex_t *_Nonnull m);
/// Releases every level at once (Condition.wait), returning the depth to restore, 0 if not owned.
uint32_t mp_rmutex_unlock_all(mp_mutex_t *_Nonnull m);
/// Re-acquires after `mp_rmutex_unlock_all`, restoring `depth` levels.
mp_status_t mp_rmutex_lock_depth(mp_mutex_t *_Nonnull m, uint32_t depth);

// MARK: - Semaphore

/// A counting semaphore. `value` is the futex word; `waiters` counts sleepers so that a release
/// makes no syscall when nobody sleeps; `limit` caps `value` (MP_SEMAPHORE_MAX when unbounded, the
/// initial value for a BoundedSemaphore).
typedef struct mp_semaphore {
    uint32_t value;
    uint32_t waiters;
    uint32_t limit;
    uint32_t shared;
} mp_semaphore_t;

#define MP_SEMAPHORE_MAX 0x7fffffffu

void mp_semaphore_init(mp_semaphore_t *_Nonnull s, uint32_t value, uint32_t limit, int shared);
mp_status_t mp_semaphore_acquire(mp_semaphore_t *_Nonnull s, int64_t timeout_ns);
/// Adds `n`; MP_OVERFLOW (and no change) if that passes `limit`.
mp_status_t mp_semaphore_release(mp_semaphore_t *_Nonnull s, uint32_t n);
uint32_t mp_semaphore_value(const mp_semaphore_t *_Nonnull s);

// MARK: - Condition

/// A condition variable over an mp_mutex: `seq` is bumped by each notify and is the futex word;
/// `waiters` and `tokens` (changed only under the mutex) count the waiting threads and the wake-ups
/// granted but not yet taken, so notify(n) releases at most n waiters and makes no syscall when
/// nobody waits.
typedef struct mp_condition {
    uint32_t seq;
    uint32_t waiters;
    uint32_t shared;
    uint32_t tokens;
} mp_condition_t;

void mp_condition_init(mp_condition_t *_Nonnull c, int shared);
/// Releases `m` (all levels if `recursive`), sleeps until notified or timed out, re-acquires `m`.
/// Returns MP_OK, MP_TIMED_OUT, MP_NOT_HELD (caller did not hold `m`), or MP_OWNER_DIED (from the
/// re-acquire; the lock is held).
mp_status_t mp_condition_wait(mp_condition_t *_Nonnull c, mp_mutex_t *_Nonnull m, int recursive,
                              int64_t timeout_ns);
/// Wakes up to `n` waiters; the caller holds the mutex.
void mp_condition_notify(mp_condition_t *_Nonnull c, uint32_t n);

// MARK: - Event

/// `word` bit 0 is the flag; the rest counts sets, so a waiter woken by a set that a clear has
/// already undone still sees that the event fired (as Python's Event.wait returns True).
typedef struct mp_event {
    uint32_t word;
    uint32_t waiters;
    uint32_t shared;
    uint32_t reserved;
} mp_event_t;

void mp_event_init(mp_event_t *_Nonnull e, int shared);
void mp_event_set(mp_event_t *_Nonnull e);
void mp_event_clear(mp_event_t *_Nonnull e);
int mp_event_is_set(const mp_event_t *_Nonnull e);
/// MP_OK once set (or set while waiting), MP_TIMED_OUT otherwise.
mp_status_t mp_event_wait(mp_event_t *_Nonnull e, int64_t timeout_ns);

// MARK: - Barrier

/// Python's Barrier (filling, draining, broken) under a guard mutex, with `seq` as the futex word
/// every state change bumps and `cycle` counting resets, so that reset() also frees a barrier that
/// a dead party left waiting for ever.
typedef struct mp_barrier {
    mp_mutex_t guard;
    uint32_t parties;
    uint32_t count;
    int32_t state;
    uint32_t seq;
    uint32_t shared;
    uint32_t cycle;
    uint32_t reserved[2];
} mp_barrier_t;

void mp_barrier_init(mp_barrier_t *_Nonnull b, uint32_t parties, int shared);
/// Waits for all parties. On MP_OK `*index` is this caller's arrival index (0..parties-1).
/// MP_BROKEN if the barrier is or becomes broken or reset; a timeout breaks it (MP_TIMED_OUT).
mp_status_t mp_barrier_wait(mp_barrier_t *_Nonnull b, int64_t timeout_ns, uint32_t *_Nonnull index);
void mp_barrier_reset(mp_barrier_t *_Nonnull b);
void mp_barrier_abort(mp_barrier_t *_Nonnull b);
int mp_barrier_is_broken(mp_barrier_t *_Nonnull b);
uint32_t mp_barrier_waiting(mp_barrier_t *_Nonnull b);

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
    uint64_t counting_head;  // head + 1 of the message being counted in `consumed` (see queue_internal.h)
    uint64_t counting_value; // the value `consumed` takes when that message is counted
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
    mp_queue_t *_Nullable header;
    uint8_t *_Nullable ring;
    uint64_t capacity;      // a power of two >= 4096
    uint64_t max_message;   // the longest message a get accepts: a longer one is corruption
    uint64_t max_whole;     // the longest WHOLE record: max_message, or a record's limit if smaller
    uint64_t held;          // bytes of the record a get holds between begin and end/rest
    uint32_t max_messages;  // 0: no limit
    uint32_t shared;        // futexes are process-shared
    uint32_t corrupted;     // a violation was seen: every later call fails with MP_CORRUPTED
    int32_t held_lane;      // the lane of the message a get holds, or -1 (the ring's)
    // Lanes (queue_lanes.c), all zero for a queue without them.
    struct mp_queue_lanes *_Nullable lanes;
    uint8_t *_Nullable slots;   // lane i's slots start at slots + i * lane_slots * slot_stride
    uint64_t lane_slots;        // slots per lane, a power of two
    uint64_t view_id;           // unique in this process: the key of a thread's lane
    uint32_t slot_size;         // a message in a lane is exactly this long
    uint32_t slot_stride;       // slot_size rounded up to 8
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
/// could put no more (the `*put` before it are in the queue).
mp_status_t mp_queue_put_batch(mp_queue_view_t *_Nonnull q, const void *_Nullable data,
                               const uint64_t *_Nullable lengths, uint64_t size, uint64_t stride, uint64_t count,
                               int64_t deadline_ns, uint64_t *_Nonnull put);
/// A batch get's next step, after mp_queue_get_begin or this call gave a single-record message
/// whose bytes the caller has read: consumes it, then, if the next message is already there and
/// in a single record, holds it as mp_queue_get_begin does (1: its bytes in `*payload` and
/// `*length`, the consumer lock still held; end with mp_queue_get_end, this call, or
/// mp_queue_get_leave). Otherwise releases the lock, waking producers once for the batch, and
/// returns 0 without waiting (the next message, if any, is left for a single get).
int mp_queue_get_next(mp_queue_view_t *_Nonnull q, const void *_Nullable *_Nonnull payload,
                      uint64_t *_Nonnull length);
/// A batch get of fixed-size values, after mp_queue_get_begin gave a single-record message of
/// `size` bytes that the caller has read: consumes it, then copies up to `max` more messages of
/// exactly `size` bytes that are already there to `buffer + i * stride` (runs of a lane's slots
/// with one store of its head), and releases the consumer lock, waking producers once. It stops,
/// without waiting, before anything else (a message of another size, or in pieces). Returns how
/// many it copied.
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

// MARK: - Shared memory

/// Header at the start of every named region: attach checks it before trusting anything else.
typedef struct mp_region_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t payload_size;
    uint32_t creator_pid;
    uint32_t reserved;
    uint64_t reserved2[4];
} mp_region_header_t;

#define MP_REGION_MAGIC 0x31504d5446495753ull /* the bytes "SWIFTMP1" on a little-endian machine */
#define MP_REGION_VERSION 1u
#define MP_REGION_HEADER_SIZE 64u

/// memfd_create + ftruncate, then sealed against shrinking and growing (see shm.c). Returns the
/// descriptor (close-on-exec) or -errno.
int32_t mp_memfd_create(const char *_Nonnull name, uint64_t size);
/// A memfd holding the `count` bytes at `bytes`, sealed against every change (a bootstrap
/// payload). Returns the descriptor (close-on-exec) or -errno.
int32_t mp_memfd_create_sealed(const char *_Nonnull name, const void *_Nullable bytes, uint64_t count);
/// Whether `fd` is a memfd made by mp_memfd_create (or, when `immutable`, mp_memfd_create_sealed)
/// of at least `size` bytes: its size, or -EPERM (not such a memfd), -EINVAL (smaller), -errno.
int64_t mp_memfd_check(int32_t fd, uint64_t size, int32_t immutable);
/// shm_open(O_CREAT|O_EXCL, 0600) + ftruncate. Returns the descriptor or -errno.
int32_t mp_shm_create(const char *_Nonnull name, uint64_t size);
/// shm_open(O_RDWR). Returns the descriptor or -errno.
int32_t mp_shm_open(const char *_Nonnull name);
/// shm_unlink. Returns 0 or -errno.
int32_t mp_shm_unlink(const char *_Nonnull name);
/// 0 if `fd` is a regular file owned by this process's effective user that no one else may open
/// (no group or other permission bits); -EPERM if not, or -errno.
int32_t mp_fd_private_to_owner(int32_t fd);
/// Size of the object behind `fd`, or -errno.
int64_t mp_fd_size(int32_t fd);
/// The device and inode of the file behind `fd` (what tells a named object from a later one of the
/// same name). 0 or -errno.
int32_t mp_fd_identity(int32_t fd, uint64_t *_Nonnull device, uint64_t *_Nonnull inode);
/// mmap(MAP_SHARED, read/write) of `size` bytes of `fd`. Returns NULL and sets `*error` on failure.
void *_Nullable mp_map_shared(int32_t fd, uint64_t size, int32_t *_Nonnull error);
/// munmap. Returns 0 or -errno.
int32_t mp_unmap(void *_Nonnull address, uint64_t size);
/// Fills a fresh header (the creator does this once, before anyone can attach).
void mp_region_header_init(mp_region_header_t *_Nonnull h, uint64_t payload_size);
/// The header's magic, loaded with acquire: pairs with the release in mp_region_header_init, so a
/// reader that sees MP_REGION_MAGIC sees the whole header.
uint64_t mp_region_header_magic(const mp_region_header_t *_Nonnull h);

// MARK: - Resource tracker (tracker.c)

/// The longest name the tracker takes: a POSIX shared-memory path, leading "/" included.
#define MP_TRACKER_NAME_MAX 251u
/// Message kinds: the sender created the object (register) or unlinked it (unregister).
#define MP_TRACKER_REGISTER 1u
#define MP_TRACKER_UNREGISTER 2u

/// Starts a resource tracker: a forked child that reads registrations from a SOCK_SEQPACKET socket
/// until every holder of its write end is gone, then unlinks each registered name that still is the
/// registered file, and exits. The child runs only C code, ignores SIGINT, SIGTERM, SIGHUP and
/// SIGPIPE, is out of the caller's process group (both already hold when this returns), keeps no
/// other descriptor and no shared mapping, and is named "mp-tracker". It exits only after every
/// holder has, so its parent cannot wait for it: reap it only if it dies early (a send then fails
/// with EPIPE). Stores the write end (close-on-exec) in `*write_fd` and returns the child's pid, or
/// -errno (nothing is left open then).
int32_t mp_tracker_start(int32_t *_Nonnull write_fd);

/// Sends one message (`MP_TRACKER_REGISTER` or `MP_TRACKER_UNREGISTER`) about the object `name`
/// ("/" then up to MP_TRACKER_NAME_MAX - 1 bytes, no other "/") that is the file (`device`,
/// `inode`). Blocks while the tracker's queue is full; never raises SIGPIPE. 0, -EINVAL for a bad
/// kind or name, or -errno: EPIPE or ECONNRESET once the tracker has gone.
int32_t mp_tracker_send(int32_t fd, uint32_t kind, const char *_Nonnull name, uint64_t device,
                        uint64_t inode);

/// In a spawned child, for a descriptor its parent kept open for it: checks that it is a
/// SOCK_SEQPACKET socket and makes it close-on-exec again. 0 or -errno (-EPROTOTYPE: another kind).
int32_t mp_tracker_adopt(int32_t fd);

// MARK: - Processes

/// Flushes stdio, forks, and in the child empties the signal mask (the forking thread's mask would
/// be inherited), refreshes the tid/pid caches and, when `die_with_parent`, asks for SIGKILL when
/// the parent dies (exiting at once if it already has). Returns the pid in the parent, 0 in the child,
/// -errno on failure.
int32_t mp_fork(int die_with_parent);

/// posix_spawn of `path` with `argv`/`envp` (NULL-terminated), keeping `keep_fds` (count `nkeep`)
/// open in the child; everything else close-on-exec stays closed. The child's signal mask is
/// emptied and SIGPIPE, SIGXFSZ and SIGCHLD start at their default. Returns the pid or -errno.
int32_t mp_spawn(const char *_Nonnull path, char *_Nullable const *_Nonnull argv,
                 char *_Nullable const *_Nonnull envp, const int32_t *_Nullable keep_fds,
                 int32_t nkeep);

/// In a spawned child: SIGKILL when the parent dies; exits at once if `parent` is already gone.
void mp_die_with_parent(int32_t parent);

/// Undoes mp_die_with_parent: this process outlives the thread that forked it.
void mp_outlive_parent(void);

/// Reaps the child `pid`, through its `pidfd` when it has one (>= 0: a reused pid is then never
/// reaped by mistake). `nohang`: return 0 at once if the child still runs. On a reaped child
/// returns `pid` and stores the Python-style exit code in `*exit_code` (status, or -signal).
/// -errno on failure (ECHILD: reaped elsewhere).
int32_t mp_wait_child(int32_t pid, int32_t pidfd, int nohang, int32_t *_Nonnull exit_code);

/// A pidfd for the child `pid` (close-on-exec), or -errno. It polls readable once the child exits.
int32_t mp_pidfd_open(int32_t pid);

/// Waits up to `timeout_ns` (MP_FOREVER: no limit) for `fd` to be readable: 1 readable, 0 timed
/// out, -errno on failure. EINTR is retried with the remaining time.
int32_t mp_poll_readable(int32_t fd, int64_t timeout_ns);

/// pipe2(O_CLOEXEC): fds[0] reads, fds[1] writes. 0 or -errno.
int32_t mp_pipe(int32_t *_Nonnull fds);

/// Sends `signal` to `pid`; 0 or -errno.
int32_t mp_signal(int32_t pid, int32_t signal);
/// Sends `signal` to the process `pidfd` names (never to another that reused its pid); 0 or -errno
/// (ESRCH once it has exited).
int32_t mp_pidfd_signal(int32_t pidfd, int32_t signal);

/// Writes stderr text and flushes stdio, then `_exit(code)`: the way out of a forked child, which
/// must not run the parent's atexit handlers or Swift's deinitialisers of inherited state.
_Noreturn void mp_exit_child(int32_t code);

/// Flushes all stdio streams (before fork, and in a child before `_exit`).
void mp_flush_stdio(void);

// MARK: - Fork servers (forkserver.c)

/// The most descriptors one fork request can hand to its child.
#define MP_SERVER_MAX_FDS 64
/// "mp-fsrv1", little-endian: the first word of every fork-server message.
#define MP_SERVER_MAGIC 0x31767273662d706dull
#define MP_SERVER_VERSION 1

/// A request's `kind`: fork one child.
#define MP_SERVER_FORK 0
/// A request's `kind`: the client is done; the server exits and leaves the children alone. (An end
/// of stream without it means the client died: the server then kills the daemon children.)
#define MP_SERVER_GOODBYE 1

/// A request to a fork server. For MP_SERVER_FORK, the i-th descriptor sent with the request
/// becomes descriptor `fds[i]` in the child (close-on-exec); `tag` is the client's, handed to the
/// child.
typedef struct mp_server_request {
    uint64_t magic;
    uint64_t tag;
    uint32_t version;
    uint32_t daemon;
    uint32_t fd_count;
    uint32_t kind;
    int32_t fds[MP_SERVER_MAX_FDS];
} mp_server_request_t;

/// A fork server's answer: its hello (`pid` = the server's pid) or a fork's outcome (`pid` = the
/// child's pid, its pidfd attached), or -errno.
typedef struct mp_server_reply {
    uint64_t magic;
    int32_t pid;
    uint32_t kind;
} mp_server_reply_t;

/// Clears `request` and fills its fixed fields.
void mp_server_request_init(mp_server_request_t *_Nonnull request, uint64_t tag, int32_t daemon);
/// Appends a descriptor's number in the child; 0, or -E2BIG past MP_SERVER_MAX_FDS.
int32_t mp_server_request_add_fd(mp_server_request_t *_Nonnull request, int32_t target);
/// The number of the request's `index`-th descriptor (in the child: where it now is), or -1.
int32_t mp_server_request_fd(const mp_server_request_t *_Nonnull request, uint32_t index);

/// socketpair(AF_UNIX, SOCK_SEQPACKET, close-on-exec): fds[0] for the client, fds[1] for the server.
int32_t mp_socketpair(int32_t *_Nonnull fds);

/// Serves fork requests on `sock` for `client` (the server's parent). Each child is the client's
/// own (CLONE_PARENT). Returns 0 in a new child, with `*request` holding its request and its
/// descriptors in place (`isolate`: and every other descriptor above stderr closed). In the server,
/// returns -errno once it should exit: -ESRCH (the client died, or its end closed without a
/// goodbye: the daemon children were SIGKILLed), -EPIPE (the client said goodbye), -EBUSY (the
/// process has more than one thread: it refused to serve). Never returns between requests.
int32_t mp_server_serve(int32_t sock, int32_t client, int32_t isolate,
                        mp_server_request_t *_Nonnull request);

/// Client side: waits until `deadline_ns` (absolute monotonic; INT64_MAX: forever) for the
/// server's hello; `server_pidfd` (or -1) tells when the server exits without a word. 0 and
/// `*pid`, or -errno: ETIMEDOUT, ECONNRESET (it exited first), EBUSY (it refused to serve: it had
/// more than one thread).
int32_t mp_server_await_hello(int32_t sock, int32_t server_pidfd, int64_t deadline_ns, int32_t *_Nonnull pid);

/// Client side: tells the server to exit and leave the children alone. 0 or -errno.
int32_t mp_server_goodbye(int32_t sock);

/// Client side: asks for one child, sending the `count` descriptors `fds` (as many as the request
/// declares, or the server refuses it), and waits until
/// `deadline_ns` for the answer. Returns the child's pid with its pidfd in `*pidfd`, or -errno
/// (ECONNRESET/EPIPE: the server is gone; ETIMEDOUT: no answer in time, the server is then unusable).
/// One exchange at a time per socket: the caller serialises.
int32_t mp_server_fork(int32_t sock, int32_t server_pidfd, const mp_server_request_t *_Nonnull request,
                       const int32_t *_Nullable fds, uint32_t count, int64_t deadline_ns,
                       int32_t *_Nonnull pidfd);
/// Client side, the two halves of mp_server_fork, for several requests in flight: the server
/// answers them in the order they were sent. Sends one request (0 or -errno)...
int32_t mp_server_send_fork(int32_t sock, const mp_server_request_t *_Nonnull request, const int32_t *_Nullable fds,
                            uint32_t count);
/// ...and awaits the next answer: a pid (its pidfd in `*pidfd`) or -errno, as mp_server_fork.
int32_t mp_server_await_fork(int32_t sock, int32_t server_pidfd, int64_t deadline_ns, int32_t *_Nonnull pidfd);

// MARK: - Fault injection (tests)

/// Between a queue consumer counting a message as taken and handing its bytes back to producers.
#define MP_FAULT_QUEUE_COUNTED 1u
/// A consumer of a fragmented message: after it announced itself as its reader, after it read the
/// FIRST, after each record it read (the LAST included, before it hands the message back), and
/// after it handed back part of it to wait for the rest.
#define MP_FAULT_QUEUE_STREAM 2u

/// Arms a fault point: the calling process SIGKILLs itself the next time it passes `point` (0
/// disarms). Returns 1, or 0 in builds without fault injection (release), where it does nothing.
/// A forked child inherits the armed point; arm it in the process that must die.
int32_t mp_fault_arm(uint32_t point);

/// Arms `point` to fire on its pass number `passes + 1` (0: the next pass, as mp_fault_arm).
int32_t mp_fault_arm_after(uint32_t point, uint32_t passes);

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

// MARK: - Time

/// The monotonic clock in nanoseconds.
int64_t mp_monotonic_ns(void);
/// Sleeps on the monotonic clock until `deadline_ns`; 0, or -errno (EINTR is retried).
int32_t mp_sleep_until(int64_t deadline_ns);

// MARK: - io_uring

/// Whether io_uring works here, and whether it has IORING_OP_FUTEX_WAIT (bit 1).
/// 0: no io_uring; 1: io_uring; 3: io_uring with futex operations.
int32_t mp_uring_probe(void);

// MARK: - Event loop ring (uring.c, uring_ops.c)

/// One io_uring, its wake-up eventfd and the per-slot storage that timeouts need until they are
/// submitted. Opaque: only the loop's own thread touches the ring; any thread may call
/// mp_loop_wake.
typedef struct mp_loop mp_loop_t;

/// One completion, copied out of the ring.
typedef struct mp_completion {
    uint64_t user_data;
    int32_t result;
    uint32_t flags;
} mp_completion_t;

/// user_data the loop reserves: operations use their object's address, which is never 0 or 1.
/// Completions of linked timeouts and cancel requests carry MP_LOOP_IGNORED and are dropped.
#define MP_LOOP_IGNORED 0u
/// The eventfd read that wakes a parked loop.
#define MP_LOOP_WAKE 1u
/// Bit 0 of mp_loop_features: IORING_OP_FUTEX_WAIT works (kernel >= 6.7).
#define MP_LOOP_FUTEX 1u

/// Creates a ring with `entries` submission slots (completion queue 16x that) and arms the wake-up
/// read. NULL and `*error` (an errno) on failure.
mp_loop_t *_Nullable mp_loop_create(uint32_t entries, int32_t *_Nonnull error);
/// On the thread that will drive the ring, before anything else: it becomes the ring's single
/// issuer where the kernel supports that. 0 or -errno.
int32_t mp_loop_start(mp_loop_t *_Nonnull loop);
/// Closes the ring (the kernel cancels what is still in flight) and the eventfd.
void mp_loop_destroy(mp_loop_t *_Nonnull loop);
/// MP_LOOP_FUTEX when the kernel runs futex waits in the ring.
uint32_t mp_loop_features(const mp_loop_t *_Nonnull loop);
/// Submits the queued entries; when `wait`, sleeps until at least one completion is there.
/// 0, or -errno for a broken ring (EINTR and a busy completion queue read as 0).
int32_t mp_loop_enter(mp_loop_t *_Nonnull loop, int wait);
/// Copies up to `max` completions into `out` and marks them seen; returns how many.
uint32_t mp_loop_reap(mp_loop_t *_Nonnull loop, mp_completion_t *_Nonnull out, uint32_t max);
/// The loop thread, before it sleeps (1, then it re-checks its inbox) and after (0).
void mp_loop_set_parked(mp_loop_t *_Nonnull loop, int parked);
/// Any thread, after queueing work for the loop: wakes it if it is parked (one eventfd write, by
/// whoever clears the parked flag first).
void mp_loop_wake(mp_loop_t *_Nonnull loop);
/// Re-arms the eventfd read after its completion (MP_LOOP_WAKE). 0 or -EBUSY (queue full).
int32_t mp_loop_arm_wake(mp_loop_t *_Nonnull loop);
/// The Swift object driving the ring on the calling thread, or NULL off any loop thread.
void *_Nullable mp_loop_current(void);
/// Whether this library was built with ThreadSanitizer (see LoopOperation.swift's handoff).
int mp_built_with_tsan(void);
void mp_loop_set_current(void *_Nullable owner);

// Each of these queues one operation (two for a deadline) and returns 0, or -EBUSY when the
// submission queue is full even after a flush (reap completions, then try again). Buffers, paths
// and addresses must stay valid until the operation's completion. Deadlines are absolute
// CLOCK_MONOTONIC nanoseconds; INT64_MAX means none.

/// IORING_OP_TIMEOUT, absolute: completes with -ETIME at `deadline_ns`, -ECANCELED if cancelled.
int32_t mp_loop_timeout(mp_loop_t *_Nonnull loop, uint64_t user_data, int64_t deadline_ns);
/// IORING_OP_ASYNC_CANCEL of the operation `target` (its completion is MP_LOOP_IGNORED).
int32_t mp_loop_cancel(mp_loop_t *_Nonnull loop, uint64_t target);
/// Cancels every operation in flight (shutting down).
int32_t mp_loop_cancel_all(mp_loop_t *_Nonnull loop);
/// IORING_OP_FUTEX_WAIT: sleeps while `*word == expected` (the kernel compares). Completes with 0
/// when woken, -EAGAIN if the word already differs, -ECANCELED when cancelled or when the linked
/// deadline passes first. `shared`: 0 only for a word no other process maps.
int32_t mp_loop_futex_wait(mp_loop_t *_Nonnull loop, uint64_t user_data, uint32_t *_Nonnull word,
                           uint32_t expected, int shared, int64_t deadline_ns);
/// read(2)/pread(2): `offset` -1 reads at (and advances) the file position.
int32_t mp_loop_read(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd, void *_Nonnull buffer,
                     uint32_t length, int64_t offset);
int32_t mp_loop_write(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd,
                      const void *_Nonnull buffer, uint32_t length, int64_t offset);
/// openat(AT_FDCWD, path, flags | O_CLOEXEC, mode): completes with the descriptor.
int32_t mp_loop_open(mp_loop_t *_Nonnull loop, uint64_t user_data, const char *_Nonnull path,
                     int32_t flags, uint32_t mode);
int32_t mp_loop_close(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd);
int32_t mp_loop_fsync(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd, int datasync);
/// accept4(SOCK_CLOEXEC): completes with the connection's descriptor.
int32_t mp_loop_accept(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd);
int32_t mp_loop_connect(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd,
                        const void *_Nonnull address, uint32_t length);
/// send(MSG_NOSIGNAL): a closed peer is -EPIPE, never SIGPIPE.
int32_t mp_loop_send(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd,
                     const void *_Nonnull buffer, uint32_t length);
int32_t mp_loop_recv(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd, void *_Nonnull buffer,
                     uint32_t length);

// MARK: - Sockets (uring_net.c)

/// Room for any socket address (struct sockaddr_storage).
#define MP_ADDRESS_SIZE 128u

/// Resolves `host` (an IPv4 or IPv6 literal; a name too unless `numeric_only`) and `port` into
/// `address` (MP_ADDRESS_SIZE bytes) and `*length`. 0, or a getaddrinfo error (EAI_*, negative).
int32_t mp_resolve(const char *_Nonnull host, uint16_t port, int numeric_only, void *_Nonnull address,
                   uint32_t *_Nonnull length);
/// The text of a getaddrinfo error.
const char *_Nonnull mp_resolve_error(int32_t code);
/// A TCP socket (close-on-exec) bound to `address` with SO_REUSEADDR, listening. fd or -errno.
int32_t mp_tcp_listen(const void *_Nonnull address, uint32_t length, int32_t backlog);
/// An unconnected TCP socket (close-on-exec) of `address`'s family. fd or -errno.
int32_t mp_tcp_socket(const void *_Nonnull address);
/// Sets TCP_NODELAY (small writes leave at once). 0 or -errno.
int32_t mp_tcp_nodelay(int32_t fd);
/// The local (`peer` 0) or remote port of a socket, or -errno.
int32_t mp_socket_port(int32_t fd, int peer);
/// close(2). 0 or -errno.
int32_t mp_close(int32_t fd);

// MARK: - Awaiting the shared primitives (each in its own file: sync/*.c, queue/queue_async.c)

/// The state of one coroutine waiting on a shared primitive: which futex word to wait on and the
/// value it was seen to hold, and whether the waiter is counted among the primitive's sleepers
/// (so that the next call, or the leave function, undoes that). Zero it before the first call.
typedef struct mp_async_wait {
    uint32_t *_Nullable word;
    uint32_t expected;
    uint32_t shared;
    uint32_t registered;
    uint32_t target;
    int64_t check_at;
} mp_async_wait_t;

/// Status: not yet. Wait until `word` no longer holds `expected` (or a wake-up), then call again.
#define MP_WAIT 10

/// Lock (process-owned mutex) acquire without blocking: MP_OK, MP_OWNER_DIED (acquired; see
/// mp_mutex_t), or MP_WAIT. Owner liveness is checked on the blocking path's schedule: wait no
/// later than `check_at`.
mp_status_t mp_mutex_lock_async(mp_mutex_t *_Nonnull m, mp_async_wait_t *_Nonnull w);
/// A waiter that was woken but leaves without taking what woke it passes the wake-up on.
void mp_async_wait_forward(const mp_async_wait_t *_Nonnull w);
/// The fallback where the ring has no futex wait: sleeps on a helper thread while the word holds
/// `expected`, until woken or `deadline_ns`. 0, or ETIMEDOUT.
int32_t mp_async_wait_blocking(const mp_async_wait_t *_Nonnull w, int64_t deadline_ns);
/// Semaphore: MP_OK (a permit taken) or MP_WAIT. mp_semaphore_async_leave on cancellation.
mp_status_t mp_semaphore_acquire_async(mp_semaphore_t *_Nonnull s, mp_async_wait_t *_Nonnull w);
void mp_semaphore_async_leave(mp_semaphore_t *_Nonnull s, mp_async_wait_t *_Nonnull w, int woken);
/// Event: MP_OK once set (or set since the first call), else MP_WAIT. mp_event_async_leave on
/// cancellation or timeout.
mp_status_t mp_event_wait_async(mp_event_t *_Nonnull e, mp_async_wait_t *_Nonnull w);
void mp_event_async_leave(mp_event_t *_Nonnull e, mp_async_wait_t *_Nonnull w);
/// Condition over a Lock, step 1 (lock held): joins the waiters, releases the lock, MP_WAIT on
/// `seq`; MP_NOT_HELD if the lock is free.
mp_status_t mp_condition_wait_async_begin(mp_condition_t *_Nonnull c, mp_mutex_t *_Nonnull m,
                                          mp_async_wait_t *_Nonnull w);
/// After a wake-up: whether `seq` moved on (else the wait goes on without the lock).
int mp_condition_async_notified(const mp_condition_t *_Nonnull c, const mp_async_wait_t *_Nonnull w);
/// Step 2, the lock re-acquired: MP_OK (notified), MP_TIMED_OUT (when `timed_out`), or MP_WAIT
/// (a wake-up meant for another waiter: the lock is released again and the wait goes on).
mp_status_t mp_condition_wait_async_end(mp_condition_t *_Nonnull c, mp_mutex_t *_Nonnull m,
                                        mp_async_wait_t *_Nonnull w, int timed_out);
/// A cancelled waiter, the lock re-acquired: leaves the waiters, keeping tokens <= waiters.
void mp_condition_async_leave(mp_condition_t *_Nonnull c);

/// Queue get without blocking: MP_OK (as mp_queue_get_begin: the consumer lock is held),
/// MP_SHUTDOWN, MP_WAIT (for the consumer lock or for data), or MP_OWNER_DIED (the consumer lock's
/// holder died: take the blocking path, which recovers it).
mp_status_t mp_queue_get_async(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w,
                               const void *_Nullable *_Nonnull payload, uint64_t *_Nonnull length,
                               uint64_t *_Nonnull total);
/// Queue put of one record-sized message without blocking: MP_OK, MP_SHUTDOWN, MP_WAIT (for the
/// producer lock, a slot or ring space), or MP_OWNER_DIED (as for get).
mp_status_t mp_queue_put_async(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w,
                               const void *_Nullable data, uint64_t length);
/// After a wait of get or put: undoes the sleeper registration, passes a lock wake-up on.
void mp_queue_async_after_wait(mp_queue_view_t *_Nonnull q, mp_async_wait_t *_Nonnull w, int woken);

#ifdef __cplusplus
}
#endif

#endif
