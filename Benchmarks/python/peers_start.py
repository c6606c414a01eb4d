"""Python peers of the start suite (imported by peers.py): how soon a new process does work.

The first pool or child of each call is a warm-up off the clock: under forkserver it starts the
server, so the figures are the start of a worker, as the engine's are. Joins are off the clock too.
"""
import multiprocessing
import time


def _double(x):
    return x * 2


def pool_start(method, pools, workers):
    """Mean ms from Pool(workers) to its first apply result, over `pools` pools one after another."""
    ctx = multiprocessing.get_context(method)
    elapsed = 0
    for i in range(pools + 1):
        start = time.perf_counter_ns()
        pool = ctx.Pool(workers)
        first = pool.apply(_double, (21,))
        took = time.perf_counter_ns() - start
        pool.close()
        pool.join()
        if first != 42:
            raise RuntimeError(f"a new pool answered {first} for 21 * 2")
        if i:
            elapsed += took
    return elapsed / pools / 1e6


def _ready(conn):
    conn.send_bytes(b"1")


def child_start(method, children):
    """Mean ms from Process.start() to the child's first byte on a Pipe, over `children` children."""
    ctx = multiprocessing.get_context(method)
    reader, writer = ctx.Pipe(duplex=False)
    elapsed = 0
    for i in range(children + 1):
        child = ctx.Process(target=_ready, args=(writer,))
        start = time.perf_counter_ns()
        child.start()
        if not reader.poll(30):
            raise RuntimeError(f"{child.name} did not run in 30 s")
        reader.recv_bytes()
        took = time.perf_counter_ns() - start
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"{child.name} ended with exit code {child.exitcode}")
        if i:
            elapsed += took
    return elapsed / children / 1e6


CASES = {
    "pool-start": lambda a: pool_start(a[0], int(a[1]), int(a[2])),
    "child-start": lambda a: child_start(a[0], int(a[1])),
}
