// The io_uring event loop: the ring, timeouts and IO, sockets (loop/).
// Part of CMultiprocessing.h (see it for the rules every header here follows).
#ifndef MP_LOOP_H
#define MP_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "mp_sync.h"

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - io_uring

/// Whether io_uring works here, and whether it has IORING_OP_FUTEX_WAIT (bit 1).
/// 0: no io_uring; 1: io_uring; 3: io_uring with futex operations.
int32_t mp_uring_probe(void);

// MARK: - Event loop ring (uring.c, uring_ops.c)

/// One io_uring, its wake-up eventfd and the per-slot storage that timeouts need until they are
/// submitted. Opaque: only the loop's own thread touches the ring; any thread may call
/// mp_loop_wake.
typedef struct mp_loop mp_loop_t;

/// One completion, copied out of the ring.
typedef struct mp_completion {
    uint64_t user_data;
    int32_t result;
    uint32_t flags;
} mp_completion_t;

/// A TCP address, IPv4 or IPv6: a value that Swift keeps in its frame, where an allocated buffer
/// cost a connect about 370 instructions (its malloc and free).
typedef struct mp_socket_address {
    uint32_t length;   // of the sockaddr in `bytes`
    uint32_t bytes[7]; // a struct sockaddr_in or sockaddr_in6 (28 bytes, 4-aligned)
} mp_socket_address_t;

/// user_data the loop reserves: operations use their object's address, which is never 0 or 1.
/// Completions of linked timeouts and cancel requests carry MP_LOOP_IGNORED and are dropped.
#define MP_LOOP_IGNORED 0u
/// The eventfd read that wakes a parked loop.
#define MP_LOOP_WAKE 1u
/// Bit 0 of mp_loop_features: IORING_OP_FUTEX_WAIT works (kernel >= 6.7).
#define MP_LOOP_FUTEX 1u

/// Creates a ring with `entries` submission slots (completion queue 4x that) and arms the wake-up
/// read. NULL and `*error` (an errno) on failure.
mp_loop_t *_Nullable mp_loop_create(uint32_t entries, int32_t *_Nonnull error);
/// On the thread that will drive the ring, before anything else: it becomes the ring's single
/// issuer where the kernel supports that. 0 or -errno.
int32_t mp_loop_start(mp_loop_t *_Nonnull loop);
/// Closes the ring (the kernel cancels what is still in flight) and the eventfd.
void mp_loop_destroy(mp_loop_t *_Nonnull loop);
/// MP_LOOP_FUTEX when the kernel runs futex waits in the ring.
uint32_t mp_loop_features(const mp_loop_t *_Nonnull loop);
/// Submits the queued entries; when `wait`, sleeps until at least one completion is there.
/// 0, or -errno for a broken ring (EINTR and a busy completion queue read as 0).
int32_t mp_loop_enter(mp_loop_t *_Nonnull loop, int wait);
/// Copies up to `max` completions into `out` and marks them seen; returns how many.
uint32_t mp_loop_reap(mp_loop_t *_Nonnull loop, mp_completion_t *_Nonnull out, uint32_t max);
/// The loop thread, before it sleeps (1, then it re-checks its inbox) and after (0).
void mp_loop_set_parked(mp_loop_t *_Nonnull loop, int parked);
/// Any thread, after queueing work for the loop: wakes it if it is parked (one eventfd write, by
/// whoever clears the parked flag first).
void mp_loop_wake(mp_loop_t *_Nonnull loop);
/// Re-arms the eventfd read after its completion (MP_LOOP_WAKE). 0 or -EBUSY (queue full).
int32_t mp_loop_arm_wake(mp_loop_t *_Nonnull loop);
/// The Swift object driving the ring on the calling thread (NULL off any loop thread). Written only
/// by mp_loop_set_current. Initial-exec TLS, read inline: every job a loop task enqueues and every
/// operation it submits asks whether it runs on its loop's thread.
extern __thread void *_Nullable mp_loop_owner __attribute__((tls_model("initial-exec")));
/// The Swift object driving the ring on the calling thread, or NULL off any loop thread.
static inline void *_Nullable mp_loop_current(void) { return mp_loop_owner; }
/// Whether a continuation's resume and its task's going on pass through the handoff lock: 1 where
/// this library was built with ThreadSanitizer, else 0 (see LoopOperation.swift's Handoff). A
/// constant, read without a call.
extern const int mp_handoff_locks;
/// Takes the handoff lock (a pthread mutex, which ThreadSanitizer observes).
void mp_handoff_lock(void);
/// Releases the handoff lock.
void mp_handoff_unlock(void);
void mp_loop_set_current(void *_Nullable owner);
/// What a cancellation handler added by mp_task_add_cancel_handler calls, with its `arg`.
typedef void (*mp_cancel_fn)(void *_Nonnull arg);
/// Sets the one function that cancellation handlers call (see task_cancel.c); before the first
/// mp_task_add_cancel_handler.
void mp_task_set_cancel_fn(mp_cancel_fn _Nonnull fn);
/// From a Swift async function: adds a cancellation handler to the current task, which calls the
/// cancel function with `arg` at once if the task is already cancelled, else on the thread that
/// cancels it. Returns the record for mp_task_remove_cancel_handler, which the same task must
/// call, after freeing any task allocation made in between.
void *_Nonnull mp_task_add_cancel_handler(void *_Nonnull arg);
/// Removes the handler; once it returns, it is not running and will not run.
void mp_task_remove_cancel_handler(void *_Nonnull record);
/// Before its continuation is resumed: has the task resumed through the serial executor whose two
/// words are `identity` and `implementation` (an `UnownedSerialExecutor`), instead of the generic
/// executor, whose enqueue looks the task's executor preference up under its status lock (about
/// 200 instructions per resume). Leaves the continuation as it is, and returns 0, unless it looks
/// as Swift's runtime made it: no flags (not throwing, switch not forced) and the generic executor
/// as its target. See task_cancel.c for the layout.
static inline int mp_continuation_resume_through(void *_Nonnull task, uintptr_t identity, uintptr_t implementation) {
    // AsyncTask::ResumeContext, the ContinuationAsyncContext of the task's pending continuation;
    // the compiler reads it there too, inline, to store a resume's value through NormalResult.
    unsigned char *context = *(unsigned char *const *)((const unsigned char *)task + 0x40);
    if (context == 0) return 0;
    uint64_t *flags = (uint64_t *)(context + 0x10);
    uintptr_t *executor = (uintptr_t *)(context + 0x30); // ResumeToExecutor, after NormalResult (0x28)
    if (*flags != 0 || executor[0] != 0 || executor[1] != 0) return 0;
    executor[0] = identity;
    executor[1] = implementation;
    return 1;
}

