// A process that forks on request: the forkserver (a clean image started by exec, one per client
// process) and a process pool's zygote (forked once, on the caller's thread, before the pool starts
// any thread). Both run this file's loop; the client side is mp_server_await_hello/mp_server_fork.
//
// Invariants:
// - The server is single-threaded and, between requests, runs only this loop: no Swift code runs
//   and no lock is held when it forks, so a child inherits no held lock. That is why it exists: a
//   child forked from a process whose other threads hold a Swift runtime lock may wait for that lock
//   forever. The forkserver refuses to serve if it was started with more than one thread.
// - A child is the *client's* child (clone with CLONE_PARENT): the client waits for it, reaps it and
//   reads its status like any child of its own; the server never reaps. CLONE_PIDFD gives the server
//   a pidfd before anyone can reap the child; the client receives it with the reply, so its handle
//   names that child for good even if the pid is recycled.
// - A child runs nothing before the client has its pid: it waits on a "go" socket whose only
//   writable end travels to the client with the reply; the client writes the go byte once it has
//   read that reply. If the reply never reaches the client (the server died before sending it, the
//   client died or gave up waiting), every writable end is closed unwritten: the child reads EOF and
//   exits, so the client never has a child it does not know about. A server that dies after its
//   reply no longer matters: the child hears from the client (when the server wrote the go itself,
//   a forkserver killed between the two left a child the client knew, which exited 1 unrun).
// - A reply the client never reads names a child that is the client's and never runs: whoever
//   ends the connection first reads what is left (mp_server_drain), kills and reaps those children,
//   so none stays a zombie of the client. Only a child cloned by a server killed before its reply
//   escapes this (it exits unrun, and its zombie is the client's until the client exits).
// - Only the holder of the other end of the socketpair can ask: it has no name to connect to, only
//   the client inherits it, and the server is not dumpable (another program of the same user can
//   neither ptrace it nor take its descriptors). Every request is checked before use.
// - When the client process dies, the server SIGKILLs the daemon children it made (through their
//   pidfds) and exits. It learns of the death from the client's pidfd, or from the end of the
//   stream, whichever comes first (the kernel closes a dying process's files before its pidfd
//   turns readable). A client that is done says goodbye first: the server then exits and leaves
//   its children alone, since they belong to the client, which is alive and manages them.
// - A child gets the request's descriptors under the numbers its client gave, 0-2 included (a
//   client started with stdin closed holds one there, as a spawned child would), and the received
//   copies are closed wherever they landed; with `isolate`, nothing else above stderr.
// - The child gets what glibc's fork gives it: the tid glibc caches in the thread descriptor
//   (CLONE_CHILD_SETTID at the address the kernel holds as the thread's clear_child_tid, which
//   glibc set to that field), the thread's robust-futex list, and fresh caches of ours (futex.c).
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000 /* linux/sched.h of kernel 5.2 */
#endif
#ifndef CLONE_PARENT
#define CLONE_PARENT 0x00008000
#endif
#ifndef CLONE_CHILD_SETTID
#define CLONE_CHILD_SETTID 0x01000000
#endif
#ifndef CLONE_CHILD_CLEARTID
#define CLONE_CHILD_CLEARTID 0x00200000
#endif

_Static_assert(sizeof(mp_server_request_t) == 32 + 4 * MP_SERVER_MAX_FDS, "request layout is fixed");
_Static_assert(offsetof(mp_server_request_t, fds) == 32, "descriptors follow the fixed fields");
_Static_assert(sizeof(mp_server_reply_t) == 16, "reply layout is fixed");
_Static_assert(MP_SERVER_MAX_FDS <= 253, "SCM_RIGHTS carries at most 253 descriptors");

#define REPLY_HELLO 1u
#define REPLY_FORK 2u

/// The highest descriptor number a request may ask for in the child (bounds the fd table it grows).
#define MAX_TARGET_FD (1 << 20)

/// Tests: this server SIGKILLs itself right after its next fork reply (set in the server process).
static int exit_after_reply;

