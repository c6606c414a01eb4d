// The resource tracker: a process that unlinks the named shared-memory objects a program leaves
// behind when its processes die without unlinking them (Python's multiprocessing.resource_tracker).
// Mechanism only: Swift decides what to register, when to start a tracker and when to replace one.
//
// Invariants:
// - One tracker serves every process that holds the write end of its socketpair(AF_UNIX,
//   SOCK_SEQPACKET): the process that started it, its forked children (inherited), spawned children
//   (passed on and adopted). SEQPACKET keeps each message whole and in send order, however many
//   processes write; a send blocks while the tracker's queue is full, it never splits.
// - The tracker reads until no process holds the write end any more (the program's last process has
//   ended, however it ended), then unlinks the names still registered and exits. It holds nothing
//   else of the program: it closes every other descriptor and unmaps every shared mapping it
//   inherited (it would keep the program's regions alive until the end), ignores SIGINT, SIGTERM,
//   SIGHUP and SIGPIPE, and leaves the program's process group, so a signal meant for the program
//   does not take its cleaner down with it. Both hold from the moment mp_tracker_start returns:
//   the parent moves the child to its own group itself, and signals stay blocked in the child
//   until its dispositions are set.
// - The tracker is forked from a process that may have other threads and never returns to Swift: it
//   calls only system-call wrappers that take no lock another thread could have held at the fork,
//   and keeps its table in mmap'd memory (no malloc, no stdio). A forked child's copy of the parent's private memory stays with it (copy-on-write pages
//   the parent later changes are duplicated), which an exec'd tracker would avoid.
// - Messages come from other processes and are input: each one's size, magic, kind and name are
//   checked, and a wrong one is dropped. SO_PASSCRED is set before any client exists, so every real
//   message carries its sender's credentials: the end of the stream (a zero-byte read without them)
//   is told apart from an empty message. (The sender's uid is not checked: only holders of the
//   write end can send, and a program that drops privileges after starting the tracker must still
//   be heard.) The control buffer has room for the credentials only, so descriptors sent along are
//   never installed (one would keep the tracker's own write end open: it would never see the end).
// - A registration names a file, not just a name: (name, device, inode). At the end the tracker
//   opens each name and unlinks it only if it still is that file, so a name unlinked and re-created
//   since (by this program or another) is left alone, whatever order the messages came in. The check
//   and the unlink are two calls: a re-creation between them, at the program's very end, is not
//   guarded against.
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/// The bytes "MPT1" on a little-endian machine: the wire format and its version (a spawned child
/// may run another build of this library).
#define TRACKER_MAGIC 0x3154504du
/// Registrations one tracker keeps at most (~280 MiB of table); past it, new ones are dropped.
#define TRACKER_MAX_NAMES (1u << 20)

/// One message: this header, then `length` name bytes without a NUL.
typedef struct tracker_message {
    uint32_t magic;
    uint16_t kind;
    uint16_t length;
    uint64_t device;
    uint64_t inode;
    char name[MP_TRACKER_NAME_MAX];
} tracker_message_t;

#define TRACKER_HEADER_SIZE offsetof(tracker_message_t, name)
_Static_assert(offsetof(tracker_message_t, name) == 24, "the wire header is 24 bytes, no padding");
_Static_assert(MP_TRACKER_NAME_MAX <= UINT16_MAX, "a name's length fits the header's field");
_Static_assert(MP_TRACKER_NAME_MAX < 255, "glibc's shm_open takes names shorter than NAME_MAX");

/// One registration in the tracker's table.
typedef struct tracked {
    uint64_t device;
    uint64_t inode;
    uint16_t length;
    char name[MP_TRACKER_NAME_MAX + 1]; // NUL-terminated, for shm_open/shm_unlink
} tracked_t;

// The tracker process's table (unused in its clients).
static tracked_t *table;
static size_t table_count, table_capacity;

/// A POSIX shared-memory path: "/" and 1 to MP_TRACKER_NAME_MAX - 1 bytes, none of them '/' or NUL,
/// and not "." or "..".
static int name_is_valid(const char *name, size_t length) {
    if (length < 2 || length > MP_TRACKER_NAME_MAX || name[0] != '/') return 0;
    if (name[1] == '.' && (length == 2 || (length == 3 && name[2] == '.'))) return 0;
    for (size_t i = 1; i < length; i++) {
        if (name[i] == '/' || name[i] == '\0') return 0;
    }
    return 1;
}

