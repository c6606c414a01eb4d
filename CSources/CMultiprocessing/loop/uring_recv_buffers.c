// The loop's provided receive buffers: a ring of MP_RECV_BUFFERS buffers of MP_RECV_BUFFER_SIZE
// bytes registered with io_uring (IORING_REGISTER_PBUF_RING). A small receive is queued with
// IOSQE_BUFFER_SELECT and no buffer of its own: the kernel picks one only when data arrives, so a
// receive that waits holds no memory, and none is allocated per receive.
//
// The kernel takes buffers in the order they were added (a FIFO ring), so every buffer in the ring
// gets used in turn and ends up resident, however few receives run at once: with all 256 handed
// out at the start, a loop's first 256 receives touched a page each (1 MiB), even on a single
// connection whose receives take one buffer at a time. The loop hands out MP_RECV_BUFFERS_FIRST at
// the start and doubles that each time a receive finds them all taken (its completion says
// -ENOBUFS; it then falls back to a buffer of its own, as before), up to the ring's size: the
// resident buffers follow the most that were ever taken at once. (100 loopback round trips at
// once: task memory 1.26 -> 1.13 MiB, no change in time, 15 interleaved runs.)
//
// Invariants:
// - Only the loop's thread touches the ring and its fields in struct mp_loop (set-up, queuing,
//   release): the buffer ring's tail is single-producer, and that producer is the loop.
// - A buffer belongs to the kernel from its add until the completion that names it
//   (IORING_CQE_F_BUFFER, id in the flags' high 16 bits), then to the loop until it has copied the
//   bytes out and added the buffer back (mp_loop_recv_release), in the same completion step.
// - Buffers [0, recv_added) are handed out, recv_added only grows (mp_loop_recv_ran_out), and the
//   ring never holds more entries than that, so it never overflows.
// - Set up at the first small receive; a kernel without buffer rings (before 5.19) or a refused
//   registration leaves the ring off for good (recv_state < 0), and callers queue plain receives.
// - With every buffer taken, a selected receive completes with -ENOBUFS and takes none: the caller
//   queues a plain receive instead.
#define _GNU_SOURCE
#include "internal.h"
#include "uring_internal.h"

#include <errno.h>
#include <sys/mman.h>

_Static_assert((MP_RECV_BUFFERS & (MP_RECV_BUFFERS - 1)) == 0, "a buffer ring's size is a power of two");
_Static_assert(MP_RECV_BUFFERS <= 32768, "buffer ids are 16 bits; the kernel caps a ring at 32768");
_Static_assert(MP_LOOP_CQE_BUFFER == IORING_CQE_F_BUFFER, "Swift tests the flag before calling in");
_Static_assert(MP_RECV_BUFFER_SIZE % 64 == 0, "buffers start on cache lines");

/// The buffer group of the loop's receive buffers (a loop has one ring, so one group).
#define RECV_GROUP 0
/// Buffers handed out at the start (64 KiB).
#define MP_RECV_BUFFERS_FIRST 16u

/// Hands the kernel buffers [from, to) (ids as their index).
static void hand_out(mp_loop_t *l, unsigned from, unsigned to) {
    int mask = io_uring_buf_ring_mask(l->recv_count);
    for (unsigned i = from; i < to; i++)
        io_uring_buf_ring_add(l->recv_ring, l->recv_memory + (size_t)i * MP_RECV_BUFFER_SIZE, MP_RECV_BUFFER_SIZE,
                              (unsigned short)i, mask, (int)(i - from));
    io_uring_buf_ring_advance(l->recv_ring, (int)(to - from)); // publishes the tail (a release store)
    l->recv_added = to;
}