void mp_testing_server_killed_after_reply(void) { exit_after_reply = 1; }

// MARK: - Messages

/// The descriptors a fork's reply carries: the child's pidfd, then the writable end of its go socket.
#define REPLY_FORK_FDS 2

/// Sends a reply with `count` (0 or REPLY_FORK_FDS) descriptors `fds`.
static int send_reply(int sock, int32_t pid, uint32_t kind, const int *fds, int count) {
    mp_server_reply_t reply = {.magic = MP_SERVER_MAGIC, .pid = pid, .kind = kind};
    struct iovec iov = {.iov_base = &reply, .iov_len = sizeof reply};
    union {
        char buf[CMSG_SPACE(sizeof(int) * REPLY_FORK_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (count > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)count);
    }
    for (;;) {
        if (sendmsg(sock, &msg, MSG_NOSIGNAL) == (ssize_t)sizeof reply) return 0;
        if (errno != EINTR) return -errno;
    }
}

/// Receives one message of exactly `size` bytes and up to `max_fds` descriptors (close-on-exec).
/// Returns the number of descriptors, 0 for none, -EPIPE at end of stream, -EPROTO for a message
/// of another size or with cut-off descriptors (those that did arrive are closed), or -errno.
static int receive_message(int sock, void *message, size_t size, int *fds, int max_fds) {
    union {
        char buf[CMSG_SPACE(sizeof(int) * MP_SERVER_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = message, .iov_len = size};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)max_fds)};
    ssize_t n;
    do {
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n == 0) return -EPIPE;
    int count = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int in = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < in; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + (size_t)i * sizeof(int), sizeof fd);
            if (count < max_fds) {
                fds[count++] = fd;
            } else {
                close(fd);
            }
        }
    }
    if ((size_t)n != size || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
        for (int i = 0; i < count; i++) close(fds[i]);
        return -EPROTO;
    }
    return count;
}

// MARK: - Client

void mp_server_request_init(mp_server_request_t *request, uint64_t tag, int32_t daemon) {
    memset(request, 0, sizeof *request);
    request->magic = MP_SERVER_MAGIC;
    request->version = MP_SERVER_VERSION;
    request->tag = tag;
    request->daemon = daemon ? 1 : 0;
}

int32_t mp_server_request_add_fd(mp_server_request_t *request, int32_t target) {
    if (request->fd_count >= MP_SERVER_MAX_FDS) return -E2BIG;
    request->fds[request->fd_count++] = target;
    return 0;
}

int32_t mp_server_request_fd(const mp_server_request_t *request, uint32_t index) {
    return index < request->fd_count && index < MP_SERVER_MAX_FDS ? request->fds[index] : -1;
}

int32_t mp_server_goodbye(int32_t sock) {
    mp_server_request_t request;
    mp_server_request_init(&request, 0, 0);
    request.kind = MP_SERVER_GOODBYE;
    for (;;) {
        if (send(sock, &request, sizeof request, MSG_NOSIGNAL) >= 0) return 0;
        if (errno != EINTR) return -errno;
    }
}

int32_t mp_socketpair(int32_t *fds) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return -errno;
    fds[0] = pair[0];
    fds[1] = pair[1];
    return 0;
}

/// Waits until `sock` is readable, or the server is gone (`server_pidfd` readable, when >= 0: a
/// copy of the server's end that another child of the client inherited would hide its end of
/// stream), or `deadline_ns` (absolute monotonic; INT64_MAX: forever). 0 or -errno.
static int wait_answer(int sock, int server_pidfd, int64_t deadline_ns) {
    for (;;) {
        struct timespec ts, *tsp = NULL;
        if (deadline_ns != INT64_MAX) {
            int64_t left = deadline_ns - mp_monotonic_ns();
            if (left < 0) left = 0;
            ts.tv_sec = left / 1000000000;
            ts.tv_nsec = left % 1000000000;
            tsp = &ts;
        }
        struct pollfd p[2] = {{.fd = sock, .events = POLLIN}, {.fd = server_pidfd, .events = POLLIN}};
        int rc = ppoll(p, server_pidfd >= 0 ? 2 : 1, tsp, NULL);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) return -errno;
        if (rc == 0) return -ETIMEDOUT;
        if (p[0].revents) return 0; // an answer, or the end of the stream
        return -ECONNRESET;         // the server exited without answering
    }
}

