// The process layer: thread and process ids, shared memory, the resource tracker, fork and spawn,
// the fork servers (sys/).
// Part of CMultiprocessing.h (see it for the rules every header here follows).
#ifndef MP_SYS_H
#define MP_SYS_H

#include <stddef.h>
#include <stdint.h>

#include "mp_base.h"

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Threads

/// Caches of the caller's ids: 0 until first asked, cleared in a forked child (futex.c). Read only
/// through mp_thread_id()/mp_process_id().
extern __thread int32_t mp_tid_cache __attribute__((tls_model("initial-exec")));
extern int32_t mp_pid_cache;
int32_t mp_thread_id_slow(void);
int32_t mp_process_id_slow(void);

/// The calling thread's kernel thread id, cached per thread (no syscall after the first call) and
/// refreshed in a forked child.
static inline int32_t mp_thread_id(void) {
    int32_t tid = mp_tid_cache;
    return __builtin_expect(tid != 0, 1) ? tid : mp_thread_id_slow();
}

/// The calling process's id, cached and refreshed in a forked child.
static inline int32_t mp_process_id(void) {
    int32_t pid = __atomic_load_n(&mp_pid_cache, __ATOMIC_RELAXED);
    return __builtin_expect(pid != 0, 1) ? pid : mp_process_id_slow();
}

/// Names the calling thread for the OS (the kernel keeps the first 15 bytes).
void mp_set_thread_name(const char *_Nonnull name);
/// Sets the calling thread's timer slack to 1 ns (PR_SET_TIMERSLACK): its futex and
/// clock_nanosleep deadlines then wake on time instead of up to 50 µs late. For the library's own
/// threads, when they start.
void mp_set_precise_timers(void);
/// Copies the calling thread's OS name into `buffer` (at least 16 bytes), NUL-terminated.
void mp_get_thread_name(char *_Nonnull buffer);

/// Whether the thread `tid` still runs (a zombie counts as dead). Uses a thread pidfd where the
/// kernel has them (>= 6.9) and /proc otherwise; a recycled tid reads as alive (see mutex.c).
int mp_thread_alive(int32_t tid);

/// Whether the process `pid` still runs (a zombie counts as dead), by pidfd.
int mp_process_alive(int32_t pid);
/// CPUs in the calling thread's affinity mask (sched_getaffinity), or 0 if it cannot be read.
int32_t mp_cpu_affinity_count(void);

// MARK: - Shared memory

/// Header at the start of every named region: attach checks it before trusting anything else.
typedef struct mp_region_header {
    uint64_t magic;
    uint32_t version;
    uint32_t header_size;
    uint64_t payload_size;
    uint32_t creator_pid;
    uint32_t reserved;
    uint64_t reserved2[4];
} mp_region_header_t;

#define MP_REGION_MAGIC 0x31504d5446495753ull /* the bytes "SWIFTMP1" on a little-endian machine */
#define MP_REGION_VERSION 1u
#define MP_REGION_HEADER_SIZE 64u

/// memfd_create + ftruncate, then sealed against shrinking and growing (see shm.c). Returns the
/// descriptor (close-on-exec) or -errno.
int32_t mp_memfd_create(const char *_Nonnull name, uint64_t size);
/// A memfd holding the `count` bytes at `bytes`, sealed against every change (a bootstrap
/// payload). Returns the descriptor (close-on-exec) or -errno.
int32_t mp_memfd_create_sealed(const char *_Nonnull name, const void *_Nullable bytes, uint64_t count);
/// Whether `fd` is a memfd made by mp_memfd_create (or, when `immutable`, mp_memfd_create_sealed)
/// of at least `size` bytes: its size, or -EPERM (not such a memfd), -EINVAL (smaller), -errno.
int64_t mp_memfd_check(int32_t fd, uint64_t size, int32_t immutable);
/// shm_open(O_CREAT|O_EXCL, 0600) + ftruncate. Returns the descriptor or -errno.
int32_t mp_shm_create(const char *_Nonnull name, uint64_t size);
/// shm_open(O_RDWR). Returns the descriptor or -errno.
int32_t mp_shm_open(const char *_Nonnull name);
/// shm_unlink. Returns 0 or -errno.
int32_t mp_shm_unlink(const char *_Nonnull name);
/// shm_unlink of `name` only while it still stands for the file `device`/`inode` (mp_fd_identity):
/// 0, -ENOENT (gone, or another file of that name now), or -errno. A name unlinked and made again
/// by someone else in between (the window of a few system calls) is the tracker's check too.
int32_t mp_shm_unlink_same(const char *_Nonnull name, uint64_t device, uint64_t inode);
/// 0 if `fd` is a regular file owned by this process's effective user that no one else may open
/// (no group or other permission bits); -EPERM if not, or -errno.
int32_t mp_fd_private_to_owner(int32_t fd);
/// Size of the object behind `fd`, or -errno.
int64_t mp_fd_size(int32_t fd);
/// The device and inode of the file behind `fd` (what tells a named object from a later one of the
/// same name). 0 or -errno.
int32_t mp_fd_identity(int32_t fd, uint64_t *_Nonnull device, uint64_t *_Nonnull inode);
/// mmap(MAP_SHARED, read/write) of `size` bytes of `fd`. Returns NULL and sets `*error` on failure.
void *_Nullable mp_map_shared(int32_t fd, uint64_t size, int32_t *_Nonnull error);
/// munmap. Returns 0 or -errno.
int32_t mp_unmap(void *_Nonnull address, uint64_t size);
/// Fills a fresh header (the creator does this once, before anyone can attach).
void mp_region_header_init(mp_region_header_t *_Nonnull h, uint64_t payload_size);
/// The header's magic, loaded with acquire: pairs with the release in mp_region_header_init, so a
/// reader that sees MP_REGION_MAGIC sees the whole header.
uint64_t mp_region_header_magic(const mp_region_header_t *_Nonnull h);

