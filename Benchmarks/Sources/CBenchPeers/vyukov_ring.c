// The fair peer of the engine's MPMC queue: Dmitry Vyukov's bounded MPMC queue (per-cell sequence
// numbers, a CAS on the enqueue or dequeue position) that blocks like the engine does, through an
// eventcount on a futex word, instead of spinning. Same contest shape as the engine rows: 8-byte
// values between threads of one process, P producers and C consumers.
//
// Invariants:
// - Cell i holds seq == pos when free for the enqueue at pos, seq == pos + 1 once the value at pos
//   is published, and seq == pos + SLOTS once it is consumed (free for the enqueue a lap later).
//   The value is written before, and read after, the release store / acquire load of seq that
//   publishes it; the positions only pick a cell (relaxed CAS): seq carries the ordering.
// - The eventcount (one per direction: "not empty" for consumers, "not full" for producers):
//   a waiter reads `epoch`, then announces itself (seq_cst increment of `waiters`), then tries
//   its operation again, and only then futex-waits for `epoch` to move on from what it read. A
//   notifier publishes, then a seq_cst fence, then reads `waiters`, and bumps `epoch` and wakes
//   only when someone waits. The two seq_cst steps are a Dekker pair: either the waiter's retry
//   sees the publication or the notifier sees the waiter (and its wake, or its bumped epoch,
//   ends the futex wait). A notifier with nobody waiting makes no system call.
// - Threads of one process only: the futexes are FUTEX_PRIVATE_FLAG.
#define _GNU_SOURCE
#include "CBenchPeers.h"

#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define SLOTS (1u << 16)
// Tries before a side sleeps: long enough to ride out the other side's next operation, short
// enough not to burn the CPU that side needs on a 2-CPU machine.
#define SPINS 64
#define MAX_SIDE 8

typedef struct {
    uint64_t seq;
    uint64_t value;
} cell_t;

typedef struct {
    _Alignas(64) uint32_t epoch;  // the futex word; moves on at each notification that finds a waiter
    uint32_t waiters;             // threads between their announcement and the end of their wait
} eventcount_t;

typedef struct {
    _Alignas(64) uint64_t enqueue_pos;
    _Alignas(64) uint64_t dequeue_pos;
    eventcount_t not_empty;  // consumers wait here
    eventcount_t not_full;   // producers wait here
    _Alignas(64) cell_t cells[SLOTS];
} vyukov_ring_t;

_Static_assert((SLOTS & (SLOTS - 1)) == 0, "SLOTS is a power of two: a position masks to its cell");
_Static_assert(__builtin_offsetof(vyukov_ring_t, dequeue_pos) - __builtin_offsetof(vyukov_ring_t, enqueue_pos) >= 64,
               "producers' and consumers' positions a cache line apart");
_Static_assert(sizeof(eventcount_t) == 64, "each eventcount on a cache line of its own");
_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0), "positions and sequences are lock-free atomics");

static void futex_wait(uint32_t *word, uint32_t expected) {
    // EAGAIN (the epoch moved on) and EINTR both send the caller back to retry its operation.
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void eventcount_notify(eventcount_t *ec) {
    // Orders the caller's publication (a release store of seq) before the load of waiters.
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ec->waiters, __ATOMIC_RELAXED) == 0) return;
    __atomic_fetch_add(&ec->epoch, 1, __ATOMIC_RELEASE);
    syscall(SYS_futex, &ec->epoch, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static int try_enqueue(vyukov_ring_t *r, uint64_t value) {
    uint64_t pos = __atomic_load_n(&r->enqueue_pos, __ATOMIC_RELAXED);
    for (;;) {
        cell_t *cell = &r->cells[pos & (SLOTS - 1)];
        // Acquire: pairs with the consumer's release of seq, so its read of the old value is done.
        int64_t dif = (int64_t)(__atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE) - pos);
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&r->enqueue_pos, &pos, pos + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                cell->value = value;
                __atomic_store_n(&cell->seq, pos + 1, __ATOMIC_RELEASE);  // publishes value
                return 1;
            }
        } else if (dif < 0) {
            return 0;  // full: the cell still holds the value of the lap before
        } else {
            pos = __atomic_load_n(&r->enqueue_pos, __ATOMIC_RELAXED);  // another producer took pos
        }
    }
}

static int try_dequeue(vyukov_ring_t *r, uint64_t *value) {
    uint64_t pos = __atomic_load_n(&r->dequeue_pos, __ATOMIC_RELAXED);
    for (;;) {
        cell_t *cell = &r->cells[pos & (SLOTS - 1)];
        // Acquire: pairs with the producer's release of seq, so value is the published one.
        int64_t dif = (int64_t)(__atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE) - (pos + 1));
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&r->dequeue_pos, &pos, pos + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
                *value = cell->value;
                __atomic_store_n(&cell->seq, pos + SLOTS, __ATOMIC_RELEASE);  // hands the cell back
                return 1;
            }
        } else if (dif < 0) {
            return 0;  // empty
        } else {
            pos = __atomic_load_n(&r->dequeue_pos, __ATOMIC_RELAXED);
        }
    }
}