int32_t mp_server_await_hello(int32_t sock, int32_t server_pidfd, int64_t deadline_ns, int32_t *pid) {
    int rc = wait_answer(sock, server_pidfd, deadline_ns);
    if (rc < 0) return rc;
    mp_server_reply_t reply;
    int fds[1];
    rc = receive_message(sock, &reply, sizeof reply, fds, 1);
    if (rc > 0) close(fds[0]);
    if (rc == -EPIPE) return -ECONNRESET; // the server exited before it was ready
    if (rc < 0) return rc;
    if (reply.magic != MP_SERVER_MAGIC || reply.kind != REPLY_HELLO) return -EPROTO;
    if (reply.pid < 0) return reply.pid;
    *pid = reply.pid;
    return 0;
}

int32_t mp_server_send_fork(int32_t sock, const mp_server_request_t *request, const int32_t *fds, uint32_t count) {
    if (count > MP_SERVER_MAX_FDS || (count > 0 && fds == NULL)) return -EINVAL;
    struct iovec iov = {.iov_base = (void *)request, .iov_len = sizeof *request};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MP_SERVER_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (count > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
    }
    for (;;) {
        if (sendmsg(sock, &msg, MSG_NOSIGNAL) >= 0) return 0;
        if (errno != EINTR) return -errno;
    }
}

int32_t mp_server_await_fork(int32_t sock, int32_t server_pidfd, int64_t deadline_ns, int32_t *pidfd) {
    *pidfd = -1;
    int rc = wait_answer(sock, server_pidfd, deadline_ns);
    if (rc < 0) return rc;
    mp_server_reply_t reply;
    int received[REPLY_FORK_FDS];
    rc = receive_message(sock, &reply, sizeof reply, received, REPLY_FORK_FDS);
    if (rc == -EPIPE) return -ECONNRESET; // the server died with the request
    if (rc < 0) return rc;
    if (reply.magic != MP_SERVER_MAGIC || reply.kind != REPLY_FORK || (reply.pid < 0) != (rc == 0) ||
        (rc != 0 && rc != REPLY_FORK_FDS)) {
        for (int i = 0; i < rc; i++) close(received[i]);
        return -EPROTO; // a child without its pidfd and go, or an error with descriptors: never sent
    }
    if (reply.pid < 0) return reply.pid;
    // The pid is ours: the child may run. A child already dead (killed meanwhile) has closed its
    // end; the send then fails with EPIPE, and MSG_NOSIGNAL keeps SIGPIPE from this process.
    char go = 1;
    while (send(received[1], &go, 1, MSG_NOSIGNAL) < 0 && errno == EINTR) {
    }
    close(received[1]);
    *pidfd = received[0];
    return reply.pid;
}

int32_t mp_server_drain(int32_t sock, int32_t server_pidfd, int64_t deadline_ns) {
    int32_t reaped = 0;
    for (;;) {
        if (wait_answer(sock, server_pidfd, deadline_ns) < 0) return reaped; // mute, or gone
        mp_server_reply_t reply;
        int received[REPLY_FORK_FDS];
        int rc = receive_message(sock, &reply, sizeof reply, received, REPLY_FORK_FDS);
        if (rc < 0) return reaped; // the end of the stream: every answer has been read
        if (rc == REPLY_FORK_FDS && reply.magic == MP_SERVER_MAGIC && reply.kind == REPLY_FORK && reply.pid > 0) {
            // Our child, which nobody here knows of: it never gets its go (it would read EOF and
            // exit 1 anyway; the SIGKILL makes that certain), and is reaped now, or it would stay
            // a zombie of this process for good.
            mp_pidfd_signal(received[0], SIGKILL);
            close(received[1]);
            int32_t code = 0;
            if (mp_wait_child(reply.pid, received[0], 0, &code) == reply.pid) reaped++;
            close(received[0]);
            continue;
        }
        for (int i = 0; i < rc; i++) close(received[i]);
    }
}

