// io_uring probe: whether the kernel offers io_uring and its futex operations (kernel >= 6.7).
// The event loop built on it arrives with the coroutine work; this is where it will live.
#define _GNU_SOURCE
#include "internal.h"

#include <liburing.h>
#include <stdlib.h>

#ifndef IORING_OP_FUTEX_WAIT
#define IORING_OP_FUTEX_WAIT 51 /* linux/io_uring.h of 6.7; liburing 2.3's headers predate it */
#endif

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
