#include "CBenchPeers.h"

#include <pthread.h>
#include <string.h>

_Static_assert(sizeof(pthread_mutex_t) <= 64, "the bench places a pthread mutex in 64 bytes");

void *bench_pthread_mutex_init(void *memory, int shared) {
    pthread_mutex_t *m = memory;
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    if (shared) pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return m;
}

void bench_pthread_mutex_lock(void *mutex) { pthread_mutex_lock(mutex); }
void bench_pthread_mutex_unlock(void *mutex) { pthread_mutex_unlock(mutex); }

void bench_pthread_mutex_loop(void *mutex, int64_t iterations) {
    for (int64_t i = 0; i < iterations; i++) {
        pthread_mutex_lock(mutex);
        pthread_mutex_unlock(mutex);
    }
}