int32_t mp_server_fork(int32_t sock, int32_t server_pidfd, const mp_server_request_t *request,
                       const int32_t *fds, uint32_t count, int64_t deadline_ns, int32_t *pidfd) {
    *pidfd = -1;
    int rc = mp_server_send_fork(sock, request, fds, count);
    if (rc < 0) return rc;
    return mp_server_await_fork(sock, server_pidfd, deadline_ns, pidfd);
}

// MARK: - Server

/// What the server knows while it serves.
typedef struct server {
    int sock;
    int client_pidfd;
    int isolate;
    int *tid_address;         // the thread's clear_child_tid (glibc's cached tid); NULL if unknown
    void *robust_head;        // the thread's robust-futex list, re-registered in each child
    size_t robust_length;
    struct sigaction interrupt; // SIGINT as it was before the server ignored it
    struct sigaction broken_pipe; // SIGPIPE likewise
    int *daemons;             // pidfds of the daemon children still running
    int daemon_count;
    int daemon_capacity;
} server_t;

/// The number of threads of this process, from /proc/self/status (1 if it cannot tell).
static int thread_count(void) {
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 1;
    buf[n] = 0;
    const char *line = strstr(buf, "\nThreads:");
    return line ? atoi(line + 9) : 1;
}

static void kill_daemons(server_t *s) {
    for (int i = 0; i < s->daemon_count; i++) {
        mp_pidfd_signal(s->daemons[i], SIGKILL);
        close(s->daemons[i]);
    }
    s->daemon_count = 0;
}

static void add_daemon(server_t *s, int pidfd) {
    if (s->daemon_count == s->daemon_capacity) {
        int capacity = s->daemon_capacity ? 2 * s->daemon_capacity : 16;
        int *grown = realloc(s->daemons, sizeof(int) * (size_t)capacity);
        if (grown == NULL) { // it cannot be watched: it still dies with its client at exit
            close(pidfd);
            return;
        }
        s->daemons = grown;
        s->daemon_capacity = capacity;
    }
    s->daemons[s->daemon_count++] = pidfd;
}

/// In the child: moves `src[i]` to `dst[i]` (close-on-exec), closing the received copies, and when
/// `isolate`, every other descriptor above stderr. A target may be 0-2: the client's stdio slot
/// holds that very descriptor (a program started with stdin closed), as a spawned child's would.
/// Returns 0 or -errno.
static int place_descriptors(const int *src, const int32_t *dst, uint32_t n, int isolate) {
    int top = 2;
    for (uint32_t i = 0; i < n; i++) {
        if (src[i] > top) top = src[i];
        if (dst[i] > top) top = dst[i];
    }
    int moved[MP_SERVER_MAX_FDS];
    for (uint32_t i = 0; i < n; i++) {
        // Above every source and target, so the moves below never overwrite one another. Each call
        // returns the lowest free number above `top`, so `moved` ascends.
        moved[i] = fcntl(src[i], F_DUPFD_CLOEXEC, top + 1);
        if (moved[i] < 0) return -errno;
    }
    // Each one, even with `isolate`: a copy received on a free slot 0-2 (the server's, if its
    // client had closed that one) is below the ranges closed next.
    for (uint32_t i = 0; i < n; i++) close(src[i]);
    if (isolate) {
        unsigned int low = 3;
        for (uint32_t i = 0; i < n; i++) {
            if ((unsigned int)moved[i] > low) syscall(SYS_close_range, low, (unsigned int)moved[i] - 1, 0);
            low = (unsigned int)moved[i] + 1;
        }
        syscall(SYS_close_range, low, ~0u, 0);
    }
    for (uint32_t i = 0; i < n; i++) {
        if (dup3(moved[i], dst[i], O_CLOEXEC) < 0) return -errno;
        close(moved[i]);
    }
    return 0;
}

