// Process creation and reaping: what must be C because it runs between fork and the child's first
// Swift code, or must be async-signal-safe.
//
// Invariants:
// - stdio is flushed before fork, so buffered output is not printed twice (parent and child).
// - A forked child starts with an empty signal mask (the forking thread's mask would otherwise be
//   inherited, and Swift's runtime and Dispatch threads block signals), and refreshed tid/pid
//   caches (pthread_atfork in futex.c).
// - "Die with parent" uses PR_SET_PDEATHSIG, then re-checks the parent: if the parent died before
//   the prctl, the child exits at once rather than being orphaned. PDEATHSIG follows the thread that
//   forked, so a child forked from a short-lived thread must not be a daemon (documented in Swift).
// - A spawned child inherits only 0-2 and the descriptors it is given, as Python's spawn: every other
//   one is closed between fork and exec, whether or not it had O_CLOEXEC.
// - The child watchdog is a thread, not a signal: it changes no disposition and no mask of the
//   program's (a SIGALRM the program blocked and left pending stays so), and takes none of its
//   signals (all blocked in it). `watchdog_state` (IDLE, ARMED, FIRED) is its futex word: the
//   arming thread sets ARMED before pthread_create and swaps IDLE back to disarm; the watchdog
//   moves ARMED to FIRED by CAS at the deadline, so exactly one of the two wins. It runs only C
//   (futex wait, write, _exit): the Swift runtime's locks may be held for good in a forked child.
//   Not under TSan, which dies when a forked child of a threaded process starts a thread.
#define _GNU_SOURCE
#include "internal.h"

#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3 /* linux/wait.h of kernel 5.4; older libc headers predate it */
#endif

void mp_flush_stdio(void) { fflush(NULL); }

void mp_die_with_parent(int32_t parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
}

void mp_outlive_parent(void) { prctl(PR_SET_PDEATHSIG, 0); }

int32_t mp_testing_become_subreaper(void) { return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 ? 0 : -errno; }

int32_t mp_fork(int die_with_parent) {
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        pthread_sigmask(SIG_SETMASK, &none, NULL);
        if (die_with_parent) mp_die_with_parent(parent);
    }
    return pid;
}

static int kept(const int32_t *keep_fds, int32_t nkeep, long fd) {
    for (int32_t i = 0; i < nkeep; i++) {
        if (keep_fds[i] == fd) return 1;
    }
    return 0;
}

/// Adds the closing of every descriptor but 0-2 and the kept ones (the highest of which is
/// `highest`): those above it with one closefrom, those below it one by one, as open now (one
/// opened by another thread meanwhile may still reach the child, if it lacks O_CLOEXEC).
static int close_all_but(posix_spawn_file_actions_t *actions, const int32_t *keep_fds, int32_t nkeep,
                         int highest) {
    int rc = 0;
    if (highest > 2) {
        DIR *dir = opendir("/proc/self/fd");
        if (dir == NULL) return errno;
        int own = dirfd(dir);
        struct dirent *entry;
        while (rc == 0 && (entry = readdir(dir)) != NULL) {
            char *end = NULL;
            long fd = strtol(entry->d_name, &end, 10);
            if (end == entry->d_name || *end != 0 || fd < 3 || fd >= highest || fd == own) continue;
            if (!kept(keep_fds, nkeep, fd)) rc = posix_spawn_file_actions_addclose(actions, (int)fd);
        }
        closedir(dir);
    }
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(actions, highest + 1);
    return rc;
}

int32_t mp_spawn(const char *path, char *const *argv, char *const *envp, const int32_t *keep_fds,
                 int32_t nkeep) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&actions);
    if (rc != 0) return -rc;
    // dup2 onto itself clears FD_CLOEXEC in the child (POSIX 2024, glibc >= 2.29): the fd survives exec.
    int highest = 2;
    for (int32_t i = 0; i < nkeep && rc == 0; i++) {
        rc = posix_spawn_file_actions_adddup2(&actions, keep_fds[i], keep_fds[i]);
        if (keep_fds[i] > highest) highest = keep_fds[i];
    }
    if (rc == 0) rc = close_all_but(&actions, keep_fds, nkeep, highest);
    if (rc == 0) rc = posix_spawnattr_init(&attr);
    if (rc != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return -rc;
    }
    sigset_t none, defaults;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    // Signals a server commonly ignores (SIGPIPE above all) start at their default in the child,
    // as Python's spawn does: an exec'd program keeps ignored dispositions otherwise.
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGXFSZ);
    sigaddset(&defaults, SIGCHLD);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    fflush(NULL);
    pid_t pid = 0;
    rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    return rc == 0 ? pid : -rc;
}

