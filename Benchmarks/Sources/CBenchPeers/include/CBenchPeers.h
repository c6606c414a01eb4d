// Peers of the engine, in C, for the benchmark only.
#ifndef C_BENCH_PEERS_H
#define C_BENCH_PEERS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {  // the C++ peers pin their processes with the helpers below
#endif

/// An opaque pthread mutex, process-shared when `shared` (placed in `memory`, at least 64 bytes).
void *bench_pthread_mutex_init(void *memory, int shared);
void bench_pthread_mutex_lock(void *mutex);
void bench_pthread_mutex_unlock(void *mutex);
/// `iterations` lock+unlock pairs in a C loop (no Swift between the calls).
void bench_pthread_mutex_loop(void *mutex, int64_t iterations);

/// A thread's set of allowed CPUs, saved while it is pinned (a cpu_set_t: the size is checked in affinity.c).
typedef struct {
    uint64_t words[16];
} bench_cpu_set_t;
/// Pins the calling thread to the `slot`-th CPU it may run on (slot 0 or 1: CPUs 0 and 1 on an
/// unrestricted machine), when it may run on at least two; its set before goes to `*saved` (empty
/// when it could not be read). 1 if pinned, 0 if left alone.
int bench_pin_thread(int slot, bench_cpu_set_t *saved);
/// Gives the calling thread back the set bench_pin_thread saved (nothing when that set is empty).
void bench_unpin_thread(const bench_cpu_set_t *saved);

/// The reference ring: a rigtorp-style single-producer/single-consumer ring of 8-byte slots with
/// cached indices, head and tail a cache line apart. Moves `messages` values from one thread to
/// another and returns messages per second.
double bench_reference_spsc(int64_t messages);
/// The same contest through the engine's ring from C (mp_queue_put, mp_queue_get_begin/get_end):
/// messages per second, or -1 if a message was lost or a call failed.
double bench_engine_spsc(int64_t messages);
/// The two threads of both contests above are pinned apart (bench_pin_thread, slots 0 and 1).

/// One thread, `iterations` times a push then a pop of the reference ring: for instruction counts.
void bench_reference_put_get(int64_t iterations);
/// One thread, `iterations` times mp_queue_put then mp_queue_get_begin/end: 0, or -1 on a lost value.
int bench_engine_put_get(int64_t iterations);

/// Dmitry Vyukov's bounded MPMC ring of 8-byte values, blocking through a futex eventcount:
/// `producers` threads put `messages` values in all, `consumers` threads get them (each side's
/// count must divide `messages`, at most 8 threads a side). Messages per second, or -1 if a value
/// was lost. One producer and one consumer are pinned apart, as the SPSC contests are.
double bench_vyukov_ring(int producers, int consumers, int64_t messages);
/// One thread, `iterations` times a put then a get of the Vyukov ring: for instruction counts.
void bench_vyukov_put_get(int64_t iterations);

/// `samples` sleeps of `duration_ns` as raw io_uring timeouts (liburing, one ring, no Swift between
/// submit and wait); each overshoot in ns goes to `overshoot_ns`. 0, or a negative errno.
int bench_uring_timeout_overshoot(int64_t duration_ns, int64_t samples, int64_t *overshoot_ns);
/// The same with clock_nanosleep(CLOCK_MONOTONIC).
void bench_nanosleep_overshoot(int64_t duration_ns, int64_t samples, int64_t *overshoot_ns);

/// A listening TCP socket on 127.0.0.1 with an ephemeral port (written to `*port`): the fd, or a
/// negative errno.
int bench_echo_listen(int backlog, int *port);
/// Echoes every connection of `listen_fd` with one epoll thread; never returns (kill the process).
void bench_echo_serve(int listen_fd);
/// One blocking client: connect to 127.0.0.1:`port`, send `bytes` (at most 4096), read them back,
/// close. 0, or a negative errno.
int bench_tcp_round_trip(int port, int bytes);

#ifdef __cplusplus
}
#endif

#endif
