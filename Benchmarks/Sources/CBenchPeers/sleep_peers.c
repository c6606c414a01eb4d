// Sleep peers for the sleep suite: a raw io_uring timeout (the floor the engine's async sleep is
// measured against) and clock_nanosleep. Each writes the overshoot of `samples` sleeps of
// `duration_ns` into `overshoot_ns` (measured on CLOCK_MONOTONIC from just before the request).
#include "CBenchPeers.h"

#include <liburing.h>
#include <string.h>
#include <time.h>

static int64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int bench_uring_timeout_overshoot(int64_t duration_ns, int64_t samples, int64_t *overshoot_ns) {
    struct io_uring ring;
    int rc = io_uring_queue_init(8, &ring, 0);
    if (rc < 0) return rc;
    for (int64_t i = 0; i < samples; i++) {
        int64_t start = monotonic_ns();
        struct __kernel_timespec ts = {.tv_sec = duration_ns / 1000000000, .tv_nsec = duration_ns % 1000000000};
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_timeout(sqe, &ts, 0, 0);
        io_uring_submit(&ring);
        struct io_uring_cqe *cqe;
        rc = io_uring_wait_cqe(&ring, &cqe);
        if (rc < 0) break;
        io_uring_cqe_seen(&ring, cqe);
        overshoot_ns[i] = monotonic_ns() - start - duration_ns;
    }
    io_uring_queue_exit(&ring);
    return rc < 0 ? rc : 0;
}

void bench_nanosleep_overshoot(int64_t duration_ns, int64_t samples, int64_t *overshoot_ns) {
    struct timespec ts = {.tv_sec = duration_ns / 1000000000, .tv_nsec = duration_ns % 1000000000};
    for (int64_t i = 0; i < samples; i++) {
        int64_t start = monotonic_ns();
        while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL) != 0) {}
        overshoot_ns[i] = monotonic_ns() - start - duration_ns;
    }
}
