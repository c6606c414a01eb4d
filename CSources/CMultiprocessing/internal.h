// Private helpers shared by the C files: atomics on plain integer fields, futex calls, deadlines.
//
// Atomics use the __atomic builtins on plain uint32_t fields (Swift cannot see _Atomic fields);
// every word placed in shared memory must be lock-free, checked below, so that two processes agree.
#ifndef MP_INTERNAL_H
#define MP_INTERNAL_H

#include "CMultiprocessing.h"

#include <errno.h>
#include <stdint.h>
#include <time.h>

_Static_assert(__atomic_always_lock_free(sizeof(uint32_t), 0), "futex words must be lock-free");
_Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0), "64-bit counters must be lock-free");

#define MP_LOAD(p, order) __atomic_load_n((p), (order))
#define MP_STORE(p, v, order) __atomic_store_n((p), (v), (order))
#define MP_CAS(p, expected, desired, success, failure)                                             \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, (success), (failure))
#define MP_SWAP(p, v, order) __atomic_exchange_n((p), (v), (order))
#define MP_ADD(p, v, order) __atomic_fetch_add((p), (v), (order))
#define MP_SUB(p, v, order) __atomic_fetch_sub((p), (v), (order))

#define MP_RELAXED __ATOMIC_RELAXED
#define MP_ACQUIRE __ATOMIC_ACQUIRE
#define MP_RELEASE __ATOMIC_RELEASE
#define MP_ACQ_REL __ATOMIC_ACQ_REL
#define MP_SEQ_CST __ATOMIC_SEQ_CST

#define MP_LIKELY(x) __builtin_expect(!!(x), 1)
#define MP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MP_COLD __attribute__((cold, noinline))

/// How many times a waiter re-reads a word before parking (loads only, with a pause hint).
#define MP_SPIN_LIMIT 100

/// How often a waiter checks that the holder of what it waits for still lives (a Lock's owner, a
/// queue lock's holder, a fragment's producer or reader): every wait of the library, blocking or
/// awaited, uses this one period (OwnerDeath.md promises a death noticed within 100 ms).
#define MP_OWNER_CHECK_NS (20 * 1000 * 1000)

static inline void mp_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// A full barrier (store-load ordering) for the Dekker handshakes between a publisher and a
/// sleeper. On x86-64 a locked add to the stack is cheaper than MFENCE and orders the same (the
/// Linux kernel's smp_mb); ThreadSanitizer gets the C11 fence, which it understands.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define MP_TSAN 1
#endif
#endif
static inline void mp_full_barrier(void) {
#if defined(__x86_64__) && !defined(MP_TSAN)
    __asm__ __volatile__("lock; addl $0,-8(%%rsp)" ::: "memory", "cc");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/// A full barrier placed right after an atomic read-modify-write (the lock release's swap) that
/// must order the stores before that RMW against the loads after it. On x86-64 the RMW is a locked
/// instruction and already is that barrier, so only the compiler must be stopped (the kernel's
/// smp_mb__after_atomic); elsewhere, and under ThreadSanitizer, the C11 fence.
static inline void mp_barrier_after_rmw(void) {
#if defined(__x86_64__) && !defined(MP_TSAN)
    __asm__ __volatile__("" ::: "memory");
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/// Refreshes this file's per-process state in a new child: the tid/pid caches, and the fork
/// generation that makes stale private locks re-initialise (futex.c). Run by glibc's fork through
/// pthread_atfork, and by the fork servers after their clone (forkserver.c).
void mp_after_fork_in_child(void);

/// A point where a test can make this process die (see mp_fault_arm): compiled in debug builds only,
/// where it costs one relaxed load.
#ifdef MP_FAULT_INJECTION
extern uint32_t mp_fault_armed;
/// Dies (or stops once: MP_FAULT_STOP), or counts one pass down when passes are left
/// (mp_fault_arm_after).
void mp_fault_pass(void);
#define MP_FAULT_POINT(point)                                                                      \
    do {                                                                                           \
        if (MP_UNLIKELY((MP_LOAD(&mp_fault_armed, MP_RELAXED) & ~MP_FAULT_STOP) == (point)))       \
            mp_fault_pass();                                                                       \
    } while (0)
#else
#define MP_FAULT_POINT(point) ((void)0)
#endif


/// Sleeps while `*word == expected`, until woken or `deadline_ns` (absolute, monotonic).
/// Returns 0 (woken, or value changed: EAGAIN), or ETIMEDOUT. EINTR reads as a spurious wake-up.
int mp_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline_ns, int shared);
/// Wakes up to `count` sleepers on `word`.
void mp_futex_wake(uint32_t *word, uint32_t count, int shared);

/// See mutex.c: a coroutine's wait for a process-owned mutex to come free (the queues' locks).
__attribute__((visibility("hidden"))) mp_status_t mp_mutex_await_free(mp_mutex_t *m, mp_async_wait_t *w);

/// Fills an async wait's word: what a coroutine waits on (the loop's IORING_OP_FUTEX_WAIT) while
/// it holds `expected`. Each primitive's file says which word and value (see mp_async_wait_t).
static inline void mp_async_wait_on(mp_async_wait_t *w, uint32_t *word, uint32_t expected, uint32_t shared) {
    w->word = word;
    w->expected = expected;
    w->shared = shared;
}

#endif
