// Task claims of a process pool: which worker took which task, readable after the worker died.
//
// Invariants:
// - Each worker owns one 8-byte slot of a shared array (the pool's claim region) and is its only
//   writer; a replacement worker inherits the slot of the worker it replaces, and its value.
// - A worker writes its slot while it holds the task queue's consumer lock, with the task's message
//   at the head of the ring and not yet consumed (between mp_queue_get_begin and mp_queue_get_end).
//   So a message at the head whose id some slot holds was claimed by a worker that died before
//   consuming it: the next consumer drops it (the parent fails that task as the dead worker's), and
//   a task can neither be lost between "taken" and "recorded" nor run twice.
// - Task ids are unique and never 0, so a stale slot (a finished task) never matches a message.
// Orderings: the claim is a release store and readers load with acquire. A reader that matters
// (the next consumer, or the parent) reads only after the claimer died, which the kernel orders
// (the consumer lock's owner check, or waitpid); the pairing is for the live case and for TSan.
#define _GNU_SOURCE
#include "internal.h"

_Static_assert(sizeof(uint64_t) == 8, "claim slots are 8 bytes");

void mp_pool_claim(uint64_t *slot, uint64_t task) { MP_STORE(slot, task, MP_RELEASE); }

uint64_t mp_pool_slot(const uint64_t *slot) { return MP_LOAD(slot, MP_ACQUIRE); }

int mp_pool_claimed(const uint64_t *slots, uint32_t count, uint64_t task) {
    for (uint32_t i = 0; i < count; i++) {
        if (MP_LOAD(&slots[i], MP_ACQUIRE) == task) return 1;
    }
    return 0;
}