static void put(vyukov_ring_t *r, uint64_t value) {
    for (int spin = 0; !try_enqueue(r, value); spin++) {
        if (spin < SPINS) {
            __builtin_ia32_pause();
            continue;
        }
        eventcount_t *ec = &r->not_full;
        uint32_t key = __atomic_load_n(&ec->epoch, __ATOMIC_ACQUIRE);
        __atomic_fetch_add(&ec->waiters, 1, __ATOMIC_SEQ_CST);  // the waiter's half of the Dekker pair
        int done = try_enqueue(r, value);
        if (!done) futex_wait(&ec->epoch, key);
        __atomic_fetch_sub(&ec->waiters, 1, __ATOMIC_RELAXED);
        if (done) break;
    }
    eventcount_notify(&r->not_empty);
}

static uint64_t get(vyukov_ring_t *r) {
    uint64_t value;
    for (int spin = 0; !try_dequeue(r, &value); spin++) {
        if (spin < SPINS) {
            __builtin_ia32_pause();
            continue;
        }
        eventcount_t *ec = &r->not_empty;
        uint32_t key = __atomic_load_n(&ec->epoch, __ATOMIC_ACQUIRE);
        __atomic_fetch_add(&ec->waiters, 1, __ATOMIC_SEQ_CST);
        int done = try_dequeue(r, &value);
        if (!done) futex_wait(&ec->epoch, key);
        __atomic_fetch_sub(&ec->waiters, 1, __ATOMIC_RELAXED);
        if (done) break;
    }
    eventcount_notify(&r->not_full);
    return value;
}

static vyukov_ring_t *ring_create(void) {
    vyukov_ring_t *r = aligned_alloc(64, sizeof(vyukov_ring_t));
    if (r == NULL) return NULL;
    r->enqueue_pos = r->dequeue_pos = 0;
    r->not_empty = r->not_full = (eventcount_t){0, 0};
    for (uint64_t i = 0; i < SLOTS; i++) r->cells[i].seq = i;
    return r;
}

typedef struct {
    vyukov_ring_t *ring;
    int64_t count;  // values this thread puts (0 .. count-1) or gets
    int slot;       // CPU slot to pin to, or -1
    uint64_t sum;   // a consumer's sum of what it got
} side_t;

static void *producer(void *arg) {
    side_t *s = arg;
    bench_cpu_set_t saved;
    if (s->slot >= 0) bench_pin_thread(s->slot, &saved);
    for (int64_t i = 0; i < s->count; i++) put(s->ring, (uint64_t)i);
    return NULL;
}

static void *consumer(void *arg) {
    side_t *s = arg;
    bench_cpu_set_t saved;
    if (s->slot >= 0) bench_pin_thread(s->slot, &saved);
    uint64_t sum = 0;
    for (int64_t i = 0; i < s->count; i++) sum += get(s->ring);
    s->sum = sum;
    return NULL;
}

double bench_vyukov_ring(int producers, int consumers, int64_t messages) {
    if (producers < 1 || consumers < 1 || producers > MAX_SIDE || consumers > MAX_SIDE ||
        messages % producers != 0 || messages % consumers != 0)
        return -1;
    vyukov_ring_t *r = ring_create();
    if (r == NULL) return -1;
    // One producer and one consumer: pinned apart as the other SPSC contests are.
    int pin = producers == 1 && consumers == 1;
    side_t sides[2 * MAX_SIDE];
    pthread_t threads[2 * MAX_SIDE];
    int n = producers + consumers;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        int is_producer = i < producers;
        sides[i] = (side_t){r, messages / (is_producer ? producers : consumers), pin ? (is_producer ? 0 : 1) : -1, 0};
        pthread_create(&threads[i], NULL, is_producer ? producer : consumer, &sides[i]);
    }
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        sum += sides[i].sum;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    free(r);
    double seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    uint64_t k = (uint64_t)(messages / producers);
    return sum == (uint64_t)producers * (k * (k - 1) / 2) ? (double)messages / seconds : -1;
}

void bench_vyukov_put_get(int64_t iterations) {
    vyukov_ring_t *r = ring_create();
    if (r == NULL) return;
    uint64_t sum = 0;
    for (int64_t i = 0; i < iterations; i++) {
        put(r, (uint64_t)i);
        sum += get(r);
    }
    free(r);
    __asm__ volatile("" : : "r"(sum));  // keeps the loop: the sum is otherwise unused
}