/// Maps the ring and the buffers (untouched pages cost nothing), registers them, and hands the
/// first MP_RECV_BUFFERS_FIRST to the kernel.
static int set_up(mp_loop_t *l) {
    if (l->recv_count == 0) l->recv_count = MP_RECV_BUFFERS;
    size_t ring_bytes = MP_RECV_BUFFERS * sizeof(struct io_uring_buf);
    size_t bytes = ring_bytes + (size_t)MP_RECV_BUFFERS * MP_RECV_BUFFER_SIZE;
    void *memory = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return -errno;
    struct io_uring_buf_reg reg = {0};
    reg.ring_addr = (uint64_t)(uintptr_t)memory; // page-aligned, as the kernel requires
    reg.ring_entries = l->recv_count;
    reg.bgid = RECV_GROUP;
    int rc = io_uring_register_buf_ring(&l->ring, &reg, 0);
    if (rc < 0) {
        munmap(memory, bytes);
        return rc;
    }
    l->recv_ring = memory;
    l->recv_memory = (unsigned char *)memory + ring_bytes;
    l->recv_bytes = bytes;
    io_uring_buf_ring_init(l->recv_ring);
    hand_out(l, 0, l->recv_count < MP_RECV_BUFFERS_FIRST ? l->recv_count : MP_RECV_BUFFERS_FIRST);
    return 0;
}

void mp_loop_recv_ran_out(mp_loop_t *l) {
    if (l->recv_ring == NULL || l->recv_added >= l->recv_count) return;
    unsigned to = l->recv_added * 2 < l->recv_count ? l->recv_added * 2 : l->recv_count;
    hand_out(l, l->recv_added, to);
}

int32_t mp_loop_recv_selected(mp_loop_t *l, uint64_t user_data, int32_t fd, uint32_t length) {
    if (l->recv_state == 0) l->recv_state = set_up(l) == 0 ? 1 : -1;
    if (l->recv_state < 0) return -EOPNOTSUPP;
    struct io_uring_sqe *sqe = mp_loop_sqe(l, 1);
    if (sqe == NULL) return -EBUSY;
    if (length > MP_RECV_BUFFER_SIZE) length = MP_RECV_BUFFER_SIZE;
    io_uring_prep_recv(sqe, fd, NULL, length, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RECV_GROUP;
    sqe->user_data = user_data;
    return 0;
}

const uint8_t *mp_loop_recv_buffer(const mp_loop_t *l, uint32_t cqe_flags) {
    if (l->recv_ring == NULL || !(cqe_flags & IORING_CQE_F_BUFFER)) return NULL;
    unsigned id = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
    if (id >= l->recv_added) return NULL; // the kernel names only ids it was given
    return l->recv_memory + (size_t)id * MP_RECV_BUFFER_SIZE;
}

void mp_loop_recv_release(mp_loop_t *l, uint32_t cqe_flags) {
    if (l->recv_ring == NULL || !(cqe_flags & IORING_CQE_F_BUFFER)) return;
    unsigned id = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
    if (id >= l->recv_added) return;
    io_uring_buf_ring_add(l->recv_ring, l->recv_memory + (size_t)id * MP_RECV_BUFFER_SIZE, MP_RECV_BUFFER_SIZE,
                          (unsigned short)id, io_uring_buf_ring_mask(l->recv_count), 0);
    io_uring_buf_ring_advance(l->recv_ring, 1);
}

void mp_loop_recv_buffers_free(mp_loop_t *l) {
    if (l->recv_ring == NULL) return;
    // After io_uring_queue_exit: the ring is gone, so nothing can write into the buffers.
    munmap(l->recv_ring, l->recv_bytes);
    l->recv_ring = NULL;
}

uint32_t mp_testing_loop_recv_buffers_out(const mp_loop_t *l) { return l->recv_added; }

int32_t mp_testing_loop_recv_buffers(mp_loop_t *l, uint32_t count) {
    if (l->recv_state != 0 || count == 0 || count > MP_RECV_BUFFERS || (count & (count - 1)) != 0) return -EINVAL;
    l->recv_count = count;
    return 0;
}
