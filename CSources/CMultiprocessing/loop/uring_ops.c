// The event loop's operations: one submission entry each, filled for the kernel.
//
// Invariants:
// - Each operation's completion carries its user_data (the Swift object's address); helper
//   entries (linked timeouts, cancel requests) carry MP_LOOP_IGNORED, so that every operation has
//   exactly one completion the loop acts on.
// - Deadlines are absolute CLOCK_MONOTONIC (IORING_TIMEOUT_ABS, no clock flag): a timeout has no
//   timer slack (the kernel arms an hrtimer for the exact instant) and never stretches because
//   the loop submitted it late.
// - IORING_OP_FUTEX_WAIT is filled by hand (liburing 2.3 predates it), as io_uring/futex.c reads
//   it: addr = the word, addr2 = the expected value, addr3 = the wake mask, fd = futex2 flags;
//   len, op flags, buf_index and file_index must be 0. A word in shared memory must not be
//   FUTEX2_PRIVATE: a private futex is keyed by (mm, address) and would never meet a waker in
//   another process. Wakers use FUTEX_WAKE (futex.c), whose bitset matches any mask.
// - A connect runs where it is submitted, in the loop's io_uring_enter, unless the loop offloads
//   connects and another connect is queued before it in the same submission: it then carries
//   IOSQE_ASYNC, and an io-wq worker makes it (see mp_loop_connect).
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "uring_internal.h"

#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02 /* linux/futex.h of 6.7 */
#endif
#ifndef FUTEX2_PRIVATE
#define FUTEX2_PRIVATE 128 /* FUTEX_PRIVATE_FLAG */
#endif

/// An entry for one operation, or NULL (the caller returns -EBUSY).
static inline struct io_uring_sqe *one(mp_loop_t *l) { return mp_loop_sqe(l, 1); }

int32_t mp_loop_timeout(mp_loop_t *l, uint64_t user_data, int64_t deadline_ns) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_timeout(sqe, mp_loop_time(l, sqe, deadline_ns), 0, IORING_TIMEOUT_ABS);
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_cancel(mp_loop_t *l, uint64_t target) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_cancel64(sqe, target, 0);
    sqe->user_data = MP_LOOP_IGNORED;
    return 0;
}

int32_t mp_loop_cancel_all(mp_loop_t *l) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
    sqe->user_data = MP_LOOP_IGNORED;
    return 0;
}

int32_t mp_loop_futex_wait(mp_loop_t *l, uint64_t user_data, uint32_t *word, uint32_t expected, int shared,
                           int64_t deadline_ns) {
    int timed = deadline_ns != INT64_MAX;
    struct io_uring_sqe *sqe = mp_loop_sqe(l, timed ? 2 : 1);
    if (sqe == NULL) return -EBUSY;
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = IORING_OP_FUTEX_WAIT;
    sqe->fd = FUTEX2_SIZE_U32 | (shared ? 0 : FUTEX2_PRIVATE);
    sqe->addr = (uint64_t)(uintptr_t)word;
    sqe->off = expected; // `off` shares its bytes with addr2
    sqe->addr3 = FUTEX_BITSET_MATCH_ANY;
    sqe->user_data = user_data;
    if (timed) {
        sqe->flags |= IOSQE_IO_LINK;
        struct io_uring_sqe *timeout = io_uring_get_sqe(&l->ring); // room was checked above
        io_uring_prep_link_timeout(timeout, mp_loop_time(l, timeout, deadline_ns), IORING_TIMEOUT_ABS);
        timeout->user_data = MP_LOOP_IGNORED;
    }
    return 0;
}

int32_t mp_loop_read(mp_loop_t *l, uint64_t user_data, int32_t fd, void *buffer, uint32_t length,
                     int64_t offset) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_read(sqe, fd, buffer, length, (uint64_t)offset); // -1: the file position
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_write(mp_loop_t *l, uint64_t user_data, int32_t fd, const void *buffer, uint32_t length,
                      int64_t offset) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_write(sqe, fd, buffer, length, (uint64_t)offset);
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_open(mp_loop_t *l, uint64_t user_data, const char *path, int32_t flags, uint32_t mode) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_openat(sqe, AT_FDCWD, path, flags | O_CLOEXEC, mode);
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_close(mp_loop_t *l, uint64_t user_data, int32_t fd) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_close(sqe, fd);
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_fsync(mp_loop_t *l, uint64_t user_data, int32_t fd, int datasync) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_accept(mp_loop_t *l, uint64_t user_data, int32_t fd) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
    sqe->user_data = user_data;
    return 0;
}

void mp_loop_offload_connects(mp_loop_t *l, int on) { l->offload_connects = on; }

int32_t mp_loop_connect(mp_loop_t *l, uint64_t user_data, int32_t fd, const mp_socket_address_t *address) {
    // Made before an entry is taken: a taken entry is submitted, filled or not.
    if (l->addresses == NULL && (l->addresses = calloc(l->sq_entries, sizeof *l->addresses)) == NULL)
        return -ENOMEM;
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    mp_socket_address_t *copy = &l->addresses[sqe - l->ring.sq.sqes]; // read by the kernel at submission
    *copy = *address;
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)(void *)copy->bytes, copy->length);
    int batched = l->connects_queued++ > 0; // after one(), which may have flushed the queue
    // A loopback (or nearby) connect does its whole handshake inside the submitting call: the
    // SYN, the listener's side in softirq, the SYN-ACK and the ACK, about 15 µs of kernel work on
    // the loop's thread. Queued behind another connect, it goes to an io-wq worker, which makes it
    // on another CPU while the loop submits the rest (100 loopback round trips at once, 15
    // interleaved runs: medians 5.27 -> 4.69 ms, fastest 4.26 -> 3.49; 10 000 at once: 465 -> 390
    // ms). The first of a submission stays inline, as does a connect alone: the hand-off to a
    // worker would only add to its latency (one round trip after another: 90 -> 115 µs each).
    // The worker tries the connect without blocking and arms a poll if it is still in progress
    // (io-wq does so for a pollable file), so no worker waits on a slow peer.
    if (l->offload_connects && batched) sqe->flags |= IOSQE_ASYNC;
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_send(mp_loop_t *l, uint64_t user_data, int32_t fd, const void *buffer, uint32_t length) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_send(sqe, fd, buffer, length, MSG_NOSIGNAL);
    sqe->user_data = user_data;
    return 0;
}

int32_t mp_loop_recv(mp_loop_t *l, uint64_t user_data, int32_t fd, void *buffer, uint32_t length) {
    struct io_uring_sqe *sqe = one(l);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_recv(sqe, fd, buffer, length, 0);
    sqe->user_data = user_data;
    return 0;
}
