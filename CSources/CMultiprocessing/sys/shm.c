// Shared-memory regions: anonymous (memfd) and named (POSIX shm), mapped MAP_SHARED.
//
// Mechanisms only: Swift decides sizes, names, ownership and when to unlink. Every call returns
// -errno (or NULL with *error) rather than touching errno's thread-local state across the boundary.
// A named region starts with an mp_region_header_t that its creator fills right after creating it
// (O_EXCL, mode 0600), magic last: an attacher that comes in between finds size 0 or magic 0, and
// waits a little for the header (SharedMemory.swift); then it checks magic, version and sizes.
//
// Anonymous regions (memfds) are sealed against shrinking and growing once sized: a process that
// truncated one would make every access past the new end fault (SIGBUS) in every process mapping
// it. A bootstrap payload is sealed against every change once written. A child accepts a region or
// a payload descriptor only if it carries those seals (mp_memfd_check): an ordinary file, a pipe,
// a named region or an unsealed memfd is not something a parent of this library handed it. Named
// regions cannot be sealed (another process attaches them by name): their truncation is a
// documented hazard (NamedSharedMemory.md).
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(sizeof(mp_region_header_t) == MP_REGION_HEADER_SIZE, "region header is 64 bytes");
_Static_assert(sizeof(mp_arena_header_t) == 64, "the arena's header fills slot 0");
_Static_assert(offsetof(mp_arena_header_t, guard) == 0, "the arena's guard leads its header");
_Static_assert(sizeof(mp_arena_slot_t) == 64, "an arena slot is one cache line");
_Static_assert(offsetof(mp_arena_slot_t, payload) == 16, "a primitive starts 16 bytes into its slot");
_Static_assert(sizeof(((mp_arena_slot_t *)0)->payload) >= 48, "the largest primitive fits a slot's payload");
_Static_assert(offsetof(mp_region_header_t, magic) == 0, "magic leads the header");

#define REGION_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
#define PAYLOAD_SEALS (F_SEAL_WRITE | REGION_SEALS)

int32_t mp_memfd_create(const char *name, uint64_t size) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)size) != 0 || fcntl(fd, F_ADD_SEALS, REGION_SEALS) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int32_t mp_memfd_create_sealed(const char *name, const void *bytes, uint64_t count) {
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) return -errno;
    uint64_t done = 0;
    while (done < count) {
        ssize_t n = pwrite(fd, (const uint8_t *)bytes + done, (size_t)(count - done), (off_t)done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int err = n < 0 ? errno : EIO;
            close(fd);
            return -err;
        }
        done += (uint64_t)n;
    }
    if (fcntl(fd, F_ADD_SEALS, PAYLOAD_SEALS) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int64_t mp_memfd_check(int32_t fd, uint64_t size, int32_t immutable) {
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) return errno == EINVAL ? -EPERM : -errno; // not a memfd: nothing of ours
    int want = immutable ? PAYLOAD_SEALS : REGION_SEALS;
    if ((seals & want) != want) return -EPERM;
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size < size) return -EINVAL;
    return (int64_t)st.st_size;
}

int32_t mp_shm_create(const char *name, uint64_t size) {
    int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    if (ftruncate(fd, (off_t)size) != 0) {
        int err = errno;
        close(fd);
        shm_unlink(name);
        return -err;
    }
    return fd;
}

int32_t mp_shm_open(const char *name) {
    int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
    return fd < 0 ? -errno : fd;
}

int32_t mp_shm_unlink(const char *name) { return shm_unlink(name) == 0 ? 0 : -errno; }

int32_t mp_shm_unlink_same(const char *name, uint64_t device, uint64_t inode) {
    int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct stat st;
    int same = fstat(fd, &st) == 0 && (uint64_t)st.st_dev == device && (uint64_t)st.st_ino == inode;
    close(fd);
    if (!same) return -ENOENT; // the name now stands for another file: not ours to remove
    return shm_unlink(name) == 0 ? 0 : -errno;
}

int64_t mp_fd_size(int32_t fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    return (int64_t)st.st_size;
}

int32_t mp_fd_private_to_owner(int32_t fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    return S_ISREG(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 077) == 0 ? 0 : -EPERM;
}

int32_t mp_fd_identity(int32_t fd, uint64_t *device, uint64_t *inode) {
    struct stat st;
    if (fstat(fd, &st) != 0) return -errno;
    *device = (uint64_t)st.st_dev;
    *inode = (uint64_t)st.st_ino;
    return 0;
}

void *mp_map_shared(int32_t fd, uint64_t size, int32_t *error) {
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        *error = errno;
        return NULL;
    }
    *error = 0;
    return p;
}

int32_t mp_unmap(void *address, uint64_t size) {
    return munmap(address, (size_t)size) == 0 ? 0 : -errno;
}

void mp_region_header_init(mp_region_header_t *h, uint64_t payload_size) {
    h->version = MP_REGION_VERSION;
    h->header_size = MP_REGION_HEADER_SIZE;
    h->payload_size = payload_size;
    h->creator_pid = (uint32_t)mp_process_id();
    h->reserved = 0;
    for (int i = 0; i < 4; i++) h->reserved2[i] = 0;
    // Magic last, with release: an attacher that sees it (acquire) sees a complete header.
    __atomic_store_n(&h->magic, MP_REGION_MAGIC, __ATOMIC_RELEASE);
}

uint64_t mp_region_header_magic(const mp_region_header_t *h) {
    return __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
}