// MARK: - Resource tracker (tracker.c)

/// The longest name the tracker takes: a POSIX shared-memory path, leading "/" included.
#define MP_TRACKER_NAME_MAX 251u
/// Message kinds: the sender created the object (register) or unlinked it (unregister).
#define MP_TRACKER_REGISTER 1u
#define MP_TRACKER_UNREGISTER 2u

/// Starts a resource tracker: a forked child that reads registrations from a SOCK_SEQPACKET socket
/// until every holder of its write end is gone, then unlinks each registered name that still is the
/// registered file, and exits. The child runs only C code, ignores SIGINT, SIGTERM, SIGHUP and
/// SIGPIPE, is out of the caller's process group (both already hold when this returns), keeps no
/// other descriptor and no shared mapping, and is named "mp-tracker". It exits only after every
/// holder has, so its parent cannot wait for it: reap it only if it dies early (a send then fails
/// with EPIPE). Stores the write end (close-on-exec) in `*write_fd` and returns the child's pid, or
/// -errno (nothing is left open then).
int32_t mp_tracker_start(int32_t *_Nonnull write_fd);

/// Sends one message (`MP_TRACKER_REGISTER` or `MP_TRACKER_UNREGISTER`) about the object `name`
/// ("/" then up to MP_TRACKER_NAME_MAX - 1 bytes, no other "/") that is the file (`device`,
/// `inode`). Blocks while the tracker's queue is full; never raises SIGPIPE. 0, -EINVAL for a bad
/// kind or name, or -errno: EPIPE or ECONNRESET once the tracker has gone.
int32_t mp_tracker_send(int32_t fd, uint32_t kind, const char *_Nonnull name, uint64_t device,
                        uint64_t inode);

/// In a spawned child, for a descriptor its parent kept open for it: checks that it is a
/// SOCK_SEQPACKET socket and makes it close-on-exec again. 0 or -errno (-EPROTOTYPE: another kind).
int32_t mp_tracker_adopt(int32_t fd);

// MARK: - Processes

/// Flushes stdio, forks, and in the child empties the signal mask (the forking thread's mask would
/// be inherited), refreshes the tid/pid caches and, when `die_with_parent`, asks for SIGKILL when
/// the parent dies (exiting at once if it already has). Returns the pid in the parent, 0 in the child,
/// -errno on failure.
int32_t mp_fork(int die_with_parent);

/// posix_spawn of `path` with `argv`/`envp` (NULL-terminated), keeping `keep_fds` (count `nkeep`)
/// open in the child; everything else close-on-exec stays closed. The child's signal mask is
/// emptied and SIGPIPE, SIGXFSZ and SIGCHLD start at their default. Returns the pid or -errno.
int32_t mp_spawn(const char *_Nonnull path, char *_Nullable const *_Nonnull argv,
                 char *_Nullable const *_Nonnull envp, const int32_t *_Nullable keep_fds,
                 int32_t nkeep);

/// In a spawned child: SIGKILL when the parent dies; exits at once if `parent` is already gone.
void mp_die_with_parent(int32_t parent);