static tracked_t *table_find(const tracker_message_t *m) {
    for (size_t i = 0; i < table_count; i++) {
        tracked_t *t = &table[i];
        if (t->inode == m->inode && t->device == m->device && t->length == m->length &&
            memcmp(t->name, m->name, m->length) == 0)
            return t;
    }
    return NULL;
}

static void table_add(const tracker_message_t *m) {
    if (table_find(m) != NULL) return;
    if (table_count == table_capacity) {
        size_t capacity = table_capacity ? table_capacity * 2 : 64;
        if (capacity > TRACKER_MAX_NAMES) return;
        void *grown = table_capacity
                          ? mremap(table, table_capacity * sizeof *table, capacity * sizeof *table, MREMAP_MAYMOVE)
                          : mmap(NULL, capacity * sizeof *table, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (grown == MAP_FAILED) return; // out of memory: this one goes untracked
        table = grown;
        table_capacity = capacity;
    }
    tracked_t *t = &table[table_count++];
    t->device = m->device;
    t->inode = m->inode;
    t->length = m->length;
    memcpy(t->name, m->name, m->length);
    t->name[m->length] = '\0';
}

static void table_remove(const tracker_message_t *m) {
    tracked_t *t = table_find(m);
    if (t != NULL) *t = table[--table_count];
}

/// The end of the program: unlinks each registered name that still is the registered file.
static void unlink_registered(void) {
    for (size_t i = 0; i < table_count; i++) {
        int fd = shm_open(table[i].name, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0) continue; // unlinked by its owner, or not ours to open
        struct stat st;
        int same = fstat(fd, &st) == 0 && (uint64_t)st.st_dev == table[i].device &&
                   (uint64_t)st.st_ino == table[i].inode;
        close(fd);
        if (same) shm_unlink(table[i].name);
    }
}

static void handle(const tracker_message_t *m, size_t size) {
    if (size < TRACKER_HEADER_SIZE || m->magic != TRACKER_MAGIC) return;
    if (size != TRACKER_HEADER_SIZE + m->length || !name_is_valid(m->name, m->length)) return;
    if (m->kind == MP_TRACKER_REGISTER) table_add(m);
    else if (m->kind == MP_TRACKER_UNREGISTER) table_remove(m);
}

/// The sender's credentials (present on every message, absent at the end of the stream), or NULL.
/// Closes any descriptor that came along all the same.
static const struct ucred *credentials(struct msghdr *h) {
    const struct ucred *found = NULL;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level != SOL_SOCKET) continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
            found = (const struct ucred *)(void *)CMSG_DATA(c);
        } else if (c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(c) + i * sizeof fd, sizeof fd);
                close(fd);
            }
        }
    }
    return found;
}

/// Reads messages until the end of the stream.
static void serve(int fd) {
    for (;;) {
        tracker_message_t m;
        union {
            struct cmsghdr align;
            char bytes[CMSG_SPACE(sizeof(struct ucred))];
        } control;
        struct iovec iov = {.iov_base = &m, .iov_len = sizeof m};
        struct msghdr h = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes,
                           .msg_controllen = sizeof control.bytes};
        ssize_t n = recvmsg(fd, &h, MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == ENOMEM || errno == ENOBUFS) { // the kernel is short of memory: try again soon
                mp_sleep_until(mp_monotonic_ns() + 10000000);
                continue;
            }
            return;
        }
        if (credentials(&h) == NULL) {
            if (n == 0) return; // no message: every write end is closed
            continue;
        }
        if (h.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) continue;
        handle(&m, (size_t)n);
    }
}

