// The event loop's ring: creation, entering the kernel, reaping completions, waking a parked loop.
//
// Invariants:
// - The ring is created on any thread and, where the kernel allows it, is single-issuer: it is
//   created disabled and the loop's thread enables it (mp_loop_start) before it submits anything.
// - Only the loop's thread touches `ring` (it may be IORING_SETUP_SINGLE_ISSUER); any thread may
//   call mp_loop_wake, which touches only `parked` and the eventfd.
// - A read of `event_fd` is always in flight while the loop runs (user_data MP_LOOP_WAKE); the
//   loop re-arms it at each completion. The eventfd is blocking: io_uring then polls it instead of
//   completing at once with -EAGAIN.
// - Waking is a Dekker handshake between an enqueuer and the parking loop. The loop stores
//   parked = 1 (seq_cst), then re-checks its inbox, then sleeps in io_uring_enter. An enqueuer
//   pushes to the inbox, then (full barrier) reads parked and, if it swaps it from 1 to 0, writes
//   the eventfd. Either the loop sees the new work, or the enqueuer sees parked == 1; the swap
//   makes one eventfd write per sleep, however many threads enqueue.
// - `times` holds one timespec per submission slot: the kernel reads a timeout's timespec when
//   the entry is submitted, and a slot is reused only after that. `addresses` likewise holds a
//   connect's address: the kernel copies it when the entry is submitted (IORING_FEAT_SUBMIT_STABLE,
//   as old as IORING_OP_CONNECT: 5.5), inline or, for an entry it defers or hands to io-wq, in the
//   request's prep before io_uring_enter returns.
// - Under valgrind (the benchmark counts instructions with callgrind), a parked loop waits in
//   slices of 1 ms and yields between them: valgrind 3.19 runs one thread at a time and does not
//   let go of its lock around io_uring_enter, so a loop asleep in the kernel would stop the
//   thread that was about to wake it. Natively the check costs nothing and changes nothing.
#define _GNU_SOURCE
#include "internal.h"

#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uring_internal.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

_Static_assert(sizeof(mp_completion_t) == 16, "mp_completion_t is copied by Swift");

int32_t mp_uring_probe(void) {
    struct io_uring ring;
    if (io_uring_queue_init(2, &ring, 0) != 0) return 0;
    int32_t result = 1;
    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (probe != NULL) {
        if (probe->last_op >= IORING_OP_FUTEX_WAIT &&
            io_uring_opcode_supported(probe, IORING_OP_FUTEX_WAIT))
            result |= 2;
        io_uring_free_probe(probe);
    }
    io_uring_queue_exit(&ring);
    return result;
}

#ifdef MP_TSAN
const int mp_handoff_locks = 1;
#else
const int mp_handoff_locks = 0;
#endif

static pthread_mutex_t handoff = PTHREAD_MUTEX_INITIALIZER;
void mp_handoff_lock(void) { pthread_mutex_lock(&handoff); }
void mp_handoff_unlock(void) { pthread_mutex_unlock(&handoff); }

__thread void *mp_loop_owner __attribute__((tls_model("initial-exec"))); // mp_loop.h's mp_loop_current

void mp_loop_set_current(void *owner) { mp_loop_owner = owner; }

/// Tries the cheapest setup first: single issuer with deferred task work (completions are posted
/// only when the loop enters the kernel, no interrupts of the loop thread), then older kernels'.
/// TASKRUN_FLAG has the kernel raise IORING_SQ_TASKRUN when completions wait for the loop to enter,
/// so a turn with nothing to submit skips the system call when the flag is down (mp_loop_enter).
/// Never SQPOLL or SQE128: mp_loop_sqe takes submission entries by hand on that understanding.
static int init_ring(struct io_uring *ring, uint32_t entries, int *disabled, int *taskrun_flag) {
    static const uint32_t attempts[] = {
        // Disabled until mp_loop_start: the single issuer is the thread that enables the ring.
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL |
            IORING_SETUP_R_DISABLED | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_TASKRUN_FLAG,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        struct io_uring_params p = {0};
        // A completion queue of 4 per submission slot. More completions than that in one turn (10 000
        // sleeps ending together) wait in the kernel's overflow list (IORING_FEAT_NODROP, as old as
        // CQSIZE: 5.5) until mp_loop_reap has made room (liburing flushes it when the queue runs
        // dry). A larger queue cost every loop more than it saved: 16 per slot made creating and
        // destroying a loop about 100 µs slower (the kernel allocates, maps and frees 256 KiB).
        p.flags = attempts[i] | IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;
        p.cq_entries = entries * 4;
        rc = io_uring_queue_init_params(entries, ring, &p);
        if (rc == 0) {
            *disabled = (attempts[i] & IORING_SETUP_R_DISABLED) != 0;
            *taskrun_flag = (attempts[i] & IORING_SETUP_TASKRUN_FLAG) != 0;
            return 0;
        }
        if (rc != -EINVAL) return rc;
    }
    return rc;
}