/// Undoes mp_die_with_parent: this process outlives the thread that forked it.
void mp_outlive_parent(void);

/// Reaps the child `pid`, through its `pidfd` when it has one (>= 0: a reused pid is then never
/// reaped by mistake). `nohang`: return 0 at once if the child still runs. On a reaped child
/// returns `pid` and stores the Python-style exit code in `*exit_code` (status, or -signal).
/// -errno on failure (ECHILD: reaped elsewhere).
int32_t mp_wait_child(int32_t pid, int32_t pidfd, int nohang, int32_t *_Nonnull exit_code);

/// A pidfd for the child `pid` (close-on-exec), or -errno. It polls readable once the child exits.
int32_t mp_pidfd_open(int32_t pid);

/// Waits until `deadline_ns` (MP_FOREVER: no limit) for `fd` to be readable: 1 readable, 0 timed
/// out, -errno on failure. EINTR is retried with the remaining time.
int32_t mp_poll_readable(int32_t fd, int64_t deadline_ns);

/// pipe2(O_CLOEXEC): fds[0] reads, fds[1] writes. 0 or -errno.
int32_t mp_pipe(int32_t *_Nonnull fds);
/// socketpair(AF_UNIX, SOCK_STREAM, close-on-exec): two connected ends (a duplex Pipe). 0 or -errno.
int32_t mp_stream_socketpair(int32_t *_Nonnull fds);

/// One write to a Pipe's end (`socket`: a socket pair's, else a pipe's): the bytes written, or
/// -errno (-EPIPE when the reader has gone: never a SIGPIPE). Retries EINTR (sys/stream.c).
int64_t mp_stream_write(int32_t fd, const void *_Nonnull buffer, uint64_t length, int socket);
/// One read from a Pipe's end, waiting no later than `deadline_ns` (MP_FOREVER: a plain read): the
/// bytes read (0: end of stream), -ETIMEDOUT, or -errno.
int64_t mp_stream_read(int32_t fd, void *_Nonnull buffer, uint64_t length, int socket, int64_t deadline_ns);

/// Sends `signal` to `pid`; 0 or -errno.
int32_t mp_signal(int32_t pid, int32_t signal);
/// Sends `signal` to the process `pidfd` names (never to another that reused its pid); 0 or -errno
/// (ESRCH once it has exited).
int32_t mp_pidfd_signal(int32_t pidfd, int32_t signal);

/// Writes stderr text and flushes stdio, then `_exit(code)`: the way out of a forked child, which
/// must not run the parent's atexit handlers or Swift's deinitialisers of inherited state.
_Noreturn void mp_exit_child(int32_t code);

/// In a forked child, before work that may never return (a Swift runtime lock that another thread
/// held at the fork is held for good there): unless mp_child_watchdog_disarm comes first, at
/// `deadline_ns` (absolute, monotonic) writes `message` (`length` bytes, copied; the first 1024
/// kept) to stderr and `_exit(code)`s, without flushing stdio. A thread of its own (64 KiB of
/// stack, every signal blocked) waits for the deadline: no signal disposition or mask of the
/// program's changes. One watchdog at a time, armed and disarmed on one thread. 0, or -errno
/// (-EBUSY: one is armed; -ENOTSUP under ThreadSanitizer, where a forked child of a threaded
/// process may not start a thread; pthread_create's error); nothing is armed then.
int32_t mp_child_watchdog_arm(int64_t deadline_ns, int32_t code, const char *_Nonnull message,
                              int32_t length);

/// Undoes mp_child_watchdog_arm (nothing if none is armed): wakes its thread and joins it, at once.
/// Once this has begun the watchdog no longer fires, unless it already had.
void mp_child_watchdog_disarm(void);

/// Flushes all stdio streams (before fork, and in a child before `_exit`).
void mp_flush_stdio(void);

// MARK: - Fork servers (forkserver.c)

/// The most descriptors one fork request can hand to its child.
#define MP_SERVER_MAX_FDS 64
/// "mp-fsrv1", little-endian: the first word of every fork-server message.
#define MP_SERVER_MAGIC 0x31767273662d706dull
#define MP_SERVER_VERSION 2

/// A request's `kind`: fork one child.
#define MP_SERVER_FORK 0
/// A request's `kind`: the client is done; the server exits and leaves the children alone. (An end
/// of stream without it means the client died: the server then kills the daemon children.)
#define MP_SERVER_GOODBYE 1

