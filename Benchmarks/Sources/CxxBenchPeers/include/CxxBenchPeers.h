// Peers of the engine that are C++ libraries, behind C functions, for the benchmark only.
#ifndef CXX_BENCH_PEERS_H
#define CXX_BENCH_PEERS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when this build has Boost.Interprocess (make deps installs libboost-dev), else 0: without it
/// the peer below is a stub.
int bench_boost_available(void);

/// Boost.Interprocess `message_queue` between two processes: a child forked here sends `messages`
/// messages of `bytes` bytes (8 to 4096) through a queue of at most `max_messages`, this process
/// receives them. Messages per second from before the fork to the last message; -1 if a message
/// was lost or a call failed, -2 without Boost.
double bench_boost_message_queue(int64_t messages, int32_t bytes, int64_t max_messages);

#ifdef __cplusplus
}
#endif

#endif