int32_t mp_wait_child(int32_t pid, int32_t pidfd, int nohang, int32_t *exit_code) {
    siginfo_t info;
    int options = WEXITED | (nohang ? WNOHANG : 0);
    for (;;) {
        info.si_pid = 0;
        // By pidfd when there is one: it names this child for good, so a pid that has been reaped
        // elsewhere and reused is never waited for (waitid P_PIDFD, kernel >= 5.4).
        int rc = pidfd >= 0 ? waitid(P_PIDFD, (id_t)pidfd, &info, options) : waitid(P_PID, (id_t)pid, &info, options);
        if (rc == 0) break;
        if (errno == EINTR) continue;
        if (errno == EINVAL && pidfd >= 0) { // kernel 5.3: pidfds, but no P_PIDFD
            pidfd = -1;
            continue;
        }
        return -errno;
    }
    if (info.si_pid == 0) return 0; // WNOHANG: still running
    *exit_code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    return pid;
}

int32_t mp_signal(int32_t pid, int32_t signal) { return kill(pid, signal) == 0 ? 0 : -errno; }

int32_t mp_pidfd_signal(int32_t pidfd, int32_t signal) {
    return syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0) == 0 ? 0 : -errno;
}

void mp_exit_child(int32_t code) {
    fflush(NULL);
    _exit(code);
}

#ifdef MP_TSAN
// TSan dies when a forked child of a threaded process starts a thread: the caller runs unguarded.
int32_t mp_child_watchdog_arm(int64_t deadline_ns, int32_t code, const char *message, int32_t length) {
    (void)deadline_ns;
    (void)code;
    (void)message;
    (void)length;
    return -ENOTSUP;
}

void mp_child_watchdog_disarm(void) {}
#else
/// The longest watchdog message kept (a longer one is cut, and ends with a newline all the same).
#define WATCHDOG_MESSAGE_MAX 1024
/// The watchdog thread's stack: it only waits, writes and exits, all in C (no Swift, no stdio).
#define WATCHDOG_STACK (64 * 1024)

/// The watchdog's futex word (private: the thread is this process's own).
enum { WATCHDOG_IDLE = 0, WATCHDOG_ARMED = 1, WATCHDOG_FIRED = 2 };

static uint32_t watchdog_state;
static int64_t watchdog_deadline;
static int watchdog_code;
static char watchdog_message[WATCHDOG_MESSAGE_MAX];
static size_t watchdog_length;
static pthread_t watchdog_thread;

