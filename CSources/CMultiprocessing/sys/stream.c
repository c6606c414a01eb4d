// The byte streams under a Pipe's ends (a socket pair, or a pipe for a simplex Pipe): one read or
// write per call, for Connection's framing in Swift.
//
// Invariants:
// - A write never raises SIGPIPE: a socket sends with MSG_NOSIGNAL; a pipe's write runs with
//   SIGPIPE blocked in the calling thread, and a SIGPIPE that write raised (EPIPE, none pending
//   before) is taken from the thread's pending set before the mask is put back. So a closed
//   reader is EPIPE for the caller, whatever the program's disposition of SIGPIPE.
// - A read with a deadline never waits past it: it waits for readability with ppoll, then reads
//   without waiting (MSG_DONTWAIT, or RWF_NOWAIT for a pipe), since another process sharing the end
//   may take the bytes between the two; EAGAIN then waits again. A read without a deadline is one
//   plain read.
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

int64_t mp_stream_write(int32_t fd, const void *buffer, uint64_t length, int socket) {
    if (socket) {
        for (;;) {
            ssize_t n = send(fd, buffer, length, MSG_NOSIGNAL);
            if (n >= 0) return n;
            if (errno != EINTR) return -errno;
        }
    }
    sigset_t pipe_signal, saved, pending;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, &saved);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE) == 1;
    ssize_t n;
    int error = 0;
    do {
        n = write(fd, buffer, length);
    } while (n < 0 && (error = errno) == EINTR);
    if (n < 0 && error == EPIPE && !was_pending) {
        struct timespec now = {0, 0};
        while (sigtimedwait(&pipe_signal, NULL, &now) < 0 && errno == EINTR) continue; // ours: taken
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return n >= 0 ? n : -error;
}

/// One read that does not wait: MSG_DONTWAIT for a socket, RWF_NOWAIT for a pipe (a plain read
/// where the kernel does not take it, after ppoll said readable).
static ssize_t read_now(int32_t fd, void *buffer, uint64_t length, int socket) {
    if (socket) return recv(fd, buffer, length, MSG_DONTWAIT);
    struct iovec piece = {.iov_base = buffer, .iov_len = length};
    ssize_t n = preadv2(fd, &piece, 1, -1, RWF_NOWAIT);
    if (n < 0 && (errno == EOPNOTSUPP || errno == EINVAL)) return read(fd, buffer, length);
    return n;
}

int64_t mp_stream_read(int32_t fd, void *buffer, uint64_t length, int socket, int64_t deadline) {
    if (deadline == MP_FOREVER) {
        for (;;) {
            ssize_t n = read(fd, buffer, length);
            if (n >= 0) return n;
            if (errno != EINTR) return -errno;
        }
    }
    for (;;) {
        int32_t ready = mp_poll_readable(fd, deadline);
        if (ready < 0) return ready;
        if (ready == 0) return -ETIMEDOUT;
        ssize_t n = read_now(fd, buffer, length, socket);
        if (n >= 0) return n;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -errno;
        // Another reader of the end took what woke us: wait again (ppoll gives up at the deadline).
    }
}
