// CMultiprocessing: the C mechanisms under `import Multiprocessing`.
//
// Only stdint/stddef here: importing libc types through two modules breaks clean builds, so every
// libc type crossing this boundary is spelled as a fixed-width integer. Every struct lives in memory
// that may be shared between processes; its fields are plain integers that only the C side touches
// atomically (Swift cannot see `_Atomic` fields). Layouts are pinned with `_Static_assert` in the .c
// files. Each exported name starts with `mp_`.
#ifndef C_MULTIPROCESSING_H
#define C_MULTIPROCESSING_H

// The topic headers, each over one folder of the sources; together, everything Swift calls.
#include "mp_base.h"
#include "mp_sys.h"
#include "mp_sync.h"
#include "mp_queue.h"
#include "mp_queue_straight.h"
#include "mp_loop.h"
#include "mp_testing.h"

#endif
