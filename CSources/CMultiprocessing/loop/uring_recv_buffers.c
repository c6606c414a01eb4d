// The loop's provided receive buffers: a ring of MP_RECV_BUFFERS buffers of MP_RECV_BUFFER_SIZE
// bytes registered with io_uring (IORING_REGISTER_PBUF_RING). A small receive is queued with
// IOSQE_BUFFER_SELECT and no buffer of its own: the kernel picks one only when data arrives, so a
// receive that waits holds no memory, and none is allocated per receive.
//
// Invariants:
// - Only the loop's thread touches the ring and its fields in struct mp_loop (set-up, queuing,
//   release): the buffer ring's tail is single-producer, and that producer is the loop.
// - A buffer belongs to the kernel from its add until the completion that names it
//   (IORING_CQE_F_BUFFER, id in the flags' high 16 bits), then to the loop until it has copied the
//   bytes out and added the buffer back (mp_loop_recv_release), in the same completion step.
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

/// Maps the ring and the buffers, registers them, and hands every buffer to the kernel.
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
    int mask = io_uring_buf_ring_mask(l->recv_count);
    for (unsigned i = 0; i < l->recv_count; i++)
        io_uring_buf_ring_add(l->recv_ring, l->recv_memory + (size_t)i * MP_RECV_BUFFER_SIZE, MP_RECV_BUFFER_SIZE,
                              (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(l->recv_ring, (int)l->recv_count); // publishes the tail (a release store)
    return 0;
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
    if (id >= l->recv_count) return NULL; // the kernel names only ids it was given
    return l->recv_memory + (size_t)id * MP_RECV_BUFFER_SIZE;
}

void mp_loop_recv_release(mp_loop_t *l, uint32_t cqe_flags) {
    if (l->recv_ring == NULL || !(cqe_flags & IORING_CQE_F_BUFFER)) return;
    unsigned id = cqe_flags >> IORING_CQE_BUFFER_SHIFT;
    if (id >= l->recv_count) return;
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

int32_t mp_testing_loop_recv_buffers(mp_loop_t *l, uint32_t count) {
    if (l->recv_state != 0 || count == 0 || count > MP_RECV_BUFFERS || (count & (count - 1)) != 0) return -EINVAL;
    l->recv_count = count;
    return 0;
}