/// Writes the message and ends the process, unless disarmed first. Not mp_exit_child: the stuck
/// thread may hold a stdio stream's lock, so nothing is flushed.
static void *watchdog_run(void *unused) {
    (void)unused;
    while (MP_LOAD(&watchdog_state, MP_ACQUIRE) == WATCHDOG_ARMED) {
        if (mp_futex_wait(&watchdog_state, WATCHDOG_ARMED, watchdog_deadline, 0) != ETIMEDOUT) continue;
        uint32_t armed = WATCHDOG_ARMED;
        // Against disarm's swap: exactly one of them wins, so a disarm that saw ARMED is never fired on.
        if (!MP_CAS(&watchdog_state, &armed, WATCHDOG_FIRED, MP_ACQ_REL, MP_ACQUIRE)) break;
        size_t done = 0;
        while (done < watchdog_length) {
            ssize_t n = write(2, watchdog_message + done, watchdog_length - done);
            if (n > 0) {
                done += (size_t)n;
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else {
                break;
            }
        }
        _exit(watchdog_code);
    }
    return NULL;
}

int32_t mp_child_watchdog_arm(int64_t deadline_ns, int32_t code, const char *message, int32_t length) {
    if (MP_LOAD(&watchdog_state, MP_RELAXED) != WATCHDOG_IDLE) return -EBUSY;
    if (length < 0) return -EINVAL;
    size_t kept = (size_t)length < sizeof watchdog_message ? (size_t)length : sizeof watchdog_message;
    memcpy(watchdog_message, message, kept);
    if (kept < (size_t)length) watchdog_message[kept - 1] = '\n';
    watchdog_length = kept;
    watchdog_code = code;
    watchdog_deadline = deadline_ns < 0 ? 0 : deadline_ns; // a negative time is EINVAL to the futex
    MP_STORE(&watchdog_state, WATCHDOG_ARMED, MP_RELAXED); // pthread_create publishes all of these

    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        rc = pthread_attr_setstacksize(&attr, WATCHDOG_STACK);
        if (rc == 0) {
            // The new thread inherits this mask: with every signal blocked it never takes one of
            // the program's, and this thread gets its own mask back at once.
            sigset_t all, old;
            sigfillset(&all);
            pthread_sigmask(SIG_SETMASK, &all, &old);
            rc = pthread_create(&watchdog_thread, &attr, watchdog_run, NULL);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
        pthread_attr_destroy(&attr);
    }
    if (rc != 0) {
        MP_STORE(&watchdog_state, WATCHDOG_IDLE, MP_RELAXED);
        return -rc;
    }
    return 0;
}

void mp_child_watchdog_disarm(void) {
    if (MP_LOAD(&watchdog_state, MP_RELAXED) == WATCHDOG_IDLE) return;
    // FIRED: the thread is writing the message and _exits this process; the join waits for that.
    MP_SWAP(&watchdog_state, WATCHDOG_IDLE, MP_ACQ_REL);
    mp_futex_wake(&watchdog_state, 1, 0);
    pthread_join(watchdog_thread, NULL);
}
#endif

int32_t mp_pidfd_open(int32_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

int32_t mp_poll_readable(int32_t fd, int64_t deadline) {
    for (;;) {
        struct timespec ts, *tsp = NULL;
        if (deadline != INT64_MAX) {
            int64_t left = deadline - mp_monotonic_ns();
            if (left < 0) left = 0;
            ts.tv_sec = left / 1000000000;
            ts.tv_nsec = left % 1000000000;
            tsp = &ts;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int rc = ppoll(&p, 1, tsp, NULL);
        if (rc > 0 && (p.revents & POLLNVAL)) return -EBADF;
        if (rc > 0) return 1; // POLLIN, POLLHUP or POLLERR: nothing more will come
        if (rc == 0) return 0;
        if (errno != EINTR) return -errno;
    }
}

#ifdef MP_FAULT_INJECTION
uint32_t mp_fault_armed;
static uint32_t fault_passes_left; // this process's only: set before arming, read by its passes

void mp_fault_pass(void) {
    if (fault_passes_left > 0) {
        fault_passes_left--;
        return;
    }
    if (MP_LOAD(&mp_fault_armed, MP_RELAXED) & MP_FAULT_STOP) {
        MP_STORE(&mp_fault_armed, 0, MP_RELAXED); // once: the test resumes it to go on
        raise(SIGSTOP);
        return;
    }
    raise(SIGKILL);
    _exit(137); // not reached: SIGKILL cannot be caught
}

int32_t mp_fault_arm_after(uint32_t point, uint32_t passes) {
    fault_passes_left = passes;
    MP_STORE(&mp_fault_armed, point, MP_RELAXED);
    return 1;
}

int32_t mp_fault_arm(uint32_t point) { return mp_fault_arm_after(point, 0); }
#else
int32_t mp_fault_arm(uint32_t point) {
    (void)point;
    return 0;
}

int32_t mp_fault_arm_after(uint32_t point, uint32_t passes) {
    (void)point;
    (void)passes;
    return 0;
}
#endif

int32_t mp_stream_socketpair(int32_t *fds) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return -errno;
    fds[0] = pair[0];
    fds[1] = pair[1];
    return 0;
}

int32_t mp_pipe(int32_t *fds) {
    int pair[2];
    if (pipe2(pair, O_CLOEXEC) != 0) return -errno;
    fds[0] = pair[0];
    fds[1] = pair[1];
    return 0;
}

int32_t mp_built_with_thread_sanitizer(void) {
#ifdef MP_TSAN
    return 1;
#else
    return 0;
#endif
}

int32_t mp_cpu_affinity_count(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 0; // more CPUs than a cpu_set_t: say nothing
    return (int32_t)CPU_COUNT(&set);
}
