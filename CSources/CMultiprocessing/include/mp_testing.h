// What only the test suite calls: fault injection points (debug builds).
// Part of CMultiprocessing.h (see it for the rules every header here follows).
#ifndef MP_TESTING_H
#define MP_TESTING_H

#include <stddef.h>
#include <stdint.h>

#include "mp_base.h"
#include "mp_loop.h"

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Fault injection (tests)

/// Between a queue consumer counting a message as taken and handing its bytes back to producers.
#define MP_FAULT_QUEUE_COUNTED 1u
/// A consumer of a fragmented message: after it announced itself as its reader, after it read the
/// FIRST, after each record it read (the LAST included, before it hands the message back), and
/// after it handed back part of it to wait for the rest.
#define MP_FAULT_QUEUE_STREAM 2u
/// A barrier break (a party leaving without the guard, abort(), a guard taken from a dead holder):
/// between its check that the cycle is current and unbroken and its CAS that breaks it.
#define MP_FAULT_BARRIER_LEAVE 3u
/// A joined barrier party, the guard held: after it found the barrier still filling, before it sleeps.
#define MP_FAULT_BARRIER_SLEEP 4u
/// A barrier party, the guard held: right after it counted itself in (before it trips the barrier
/// when it is the last).
#define MP_FAULT_BARRIER_JOINED 5u
/// Or'd into a point: the process stops itself there (SIGSTOP, once) instead of dying, so that a
/// test can act while it is stopped, then SIGCONT it.
#define MP_FAULT_STOP 0x80000000u

/// Arms a fault point: the calling process SIGKILLs itself (or stops: MP_FAULT_STOP) the next
/// time it passes `point` (0 disarms). Returns 1, or 0 in builds without fault injection (release), where it does nothing.
/// A forked child inherits the armed point; arm it in the process that must die.
int32_t mp_fault_arm(uint32_t point);

/// Arms `point` to fire on its pass number `passes + 1` (0: the next pass, as mp_fault_arm).
int32_t mp_fault_arm_after(uint32_t point, uint32_t passes);

// MARK: - Processes (tests)

/// Makes the calling process a child subreaper (PR_SET_CHILD_SUBREAPER): an orphaned descendant
/// becomes its child, so that a test can find what a program it ran left behind. 0 or -errno.
int32_t mp_testing_become_subreaper(void);

/// Called in a fork server (a pool's zygote) before it serves: it SIGKILLs itself right after
/// its next fork reply is sent, as a server killed at that instant would be.
void mp_testing_server_killed_after_reply(void);

// MARK: - Event loop (tests)

/// Gives `loop`'s receive ring `count` buffers (a power of two, at most MP_RECV_BUFFERS) instead
/// of MP_RECV_BUFFERS, so that a test can run them out. Only before the loop's first receive, from
/// the loop's thread; returns 0, or -EINVAL.
int32_t mp_testing_loop_recv_buffers(mp_loop_t *_Nonnull loop, uint32_t count);
/// How many of `loop`'s receive buffers it has handed to the kernel so far (0 before its first
/// receive). Read on the loop's thread.
uint32_t mp_testing_loop_recv_buffers_out(const mp_loop_t *_Nonnull loop);

/// 1 in a ThreadSanitizer build of the C target: tests that fork closure children from several
/// threads at once (TSan's own locks are not fork-safe there) run only in the other builds.
int32_t mp_built_with_thread_sanitizer(void);

/// The calling thread's timer slack in nanoseconds (PR_GET_TIMERSLACK).
int64_t mp_timer_slack_ns(void);

#ifdef __cplusplus
}
#endif

#endif