/// Parses the hexadecimal number at `p`, stopping at the first other character.
static const char *parse_hex(const char *p, const char *end, uintptr_t *value) {
    uintptr_t v = 0;
    for (; p < end; p++) {
        char c = *p;
        if (c >= '0' && c <= '9') v = v * 16 + (uintptr_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v = v * 16 + (uintptr_t)(c - 'a' + 10);
        else break;
    }
    *value = v;
    return p;
}

/// Collects the address ranges of up to `max` shared mappings of this process from
/// /proc/self/maps (lines "start-end perms ...", perms like "rw-s"). Returns how many (0 without
/// /proc: nothing can be done then).
static int shared_mappings(uintptr_t (*ranges)[2], int max) {
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    char buffer[8192]; // longer than any line (its path is at most PATH_MAX)
    size_t held = 0;
    int found = 0;
    for (;;) {
        ssize_t n = read(fd, buffer + held, sizeof buffer - held);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        held += (size_t)n;
        char *line = buffer, *end = buffer + held, *newline;
        while ((newline = memchr(line, '\n', (size_t)(end - line))) != NULL) {
            uintptr_t start, stop;
            const char *p = parse_hex(line, newline, &start);
            if (p < newline && *p == '-') p = parse_hex(p + 1, newline, &stop);
            else stop = 0;
            if (newline - p > 4 && p[4] == 's' && stop > start && found < max) {
                ranges[found][0] = start;
                ranges[found][1] = stop;
                found++;
            }
            line = newline + 1;
        }
        held = (size_t)(end - line);
        memmove(buffer, line, held);
        if (held == sizeof buffer) held = 0; // cannot happen (see the buffer's size); never stall
    }
    close(fd);
    return found;
}

/// Unmaps every shared mapping (the program's regions, rings), in passes of up to 256.
static void unmap_shared_mappings(void) {
    uintptr_t ranges[256][2];
    int found;
    do {
        found = shared_mappings(ranges, 256);
        for (int i = 0; i < found; i++) munmap((void *)ranges[i][0], ranges[i][1] - ranges[i][0]);
    } while (found == 256);
}

/// Closes every descriptor but `keep`; returns the number `keep` ends up with (0 if it could move).
static int close_all_but(int keep) {
    if (keep != 0 && dup2(keep, 0) == 0) keep = 0; // then one close_range does the rest
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) == 0 &&
        (keep == 0 || syscall(SYS_close_range, 0u, (unsigned)keep - 1, 0u) == 0))
        return keep;
#endif
    long limit = sysconf(_SC_OPEN_MAX); // kernel < 5.9: one by one
    for (int fd = 0; fd < (limit > 0 ? limit : 1024); fd++) {
        if (fd != keep) close(fd);
    }
    return keep;
}

static _Noreturn void tracker_main(int fd) {
    prctl(PR_SET_NAME, "mp-tracker", 0, 0, 0);
    // Inherited handlers point into the parent's code (Swift's crash handler among them): default
    // for everything, but the signals a program's group or terminal gets, which are ignored.
    struct sigaction ignore = {.sa_handler = SIG_IGN}, fallback = {.sa_handler = SIG_DFL};
    for (int s = 1; s < NSIG; s++) {
        int ignored = s == SIGINT || s == SIGTERM || s == SIGHUP || s == SIGPIPE;
        if (s != SIGKILL && s != SIGSTOP) sigaction(s, ignored ? &ignore : &fallback, NULL);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); // blocked since before the fork; now ignored or default
    setpgid(0, 0); // also done by the parent: whichever runs first
    fd = close_all_but(fd);
    unmap_shared_mappings();
    serve(fd);
    unlink_registered();
    _exit(0);
}

int32_t mp_tracker_start(int32_t *write_fd) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return -errno;
    int on = 1;
    if (setsockopt(pair[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on) != 0) {
        int err = errno;
        close(pair[0]);
        close(pair[1]);
        return -err;
    }
    // Signals stay blocked from before the fork until the child has set its dispositions: a SIGINT
    // to the program's group in between must not kill the child, which inherits the parent's.
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = fork();
    if (pid == 0) tracker_main(pair[0]);
    int err = errno;
    // Out of the caller's group before this returns (the child does it too, maybe later): a signal
    // to the program's group right after must not reach the tracker.
    if (pid > 0) setpgid(pid, pid);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    close(pair[0]);
    if (pid < 0) {
        close(pair[1]);
        return -err;
    }
    *write_fd = pair[1];
    return pid;
}

int32_t mp_tracker_send(int32_t fd, uint32_t kind, const char *name, uint64_t device, uint64_t inode) {
    size_t length = strnlen(name, MP_TRACKER_NAME_MAX + 1);
    if ((kind != MP_TRACKER_REGISTER && kind != MP_TRACKER_UNREGISTER) || !name_is_valid(name, length))
        return -EINVAL;
    tracker_message_t m = {
        .magic = TRACKER_MAGIC, .kind = (uint16_t)kind, .length = (uint16_t)length, .device = device, .inode = inode};
    memcpy(m.name, name, length);
    size_t size = TRACKER_HEADER_SIZE + length;
    for (;;) {
        ssize_t n = send(fd, &m, size, MSG_NOSIGNAL);
        if (n >= 0) return (size_t)n == size ? 0 : -EMSGSIZE; // SEQPACKET: whole or nothing
        if (errno != EINTR) return -errno;
    }
}

int32_t mp_tracker_adopt(int32_t fd) {
    int type = 0;
    socklen_t size = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) != 0) return -errno;
    if (type != SOCK_SEQPACKET) return -EPROTOTYPE;
    // exec cleared it (the spawn kept the descriptor): this process's own spawns pass it on explicitly
    return fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 ? 0 : -errno;
}