/// A request to a fork server. For MP_SERVER_FORK, the i-th descriptor sent with the request
/// becomes descriptor `fds[i]` in the child (close-on-exec); `tag` is the client's, handed to the
/// child.
typedef struct mp_server_request {
    uint64_t magic;
    uint64_t tag;
    uint32_t version;
    uint32_t daemon;
    uint32_t fd_count;
    uint32_t kind;
    int32_t fds[MP_SERVER_MAX_FDS];
} mp_server_request_t;

/// A fork server's answer: its hello (`pid` = the server's pid) or a fork's outcome (`pid` = the
/// child's pid, with its pidfd and the writable end of the socket the child waits on for its go
/// attached: mp_server_await_fork writes the go), or -errno.
typedef struct mp_server_reply {
    uint64_t magic;
    int32_t pid;
    uint32_t kind;
} mp_server_reply_t;

/// Clears `request` and fills its fixed fields.
void mp_server_request_init(mp_server_request_t *_Nonnull request, uint64_t tag, int32_t daemon);
/// Appends a descriptor's number in the child; 0, or -E2BIG past MP_SERVER_MAX_FDS.
int32_t mp_server_request_add_fd(mp_server_request_t *_Nonnull request, int32_t target);
/// The number of the request's `index`-th descriptor (in the child: where it now is), or -1.
int32_t mp_server_request_fd(const mp_server_request_t *_Nonnull request, uint32_t index);

/// socketpair(AF_UNIX, SOCK_SEQPACKET, close-on-exec): fds[0] for the client, fds[1] for the server.
int32_t mp_socketpair(int32_t *_Nonnull fds);

/// Serves fork requests on `sock` for `client` (the server's parent). Each child is the client's
/// own (CLONE_PARENT). Returns 0 in a new child, with `*request` holding its request and its
/// descriptors in place (`isolate`: and every other descriptor above stderr closed). In the server,
/// returns -errno once it should exit: -ESRCH (the client died, or its end closed without a
/// goodbye: the daemon children were SIGKILLed), -EPIPE (the client said goodbye), -EBUSY (the
/// process has more than one thread: it refused to serve). Never returns between requests.
int32_t mp_server_serve(int32_t sock, int32_t client, int32_t isolate,
                        mp_server_request_t *_Nonnull request);

/// Client side: waits until `deadline_ns` (absolute monotonic; INT64_MAX: forever) for the
/// server's hello; `server_pidfd` (or -1) tells when the server exits without a word. 0 and
/// `*pid`, or -errno: ETIMEDOUT, ECONNRESET (it exited first), EBUSY (it refused to serve: it had
/// more than one thread).
int32_t mp_server_await_hello(int32_t sock, int32_t server_pidfd, int64_t deadline_ns, int32_t *_Nonnull pid);

/// Client side: tells the server to exit and leave the children alone. 0 or -errno.
int32_t mp_server_goodbye(int32_t sock);

/// Client side: asks for one child, sending the `count` descriptors `fds` (as many as the request
/// declares, or the server refuses it), and waits until
/// `deadline_ns` for the answer. Returns the child's pid with its pidfd in `*pidfd`, or -errno
/// (ECONNRESET/EPIPE: the server is gone; ETIMEDOUT: no answer in time, the server is then unusable).
/// The child starts running once its answer is read here; one whose answer is never read never runs.
/// One exchange at a time per socket: the caller serialises.
int32_t mp_server_fork(int32_t sock, int32_t server_pidfd, const mp_server_request_t *_Nonnull request,
                       const int32_t *_Nullable fds, uint32_t count, int64_t deadline_ns,
                       int32_t *_Nonnull pidfd);
/// Client side, the two halves of mp_server_fork, for several requests in flight: the server
/// answers them in the order they were sent. Sends one request (0 or -errno)...
int32_t mp_server_send_fork(int32_t sock, const mp_server_request_t *_Nonnull request, const int32_t *_Nullable fds,
                            uint32_t count);
/// ...and awaits the next answer: a pid (its pidfd in `*pidfd`) or -errno, as mp_server_fork.
int32_t mp_server_await_fork(int32_t sock, int32_t server_pidfd, int64_t deadline_ns, int32_t *_Nonnull pidfd);
/// Client side, when it gives up on the connection (after its goodbye, or once it is broken):
/// reads the answers still due until the end of the stream, the server's exit (`server_pidfd`) or
/// `deadline_ns`, and SIGKILLs and reaps each child they name (it never got its go: nobody knows
/// of it). Returns how many it reaped.
int32_t mp_server_drain(int32_t sock, int32_t server_pidfd, int64_t deadline_ns);

#ifdef __cplusplus
}
#endif

#endif
