// The engine's ring driven from C: the same two-thread 8-byte contest as the reference ring, through
// the engine's put (its inline straight path, mp_queue_put where that does not apply, as Swift's
// Queue puts) and mp_queue_get_begin/get_end with nothing between them, so the table separates the
// ring's own cost (its locks, records and sleeper checks) from the Swift facade's.
//
// Invariants: one producer thread and one consumer thread; the queue lives in this process's heap
// (process-private futexes), is initialised before the consumer starts and freed after it is joined.
// The two threads are pinned apart (affinity.c); bench_engine_put_get runs both sides on one
// thread, in turn, for callgrind's instruction count.
#define _GNU_SOURCE
#include "CBenchPeers.h"

#include <CMultiprocessing.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING_BYTES (1u << 20)

/// A put as the engine's callers make it (Swift's Queue.send too): the inline straight path, and
/// the out-of-line mp_queue_put when it does not apply.
static inline mp_status_t put(mp_queue_view_t *q, uint64_t value) {
    mp_status_t status = mp_queue_put_straight(q, &value, sizeof value, INT64_MAX);
    return status == MP_BUSY ? mp_queue_put(q, &value, sizeof value, INT64_MAX) : status;
}

typedef struct {
    mp_queue_view_t *queue;
    int64_t messages;
    uint64_t sum;
    int failed;
} engine_job_t;

static void *engine_consumer(void *arg) {
    engine_job_t *job = arg;
    bench_cpu_set_t saved;
    bench_pin_thread(1, &saved);  // a thread of its own: it ends pinned
    // Read once: the job lives on the producer's stack, beside the value it stores on every put,
    // and a read of it per get pulled that line across on every message.
    mp_queue_view_t *queue = job->queue;
    int64_t messages = job->messages;
    uint64_t sum = 0;
    for (int64_t i = 0; i < messages; i++) {
        const void *payload = NULL;
        uint64_t length = 0, total = 0, value = 0;
        if (mp_queue_get_begin(queue, INT64_MAX, &payload, &length, &total) != MP_OK || length != 8) {
            job->failed = 1;
            mp_queue_shutdown(queue, 1); // the producer's put returns instead of waiting for room
            return NULL;
        }
        memcpy(&value, payload, sizeof value);
        mp_queue_get_end(queue);
        sum += value;
    }
    job->sum = sum;
    return NULL;
}

// A process-private queue of RING_BYTES in the heap, attached through `view`; NULL if out of memory.
static mp_queue_t *engine_queue_create(mp_queue_view_t *view) {
    // Page-aligned, as every region the library maps (a memfd): at a heap address the ring's stores
    // and the header's loads fell on page offsets that alias (4 KiB apart), and the row ran at about
    // half the speed (15 -> 28 M msg/s, `--probe engine-spsc`, AMD EPYC).
    mp_queue_t *header = aligned_alloc(4096, (mp_queue_size(RING_BYTES, 0) + 4095) / 4096 * 4096);
    if (header == NULL) return NULL;
    mp_queue_init(header, RING_BYTES, 0, 0, 0);
    // This process's bounds of the queue, as the Swift Channel keeps them.
    mp_queue_view_attach(view, header, mp_queue_size(RING_BYTES, 0), UINT64_MAX, 0);
    return header;
}

double bench_engine_spsc(int64_t messages) {
    // The view on cache lines of its own, as the Swift Channel's (not on this stack, whose loop
    // variables the producer writes on every put while the consumer reads the view on every get).
    mp_queue_view_t *q = aligned_alloc(64, (sizeof(mp_queue_view_t) + 63) / 64 * 64);
    if (q == NULL) return -1;
    mp_queue_t *header = engine_queue_create(q);
    if (header == NULL) {
        free(q);
        return -1;
    }
    engine_job_t job = {q, messages, 0, 0};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pthread_t thread;
    pthread_create(&thread, NULL, engine_consumer, &job);
    bench_cpu_set_t saved;
    bench_pin_thread(0, &saved);  // after the start: a new thread inherits its creator's CPUs
    int failed = 0;
    for (int64_t i = 0; i < messages && !failed; i++) {
        uint64_t value = (uint64_t)i;
        failed = put(q, value) != MP_OK;
    }
    pthread_join(thread, NULL);
    clock_gettime(CLOCK_MONOTONIC, &b);
    bench_unpin_thread(&saved);
    free(header);
    free(q);
    double seconds = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    int exact = !failed && !job.failed && job.sum == (uint64_t)messages * (uint64_t)(messages - 1) / 2;
    return exact ? (double)messages / seconds : -1;
}

int bench_engine_put_get(int64_t iterations) {
    mp_queue_view_t view;
    mp_queue_t *header = engine_queue_create(&view);
    if (header == NULL) return -1;
    uint64_t sum = 0;
    int failed = 0;
    for (int64_t i = 0; i < iterations && !failed; i++) {
        uint64_t value = (uint64_t)i;
        const void *payload = NULL;
        uint64_t length = 0, total = 0;
        failed = put(&view, value) != MP_OK ||
                 mp_queue_get_begin(&view, INT64_MAX, &payload, &length, &total) != MP_OK || length != 8;
        if (failed) break;
        memcpy(&value, payload, sizeof value);
        mp_queue_get_end(&view);
        sum += value;
    }
    free(header);
    return failed || sum != (uint64_t)iterations * (uint64_t)(iterations - 1) / 2 ? -1 : 0;
}
