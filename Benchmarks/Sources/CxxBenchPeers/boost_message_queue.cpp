// The common C++ cross-process queue, Boost.Interprocess `message_queue`, as the peer of the
// engine's cross-process fixed-size row: one producer process, one consumer process.
//
// Invariants: the queue is created (and its shared memory mapped) in this process before the fork;
// the child inherits the mapping and the queue object at the same address and only sends through
// it (a process-shared pthread mutex and conditions in the shared memory), then _exit()s: nothing
// is allocated or constructed between fork and _exit, because the bench that forks has other
// threads whose locks the child would inherit held. The name is removed before and after a run.
// The two processes are pinned apart as the engine's cross-process rows are (the child to CPU slot
// 1, this thread to slot 0 while it receives), so that both rows measure the same placement.
#include "CxxBenchPeers.h"

#include "CBenchPeers.h"

#if __has_include(<boost/interprocess/ipc/message_queue.hpp>)
#include <boost/interprocess/ipc/message_queue.hpp>

#include <cstdio>
#include <cstring>
#include <csignal>
#include <ctime>
#include <sys/wait.h>
#include <unistd.h>

namespace ipc = boost::interprocess;

// The calling thread pinned to CPU slot 0 for the guard's life (affinity.c), then let go.
struct PinnedReceiver {
    bench_cpu_set_t saved;
    PinnedReceiver() { bench_pin_thread(0, &saved); }
    ~PinnedReceiver() { bench_unpin_thread(&saved); }
};

static double seconds_since(const timespec &a) {
    timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    return double(b.tv_sec - a.tv_sec) + double(b.tv_nsec - a.tv_nsec) / 1e9;
}

// The child's whole life: `messages` sends, each message's first 8 bytes its index.
[[noreturn]] static void produce(ipc::message_queue &queue, int64_t messages, int32_t bytes) {
    bench_cpu_set_t unused;
    bench_pin_thread(1, &unused);  // two system calls, no allocation: safe in a forked child
    char buffer[4096] = {};
    try {
        for (int64_t i = 0; i < messages; i++) {
            std::memcpy(buffer, &i, sizeof i);
            queue.send(buffer, size_t(bytes), 0);
        }
    } catch (...) {
        _exit(1);
    }
    _exit(0);
}

extern "C" int bench_boost_available(void) { return 1; }

extern "C" double bench_boost_message_queue(int64_t messages, int32_t bytes, int64_t max_messages) {
    if (bytes < 8 || bytes > 4096 || messages < 1 || max_messages < 1) return -1;
    char name[64];
    std::snprintf(name, sizeof name, "swift-mp-bench-mq-%d", int(getpid()));
    ipc::message_queue::remove(name);
    double result = -1;
    pid_t child = -1;
    try {
        ipc::message_queue queue(ipc::create_only, name, size_t(max_messages), size_t(bytes));
        timespec start;
        clock_gettime(CLOCK_MONOTONIC, &start);
        child = fork();
        if (child == 0) produce(queue, messages, bytes);
        if (child > 0) {
            PinnedReceiver pinned;  // after the fork: the child starts unpinned and pins itself
            char buffer[4096];
            uint64_t sum = 0;
            bool exact = true;
            for (int64_t i = 0; i < messages && exact; i++) {
                ipc::message_queue::size_type received = 0;
                unsigned priority = 0;
                queue.receive(buffer, sizeof buffer, received, priority);
                uint64_t index;
                std::memcpy(&index, buffer, sizeof index);
                sum += index;
                exact = received == ipc::message_queue::size_type(bytes);
            }
            int status = 0;
            // A receive that stopped early leaves the child blocked on a full queue: end it.
            if (!exact) kill(child, SIGKILL);
            bool clean = waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
            child = -1;
            double elapsed = seconds_since(start);
            uint64_t n = uint64_t(messages);
            if (exact && clean && sum == n * (n - 1) / 2) result = double(messages) / elapsed;
        }
    } catch (...) {
        result = -1;
        // A receive that threw leaves the child blocked on a full queue: end it.
        if (child > 0) {
            kill(child, SIGKILL);
            waitpid(child, nullptr, 0);
        }
    }
    ipc::message_queue::remove(name);
    return result;
}

#else  // no Boost headers: the bench reports the row as unavailable

extern "C" int bench_boost_available(void) { return 0; }

extern "C" double bench_boost_message_queue(int64_t, int32_t, int64_t) { return -2; }

#endif
