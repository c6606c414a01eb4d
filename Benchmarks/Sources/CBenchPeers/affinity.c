// Pinning for the two-sided contests (SPSC rings, contended locks): each side on a CPU of its own,
// so a run does not depend on where the scheduler happens to put the two threads.
//
// Invariants: a thread is pinned only when its allowed set holds at least two CPUs, and then to
// the `slot`-th CPU of that set (slots 0 and 1: CPUs 0 and 1 on an unrestricted machine); the set
// it had before is saved by the caller and given back with bench_unpin_thread, so a pinned
// measuring thread (the bench's main thread) leaves the contest as it came in. A new thread
// inherits its creator's set, so a creator pins itself only after starting the other side.
#define _GNU_SOURCE  // sched_getaffinity, CPU_* macros
#include "CBenchPeers.h"

#include <sched.h>
#include <string.h>

_Static_assert(sizeof(bench_cpu_set_t) == sizeof(cpu_set_t), "bench_cpu_set_t holds a cpu_set_t");
_Static_assert(_Alignof(bench_cpu_set_t) >= _Alignof(cpu_set_t), "and is aligned as one");

int bench_pin_thread(int slot, bench_cpu_set_t *saved) {
    memset(saved, 0, sizeof *saved);  // an empty set: bench_unpin_thread leaves the thread alone
    cpu_set_t allowed;
    // pid 0: the calling thread, not the whole process (sched_*affinity act on one task).
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return 0;
    memcpy(saved, &allowed, sizeof allowed);
    if (slot < 0 || CPU_COUNT(&allowed) < 2) return 0;
    int seen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed) || seen++ != slot) continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        return sched_setaffinity(0, sizeof one, &one) == 0;
    }
    return 0;  // fewer than slot + 1 CPUs allowed
}

void bench_unpin_thread(const bench_cpu_set_t *saved) {
    cpu_set_t set;
    memcpy(&set, saved, sizeof set);
    if (CPU_COUNT(&set) > 0) sched_setaffinity(0, sizeof set, &set);
}
