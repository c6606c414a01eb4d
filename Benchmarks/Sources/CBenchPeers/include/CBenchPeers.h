// Peers of the engine, in C, for the benchmark only.
#ifndef C_BENCH_PEERS_H
#define C_BENCH_PEERS_H

#include <stdint.h>

/// An opaque pthread mutex, process-shared when `shared` (placed in `memory`, at least 64 bytes).
void *bench_pthread_mutex_init(void *memory, int shared);
void bench_pthread_mutex_lock(void *mutex);
void bench_pthread_mutex_unlock(void *mutex);
/// `iterations` lock+unlock pairs in a C loop (no Swift between the calls).
void bench_pthread_mutex_loop(void *mutex, int64_t iterations);

/// The reference ring: a rigtorp-style single-producer/single-consumer ring of 8-byte slots with
/// cached indices, head and tail a cache line apart. Moves `messages` values from one thread to
/// another and returns messages per second.
double bench_reference_spsc(int64_t messages);

#endif