// Each of these queues one operation (two for a deadline) and returns 0, or -EBUSY when the
// submission queue is full even after a flush (reap completions, then try again). Buffers, paths
// and addresses must stay valid until the operation's completion. Deadlines are absolute
// CLOCK_MONOTONIC nanoseconds; INT64_MAX means none.

/// IORING_OP_TIMEOUT, absolute: completes with -ETIME at `deadline_ns`, -ECANCELED if cancelled.
int32_t mp_loop_timeout(mp_loop_t *_Nonnull loop, uint64_t user_data, int64_t deadline_ns);
/// IORING_OP_ASYNC_CANCEL of the operation `target` (its completion is MP_LOOP_IGNORED).
int32_t mp_loop_cancel(mp_loop_t *_Nonnull loop, uint64_t target);
/// Cancels every operation in flight (shutting down).
int32_t mp_loop_cancel_all(mp_loop_t *_Nonnull loop);
/// IORING_OP_FUTEX_WAIT: sleeps while `*word == expected` (the kernel compares). Completes with 0
/// when woken, -EAGAIN if the word already differs, -ECANCELED when cancelled or when the linked
/// deadline passes first. `shared`: 0 only for a word no other process maps.
int32_t mp_loop_futex_wait(mp_loop_t *_Nonnull loop, uint64_t user_data, uint32_t *_Nonnull word,
                           uint32_t expected, int shared, int64_t deadline_ns);
/// read(2)/pread(2): `offset` -1 reads at (and advances) the file position.
int32_t mp_loop_read(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd, void *_Nonnull buffer,
                     uint32_t length, int64_t offset);
int32_t mp_loop_write(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd,
                      const void *_Nonnull buffer, uint32_t length, int64_t offset);
/// openat(AT_FDCWD, path, flags | O_CLOEXEC, mode): completes with the descriptor.
int32_t mp_loop_open(mp_loop_t *_Nonnull loop, uint64_t user_data, const char *_Nonnull path,
                     int32_t flags, uint32_t mode);