/// The first steps of a new child, before it returns to its caller: the bookkeeping glibc's fork
/// would do, the go signal, and its descriptors. Exits if the go end was closed unwritten: the
/// client never read the reply that named this child.
static void become_child(server_t *s, int go, const int *received, mp_server_request_t *request) {
    if (s->robust_head != NULL) syscall(SYS_set_robust_list, s->robust_head, s->robust_length);
    mp_after_fork_in_child();
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); // the server's protection is not the child's
    sigaction(SIGINT, &s->interrupt, NULL);
    sigaction(SIGPIPE, &s->broken_pipe, NULL);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    char byte = 0;
    ssize_t n;
    do {
        n = read(go, &byte, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) _exit(1); // the client never learnt of this child
    close(go);
    close(s->sock);
    close(s->client_pidfd);
    for (int i = 0; i < s->daemon_count; i++) close(s->daemons[i]);
    free(s->daemons);
    if (place_descriptors(received, request->fds, request->fd_count, s->isolate) != 0) _exit(1);
}

/// Checks a request; 0 or -EINVAL.
static int valid_request(const mp_server_request_t *r, int received) {
    if (r->magic != MP_SERVER_MAGIC || r->version != MP_SERVER_VERSION || r->kind != MP_SERVER_FORK) return -EINVAL;
    if (r->fd_count > MP_SERVER_MAX_FDS || (int)r->fd_count != received || r->daemon > 1) return -EINVAL;
    for (uint32_t i = 0; i < r->fd_count; i++) {
        if (r->fds[i] < 0 || r->fds[i] > MAX_TARGET_FD) return -EINVAL;
        for (uint32_t j = 0; j < i; j++) {
            if (r->fds[j] == r->fds[i]) return -EINVAL;
        }
    }
    return 0;
}

/// Serves one request. Returns 1 in the new child, 0 in the server, -EPIPE after a goodbye,
/// -ESRCH at the end of the stream (the client died).
static int serve_one(server_t *s, mp_server_request_t *request) {
    int received[MP_SERVER_MAX_FDS];
    int count = receive_message(s->sock, request, sizeof *request, received, MP_SERVER_MAX_FDS);
    if (count == -EPROTO) return send_reply(s->sock, -EPROTO, REPLY_FORK, NULL, 0) == 0 ? 0 : -ESRCH;
    if (count == -EPIPE) return -ESRCH;
    if (count < 0) return count;
    if (count == 0 && request->magic == MP_SERVER_MAGIC && request->version == MP_SERVER_VERSION &&
        request->kind == MP_SERVER_GOODBYE) {
        return -EPIPE;
    }
    int rc = valid_request(request, count);
    // A socket, not a pipe: the client's write must not raise SIGPIPE if the child is already dead.
    int go[2] = {-1, -1};
    if (rc == 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, go) != 0) rc = -errno;
    if (rc != 0) {
        for (int i = 0; i < count; i++) close(received[i]);
        send_reply(s->sock, rc, REPLY_FORK, NULL, 0);
        return 0;
    }
    int pidfd = -1;
    unsigned long flags = CLONE_PARENT | CLONE_PIDFD | SIGCHLD;
    if (s->tid_address != NULL) flags |= CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;
    long pid = syscall(SYS_clone, flags, NULL, &pidfd, s->tid_address, 0);
    if (pid == 0) {
        close(go[1]);
        become_child(s, go[0], received, request);
        return 1;
    }
    int err = errno;
    close(go[0]);
    for (int i = 0; i < count; i++) close(received[i]);
    if (pid < 0) {
        close(go[1]);
        send_reply(s->sock, -err, REPLY_FORK, NULL, 0);
        return 0;
    }
    int reply_fds[REPLY_FORK_FDS] = {pidfd, go[1]};
    int sent = send_reply(s->sock, (int32_t)pid, REPLY_FORK, reply_fds, REPLY_FORK_FDS);
    close(go[1]); // from here the child waits for the client alone
    if (sent != 0) {
        mp_pidfd_signal(pidfd, SIGKILL); // nobody knows of it: it must not run
        close(pidfd);
        return 0;
    }
    if (exit_after_reply) kill(getpid(), SIGKILL); // tests: a server killed right after its answer
    if (request->daemon) {
        add_daemon(s, pidfd);
    } else {
        close(pidfd);
    }
    return 0;
}

