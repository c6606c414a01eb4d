// The event loop's ring, shared by uring.c (lifecycle) and uring_ops.c (operations).
#ifndef MP_URING_INTERNAL_H
#define MP_URING_INTERNAL_H

#include <liburing.h>

#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51 /* linux/io_uring.h of 6.7; liburing 2.3's headers predate it */
#endif

struct mp_loop {
    struct io_uring ring;
    struct __kernel_timespec *times; // one per submission slot (see uring.c)
    mp_socket_address_t *addresses;  // one per submission slot, made at the first connect (uring.c)
    unsigned sq_entries;
    int event_fd;
    uint32_t parked; // 1 while the loop sleeps or is about to; atomic
    uint32_t features;
    int disabled; // created with IORING_SETUP_R_DISABLED, not yet started
    int taskrun_flag; // created with IORING_SETUP_TASKRUN_FLAG (see mp_loop_enter)
    int under_valgrind; // waits in slices and yields (see mp_loop_enter)
    int offload_connects; // a connect queued behind another goes to io-wq (uring_ops.c)
    unsigned connects_queued; // connects in the submission being built; 0 once it is submitted
    uint64_t wake_value; // the eventfd read's buffer
    // The provided receive buffers (uring_recv_buffers.c, their owner): 0 not set up yet, 1 on,
    // -1 unavailable.
    int recv_state;
    unsigned recv_count; // buffers in the ring: MP_RECV_BUFFERS (a test may ask for fewer)
    unsigned recv_added; // buffers handed to the kernel so far: ids [0, recv_added), a prefix
    struct io_uring_buf_ring *recv_ring; // and the buffers after it, in one mapping
    unsigned char *recv_memory;
    size_t recv_bytes;
};

/// Unmaps the receive buffers, once the ring is gone (uring_recv_buffers.c).
void mp_loop_recv_buffers_free(struct mp_loop *l);
/// A completion said -ENOBUFS (every buffer handed out was taken): hands the kernel more of the
/// ring's buffers, if any are left (uring_recv_buffers.c). Loop thread only.
void mp_loop_recv_ran_out(struct mp_loop *l);

/// A free submission entry, flushing the queue to the kernel first if fewer than `need` are left
/// (a futex wait and its linked timeout must not be split across two submissions). NULL if the
/// queue is still full: the completion queue is backed up and the loop must reap first.
///
/// By hand rather than io_uring_sq_space_left and io_uring_get_sqe, which check the room a second
/// time: the ring is set up without SQPOLL and SQE128 (init_ring), so the kernel moves `khead`
/// only inside this thread's io_uring_enter (a relaxed read, as liburing's) and an entry is 64 bytes.
static inline struct io_uring_sqe *mp_loop_sqe(struct mp_loop *l, unsigned need) {
    struct io_uring_sq *sq = &l->ring.sq;
    unsigned tail = sq->sqe_tail;
    if (__builtin_expect(tail + need - __atomic_load_n(sq->khead, __ATOMIC_RELAXED) > sq->ring_entries, 0)) {
        io_uring_submit(&l->ring);
        l->connects_queued = 0;
        if (io_uring_sq_space_left(&l->ring) < need) return NULL;
    }
    sq->sqe_tail = tail + 1;
    return &sq->sqes[tail & sq->ring_mask];
}

/// The timespec slot of `sqe`, filled with the absolute monotonic `deadline_ns`.
static inline struct __kernel_timespec *mp_loop_time(struct mp_loop *l, struct io_uring_sqe *sqe,
                                                     int64_t deadline_ns) {
    struct __kernel_timespec *ts = &l->times[sqe - l->ring.sq.sqes];
    if (deadline_ns < 0) deadline_ns = 0;
    ts->tv_sec = deadline_ns / 1000000000;
    ts->tv_nsec = deadline_ns % 1000000000;
    return ts;
}

#endif