mp_loop_t *mp_loop_create(uint32_t entries, int32_t *error) {
    mp_loop_t *l = calloc(1, sizeof *l);
    if (l == NULL) {
        *error = ENOMEM;
        return NULL;
    }
    int rc = init_ring(&l->ring, entries, &l->disabled, &l->taskrun_flag);
    if (rc != 0) {
        free(l);
        *error = -rc;
        return NULL;
    }
    l->sq_entries = l->ring.sq.ring_entries;
    l->under_valgrind = RUNNING_ON_VALGRIND != 0;
    l->times = calloc(l->sq_entries, sizeof *l->times);
    l->event_fd = eventfd(0, EFD_CLOEXEC);
    if (l->times == NULL || l->event_fd < 0) {
        *error = l->times == NULL ? ENOMEM : errno;
        if (l->event_fd >= 0) close(l->event_fd);
        free(l->times);
        io_uring_queue_exit(&l->ring);
        free(l);
        return NULL;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&l->ring);
    if (probe != NULL) {
        if (probe->last_op >= IORING_OP_FUTEX_WAIT && io_uring_opcode_supported(probe, IORING_OP_FUTEX_WAIT))
            l->features |= MP_LOOP_FUTEX;
        io_uring_free_probe(probe);
    }
    mp_loop_arm_wake(l);
    return l;
}

void mp_loop_destroy(mp_loop_t *l) {
    io_uring_queue_exit(&l->ring);
    mp_loop_recv_buffers_free(l);
    close(l->event_fd);
    free(l->times);
    free(l->addresses);
    free(l);
}

uint32_t mp_loop_features(const mp_loop_t *l) { return l->features; }

int32_t mp_loop_start(mp_loop_t *l) {
    if (!l->disabled) return 0;
    l->disabled = 0;
    // liburing 2.3 declares io_uring_enable_rings but does not export it: the raw call.
    long rc = syscall(__NR_io_uring_register, l->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return rc < 0 ? -errno : 0;
}

int32_t mp_loop_enter(mp_loop_t *l, int wait) {
    // A busy loop's turn with nothing to submit and no completion waiting for it to enter (the
    // kernel raises IORING_SQ_TASKRUN with TASKRUN_FLAG, CQ_OVERFLOW when completions spilled) has
    // nothing to gain from the kernel. A flag raised just after this read is seen at the next turn,
    // and a loop that parks always enters (wait), so no completion is left behind.
    if (!wait && l->taskrun_flag && io_uring_sq_ready(&l->ring) == 0 &&
        (MP_LOAD(l->ring.sq.kflags, MP_RELAXED) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) == 0)
        return 0;
    // submit_and_get_events enters with GETEVENTS even with nothing to submit: with deferred task
    // work, that is what posts finished operations to the completion queue.
    l->connects_queued = 0; // submitted below (uring_ops.c's mp_loop_connect)
    int rc;
    if (wait && l->under_valgrind) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec slice = {.tv_sec = 0, .tv_nsec = 1000000};
        rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &slice, NULL);
        sched_yield();  // valgrind hands its lock to another thread here
    } else {
        rc = wait ? io_uring_submit_and_wait(&l->ring, 1) : io_uring_submit_and_get_events(&l->ring);
    }
    if (rc >= 0 || rc == -EINTR || rc == -EAGAIN || rc == -EBUSY || rc == -ETIME) return 0;
    return rc;
}

uint32_t mp_loop_reap(mp_loop_t *l, mp_completion_t *out, uint32_t max) {
    struct io_uring_cqe *cqes[256];
    if (max > 256) max = 256;
    unsigned n = io_uring_peek_batch_cqe(&l->ring, cqes, max);
    for (unsigned i = 0; i < n; i++) {
        out[i].user_data = cqes[i]->user_data;
        out[i].result = cqes[i]->res;
        out[i].flags = cqes[i]->flags;
        if (cqes[i]->res == -ENOBUFS) mp_loop_recv_ran_out(l); // before the caller queues again
    }
    io_uring_cq_advance(&l->ring, n);
    return n;
}

void mp_loop_set_parked(mp_loop_t *l, int parked) {
    // seq_cst: the loop's re-check of its inbox must not pass this store (see the header).
    MP_STORE(&l->parked, parked ? 1u : 0u, MP_SEQ_CST);
}

void mp_loop_wake(mp_loop_t *l) {
    mp_full_barrier(); // the caller's push to the inbox before the read of `parked`
    if (MP_LOAD(&l->parked, MP_RELAXED) == 0) return;
    if (MP_SWAP(&l->parked, 0u, MP_ACQ_REL) == 0) return; // another thread is waking it
    uint64_t one = 1;
    while (write(l->event_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
}

int32_t mp_loop_arm_wake(mp_loop_t *l) {
    struct io_uring_sqe *sqe = mp_loop_sqe(l, 1);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_read(sqe, l->event_fd, &l->wake_value, sizeof l->wake_value, 0);
    io_uring_sqe_set_data64(sqe, MP_LOOP_WAKE);
    return 0;
}
