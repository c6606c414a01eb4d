// Futex calls, the thread-id cache, owner liveness and the monotonic clock.
//
// Invariants:
// - Process-shared words use FUTEX_WAIT_BITSET/FUTEX_WAKE without FUTEX_PRIVATE_FLAG: a private
//   futex is keyed by (mm, address) and would never meet a waiter in another process.
// - Deadlines are absolute CLOCK_MONOTONIC times (FUTEX_WAIT_BITSET without FUTEX_CLOCK_REALTIME),
//   so a spurious wake-up never stretches a timeout and wall-clock jumps do not matter.
// - The tid/pid caches are per thread and are cleared in a forked child (pthread_atfork), where the
//   surviving thread has new ids.
// - `mp_fork_generation` counts the forks between the program's start and this process; the fork
//   handler bumps it in the child (single-threaded there). A private lock records the generation it
//   was set up in; one from an older generation may be held by a thread that did not come along,
//   so its first user here re-initialises it, under `repair_guard`, and only then publishes the new
//   generation (release, paired with the acquire in mp_private_lock_lock): a thread that sees the
//   current generation sees the re-initialised word.
// - Timer slack (PR_SET_TIMERSLACK) is per thread and stretches every futex and clock_nanosleep
//   deadline by up to 50 µs by default. The library's own threads set it to 1 ns when they start
//   (`precise_timers` records it); mp_sleep_until lowers it for its own duration on any other
//   thread and puts the caller's value back.
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL /* linux/pidfd.h of kernel 6.9; Debian 12's headers predate it */
#endif

_Static_assert(sizeof(mp_private_lock_t) == 24, "mp_private_lock_t is allocated by Swift");
_Static_assert(offsetof(mp_private_lock_t, mutex) == 0, "the mutex leads the private lock");

__thread int32_t mp_tid_cache;
int32_t mp_pid_cache;
uint32_t mp_fork_generation;
/// Serialises the re-initialisation of stale private locks; itself reset by the fork handler.
static mp_mutex_t repair_guard;

void mp_after_fork_in_child(void) {
    mp_tid_cache = 0;
    __atomic_store_n(&mp_pid_cache, 0, __ATOMIC_RELAXED);
    mp_mutex_init(&repair_guard, 0);
    MP_ADD(&mp_fork_generation, 1, MP_RELEASE);
}

__attribute__((constructor)) static void install_fork_handler(void) {
    pthread_atfork(NULL, NULL, mp_after_fork_in_child);
}

void mp_private_lock_init(mp_private_lock_t *l) {
    mp_mutex_init(&l->mutex, 0);
    MP_STORE(&l->generation, MP_LOAD(&mp_fork_generation, MP_RELAXED), MP_RELEASE);
}

void mp_private_lock_repair(mp_private_lock_t *l) {
    mp_mutex_lock(&repair_guard, MP_FOREVER);
    uint32_t now = MP_LOAD(&mp_fork_generation, MP_RELAXED);
    if (MP_LOAD(&l->generation, MP_RELAXED) != now) {
        mp_mutex_init(&l->mutex, 0); // its holder, if any, is a thread of the parent
        MP_STORE(&l->generation, now, MP_RELEASE);
    }
    mp_mutex_unlock(&repair_guard);
}

int32_t mp_thread_id_slow(void) {
    mp_tid_cache = (int32_t)syscall(SYS_gettid);
    return mp_tid_cache;
}

int32_t mp_process_id_slow(void) {
    int32_t pid = (int32_t)getpid();
    __atomic_store_n(&mp_pid_cache, pid, __ATOMIC_RELAXED);
    return pid;
}

void mp_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

void mp_get_thread_name(char *buffer) {
    buffer[0] = 0;
    prctl(PR_GET_NAME, buffer, 0, 0, 0);
    buffer[15] = 0;
}

/// This thread's timer slack is already 1 ns (mp_set_precise_timers); inherited by a forked child,
/// whose thread keeps the slack too.
static __thread int precise_timers;

void mp_set_precise_timers(void) {
    if (prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0) == 0) precise_timers = 1;
}

int64_t mp_timer_slack_ns(void) { return prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0); }

int64_t mp_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int32_t mp_sleep_until(int64_t deadline_ns) {
    struct timespec ts = {.tv_sec = deadline_ns / 1000000000, .tv_nsec = deadline_ns % 1000000000};
    // A caller's thread (not the library's) sleeps without slack too, and gets its own value back:
    // three prctl calls (about a microsecond) against the up to 50 µs of default slack they save.
    int saved = precise_timers ? -1 : prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (saved > 1) prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    int rc;
    while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) == EINTR) {
    }
    if (saved > 1) prctl(PR_SET_TIMERSLACK, (unsigned long)saved, 0, 0, 0);
    return -rc;
}

int mp_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns, int shared) {
    int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    struct timespec ts, *tsp = NULL;
    if (deadline_ns != INT64_MAX) {
        ts.tv_sec = deadline_ns / 1000000000;
        ts.tv_nsec = deadline_ns % 1000000000;
        tsp = &ts;
    }
    long rc = syscall(SYS_futex, word, op, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    if (rc == -1 && errno == ETIMEDOUT) return ETIMEDOUT;
    return 0; // woken, EAGAIN (the word moved on) or EINTR: the caller re-reads the word
}

void mp_futex_wake(uint32_t *word, uint32_t count, int shared) {
    int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    syscall(SYS_futex, word, op, count > INT_MAX ? INT_MAX : count, NULL, NULL, 0);
}

/// Reads the state letter of /proc/<tid>/stat: the fallback for kernels without thread pidfds.
static int proc_thread_alive(int32_t tid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", tid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT || errno == ESRCH ? 0 : 1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); // the command name may itself hold spaces and parens
    if (paren == NULL || paren[1] == 0 || paren[2] == 0) return 1;
    char state = paren[2];
    return state != 'Z' && state != 'X' && state != 'x';
}

int mp_thread_alive(int32_t tid) {
    if (tid <= 0) return 0;
    int fd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
    if (fd < 0) {
        if (errno == ESRCH) return 0;
        return proc_thread_alive(tid); // EINVAL: kernel < 6.9; EMFILE: no descriptor to spare
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc = poll(&p, 1, 0);
    close(fd);
    return !(rc == 1 && (p.revents & (POLLIN | POLLHUP))); // readable: the thread has exited
}

int mp_process_alive(int32_t pid) {
    if (pid <= 0) return 0;
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0) return errno == ESRCH ? 0 : proc_thread_alive(pid);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int rc = poll(&p, 1, 0);
    close(fd);
    return !(rc == 1 && (p.revents & (POLLIN | POLLHUP))); // readable: the process has exited
}

// MARK: - Async waits (the word a coroutine waits on; see mp_async_wait_t)

_Static_assert(sizeof(mp_async_wait_t) == 32, "mp_async_wait_t is kept by Swift between calls");

int32_t mp_async_wait_blocking(const mp_async_wait_t *w, int64_t deadline_ns) {
    return mp_futex_wait(w->word, w->expected, deadline_ns, (int)w->shared) == ETIMEDOUT ? ETIMEDOUT : 0;
}

void mp_async_wait_forward(const mp_async_wait_t *w) {
    if (w->word != NULL) mp_futex_wake(w->word, 1, (int)w->shared);
}