int32_t mp_loop_close(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd);
int32_t mp_loop_fsync(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd, int datasync);
/// accept4(SOCK_CLOEXEC): completes with the connection's descriptor.
int32_t mp_loop_accept(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd);
/// connect(2) on a socket. The address is copied: the caller's may go once this returns. With
/// mp_loop_offload_connects on, a connect queued behind another connect of the same submission is
/// made by an io-wq worker (IOSQE_ASYNC), beside the loop. -ENOMEM if the copies' room cannot be
/// made (at a loop's first connect).
int32_t mp_loop_connect(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd,
                        const mp_socket_address_t *_Nonnull address);
/// Whether connects queued together go to io-wq (worth it with more than one CPU to
/// run the workers on); off at creation.
void mp_loop_offload_connects(mp_loop_t *_Nonnull loop, int on);
/// send(MSG_NOSIGNAL): a closed peer is -EPIPE, never SIGPIPE.
int32_t mp_loop_send(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd,
                     const void *_Nonnull buffer, uint32_t length);
int32_t mp_loop_recv(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd, void *_Nonnull buffer,
                     uint32_t length);

// MARK: - Provided receive buffers (uring_recv_buffers.c)

/// The loop's receive buffers: how many at most (handed to the kernel as receives need them, see
/// uring_recv_buffers.c), and the size of each (the most a selected receive takes).
#define MP_RECV_BUFFERS 256u
#define MP_RECV_BUFFER_SIZE 4096u
/// The completion flag that says a receive took one of the loop's buffers (IORING_CQE_F_BUFFER).
#define MP_LOOP_CQE_BUFFER 1u

/// A receive of up to `length` bytes (at most MP_RECV_BUFFER_SIZE) into a buffer the kernel picks
/// from the loop's ring when data arrives. The completion names the buffer in its flags: read it
/// with mp_loop_recv_buffer, then give it back with mp_loop_recv_release, on the loop's thread,
/// before the next turn. -EOPNOTSUPP where the kernel has no buffer rings; a completion of -ENOBUFS
/// when every buffer is taken (then queue a plain mp_loop_recv). Loop thread only.
int32_t mp_loop_recv_selected(mp_loop_t *_Nonnull loop, uint64_t user_data, int32_t fd, uint32_t length);
/// The buffer a completion with `cqe_flags` filled, or NULL if it took none.
const uint8_t *_Nullable mp_loop_recv_buffer(const mp_loop_t *_Nonnull loop, uint32_t cqe_flags);
/// Gives the buffer a completion took back to the kernel (nothing if it took none). Loop thread only.
void mp_loop_recv_release(mp_loop_t *_Nonnull loop, uint32_t cqe_flags);

// MARK: - Sockets (uring_net.c)

/// Resolves `host` (an IPv4 or IPv6 literal; a name too unless `numeric_only`) and `port` into
/// `*address`. 0, or a getaddrinfo error (EAI_*, negative; EAI_FAMILY for an address that is
/// neither IPv4 nor IPv6).
int32_t mp_resolve(const char *_Nonnull host, uint16_t port, int numeric_only,
                   mp_socket_address_t *_Nonnull address);
/// The text of a getaddrinfo error.
const char *_Nonnull mp_resolve_error(int32_t code);
/// A TCP socket (close-on-exec) bound to `address` with SO_REUSEADDR, listening, with TCP_NODELAY
/// (which the sockets it accepts inherit). fd or -errno.
int32_t mp_tcp_listen(const mp_socket_address_t *_Nonnull address, int32_t backlog);
/// An unconnected TCP socket (close-on-exec) of `address`'s family. fd or -errno.
int32_t mp_tcp_socket(const mp_socket_address_t *_Nonnull address);
/// Sets TCP_NODELAY (small writes leave at once). 0 or -errno.
int32_t mp_tcp_nodelay(int32_t fd);
/// As much of `length` bytes as the socket takes now, without waiting (MSG_DONTWAIT, no SIGPIPE):
/// the bytes sent, or -errno (-EAGAIN: none fit).
int32_t mp_tcp_send_now(int32_t fd, const void *_Nonnull buffer, uint32_t length);
/// The local (`peer` 0) or remote port of a socket, or -errno.
int32_t mp_socket_port(int32_t fd, int peer);
/// close(2). 0 or -errno.
int32_t mp_close(int32_t fd);

#ifdef __cplusplus
}
#endif

#endif
