// The C reference SPSC ring of the queue suite (after rigtorp/SPSCQueue): what a plain cached-index
// ring moves between two threads, so the table shows what the engine's facade costs on top.
//
// Invariants: the producer alone writes `tail` and its cache of `head`; the consumer alone writes
// `head` and its cache of `tail`. A slot is published by the release store of `tail` and handed
// back by the release store of `head`; each side loads the other's index with acquire, and only
// when its cached copy says the ring is full (producer) or empty (consumer).
// The two threads are pinned apart (affinity.c); bench_reference_put_get runs both sides on one
// thread, in turn, for callgrind's instruction count.
#define _GNU_SOURCE
#include "CBenchPeers.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define SLOTS (1 << 16)

typedef struct {
    _Alignas(64) uint64_t tail;
    uint64_t head_cache;
    _Alignas(64) uint64_t head;
    uint64_t tail_cache;
    _Alignas(64) uint64_t slots[SLOTS];
} ring_t;

_Static_assert(__builtin_offsetof(ring_t, head) - __builtin_offsetof(ring_t, tail) >= 64,
               "head and tail a cache line apart");

typedef struct {
    ring_t *ring;
    int64_t messages;
    uint64_t sum;
} job_t;

// One value in, from the producer: waits (spinning) while the ring is full.
static inline void ring_push(ring_t *r, uint64_t *tail, uint64_t value) {
    while (*tail - r->head_cache == SLOTS) r->head_cache = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
    r->slots[*tail & (SLOTS - 1)] = value;
    __atomic_store_n(&r->tail, ++*tail, __ATOMIC_RELEASE);
}

// One value out, to the consumer: waits (spinning) while the ring is empty.
static inline uint64_t ring_pop(ring_t *r, uint64_t *head) {
    while (*head == r->tail_cache) r->tail_cache = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    uint64_t value = r->slots[*head & (SLOTS - 1)];
    __atomic_store_n(&r->head, ++*head, __ATOMIC_RELEASE);
    return value;
}

static ring_t *ring_create(void) {
    ring_t *r = aligned_alloc(64, sizeof(ring_t));
    if (r != NULL) r->tail = r->head = r->head_cache = r->tail_cache = 0;
    return r;
}

static void *consumer(void *arg) {
    job_t *job = arg;
    bench_cpu_set_t saved;
    bench_pin_thread(1, &saved);  // a thread of its own: it ends pinned
    uint64_t head = 0, sum = 0;
    for (int64_t i = 0; i < job->messages; i++) sum += ring_pop(job->ring, &head);
    job->sum = sum;
    return NULL;
}

double bench_reference_spsc(int64_t messages) {
    ring_t *r = ring_create();
    if (r == NULL) return -1;
    job_t job = {r, messages, 0};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_t thread;
    pthread_create(&thread, NULL, consumer, &job);
    bench_cpu_set_t saved;
    bench_pin_thread(0, &saved);  // after the start: a new thread inherits its creator's CPUs
    uint64_t tail = 0;
    for (int64_t i = 0; i < messages; i++) ring_push(r, &tail, (uint64_t)i);
    pthread_join(thread, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    bench_unpin_thread(&saved);
    free(r);
    double seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    return job.sum == (uint64_t)messages * (uint64_t)(messages - 1) / 2 ? (double)messages / seconds : -1;
}

void bench_reference_put_get(int64_t iterations) {
    ring_t *r = ring_create();
    if (r == NULL) return;
    uint64_t head = 0, tail = 0, sum = 0;
    for (int64_t i = 0; i < iterations; i++) {
        ring_push(r, &tail, (uint64_t)i);
        sum += ring_pop(r, &head);
    }
    free(r);
    __asm__ volatile("" : : "r"(sum));  // keeps the loop: the sum is otherwise unused
}
