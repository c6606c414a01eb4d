// Status codes and the clock: what every other header uses.
// Part of CMultiprocessing.h (see it for the rules every header here follows).
#ifndef MP_BASE_H
#define MP_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Status codes

/// Outcome of a blocking or trying operation. Errors that are the caller's fault (a bad argument)
/// are caught in Swift before the call; these are the outcomes of a well-formed call.
typedef int32_t mp_status_t;
#define MP_OK 0
/// The deadline passed first.
#define MP_TIMED_OUT 1
/// A non-blocking try found the object taken.
#define MP_BUSY 2
/// The lock was acquired, but its previous owner died holding it (like a robust mutex's EOWNERDEAD).
#define MP_OWNER_DIED 3
/// Release of something the caller does not hold.
#define MP_NOT_HELD 4
/// A counter would pass its limit (bounded semaphore, recursion depth).
#define MP_OVERFLOW 5
/// The barrier is broken (aborted, reset while waiting, or a waiter timed out).
#define MP_BROKEN 6
/// The queue has been shut down.
#define MP_SHUTDOWN 7
/// A message was abandoned midway (its producer died): the caller should read the next one.
#define MP_ABORTED 8
/// A queue's shared state broke this process's checks (another process wrote into it out of turn):
/// the operation did nothing, and the queue refuses every later one in this process.
#define MP_CORRUPTED 9

/// Every blocking call takes an absolute deadline on the monotonic clock (mp_monotonic_ns), in
/// nanoseconds: MP_FOREVER never passes, MP_NOW (or any deadline already past) means "do not
/// wait": try once.
#define MP_FOREVER 0x7fffffffffffffffLL
#define MP_NOW 0

// MARK: - Time

/// The monotonic clock in nanoseconds.
int64_t mp_monotonic_ns(void);
/// Sleeps on the monotonic clock until `deadline_ns`, with a timer slack of 1 ns (the caller's
/// slack is restored afterwards); 0, or -errno (EINTR is retried).
int32_t mp_sleep_until(int64_t deadline_ns);

#ifdef __cplusplus
}
#endif

#endif