int32_t mp_server_serve(int32_t sock, int32_t client, int32_t isolate, mp_server_request_t *request) {
    server_t s = {.sock = sock, .isolate = isolate};
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    // The terminal's ^C goes to the whole process group: the client decides what it means, and the
    // server must outlive it to fork replacements (as Python's forkserver ignores SIGINT).
    struct sigaction ignore = {.sa_handler = SIG_IGN};
    sigemptyset(&ignore.sa_mask);
    sigaction(SIGINT, &ignore, &s.interrupt);
    // Saved for the children (become_child restores it); the server writes only with MSG_NOSIGNAL.
    sigaction(SIGPIPE, &ignore, &s.broken_pipe);
    s.client_pidfd = (int)syscall(SYS_pidfd_open, client, 0);
    if (s.client_pidfd < 0 || getppid() != client) return -ESRCH; // the client is already gone
    if (prctl(PR_GET_TID_ADDRESS, &s.tid_address, 0, 0, 0) != 0 ||
        s.tid_address == NULL || *s.tid_address != (int)syscall(SYS_gettid)) {
        s.tid_address = NULL; // no CONFIG_CHECKPOINT_RESTORE: glibc's cached tid goes stale
    }
    if (syscall(SYS_get_robust_list, 0, &s.robust_head, &s.robust_length) != 0) s.robust_head = NULL;
    int threads = thread_count();
    if (threads > 1) {
        send_reply(sock, -EBUSY, REPLY_HELLO, NULL, 0);
        return -EBUSY;
    }
    if (send_reply(sock, (int32_t)getpid(), REPLY_HELLO, NULL, 0) != 0) return -EPIPE;
    struct pollfd *fds = NULL;
    int capacity = 0;
    int32_t result = 0;
    for (;;) {
        int n = 2 + s.daemon_count;
        if (n > capacity) {
            struct pollfd *grown = realloc(fds, sizeof *fds * (size_t)(n + 16));
            if (grown == NULL) {
                result = -ENOMEM;
                break;
            }
            fds = grown;
            capacity = n + 16;
        }
        fds[0] = (struct pollfd){.fd = sock, .events = POLLIN};
        fds[1] = (struct pollfd){.fd = s.client_pidfd, .events = POLLIN};
        for (int i = 0; i < s.daemon_count; i++) fds[2 + i] = (struct pollfd){.fd = s.daemons[i], .events = POLLIN};
        if (poll(fds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) continue;
            result = -errno;
            break;
        }
        if (fds[1].revents) {
            result = -ESRCH; // the client died
            break;
        }
        for (int i = s.daemon_count - 1; i >= 0; i--) { // exited daemons need no watching
            if (fds[2 + i].revents == 0) continue;
            close(s.daemons[i]);
            s.daemons[i] = s.daemons[--s.daemon_count];
        }
        if (fds[0].revents & POLLIN) {
            int rc = serve_one(&s, request);
            if (rc == 1) {
                free(fds);
                return 0;
            }
            if (rc < 0 && rc != -EAGAIN) {
                result = rc;
                break;
            }
        } else if (fds[0].revents) {
            result = -ESRCH; // the end of the stream without a goodbye: the client died
            break;
        }
    }
    free(fds);
    if (result != -EPIPE) kill_daemons(&s); // the client is gone: its daemons go with it
    for (int i = 0; i < s.daemon_count; i++) close(s.daemons[i]);
    free(s.daemons);
    return result == 0 ? -EPIPE : result;
}
