"""Python peers of the benchmark, one measurement per call; prints one number on stdout.

Run by the Swift harness (Benchmarks/Sources/Bench) so that Python and Swift are measured in the same
invocation, interleaved. Each case times only its measured loop, after a short warm-up.
"""
import multiprocessing
import sys


def expect(got, wanted, what):
    """A run that lost, doubled or changed something measures nothing: it fails instead."""
    if got != wanted:
        raise SystemExit(f"{what}: got {got}, expected {wanted}")
import threading
import time


def lock_uncontended(kind, n):
    lock = threading.Lock() if kind == "threading" else multiprocessing.Lock()
    acquire, release = lock.acquire, lock.release
    for _ in range(1000):
        acquire(); release()
    start = time.perf_counter_ns()
    for _ in range(n):
        acquire(); release()
    return (time.perf_counter_ns() - start) / n  # ns per pair


def _count(lock, counter, n):
    for _ in range(n):
        with lock:
            counter[0] += 1


def lock_threads(n):
    lock, counter = threading.Lock(), [0]
    threads = [threading.Thread(target=_count, args=(lock, counter, n)) for _ in range(2)]
    start = time.perf_counter_ns()
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.perf_counter_ns() - start
    expect(counter[0], 2 * n, "lock-threads counter")
    return 2 * n / (elapsed / 1e9)  # pairs per second


def _count_shared(lock, value, n):
    for _ in range(n):
        with lock:
            value.value += 1


def lock_processes(n):
    ctx = multiprocessing.get_context("fork")
    lock, value = ctx.Lock(), ctx.Value("q", 0, lock=False)
    procs = [ctx.Process(target=_count_shared, args=(lock, value, n)) for _ in range(2)]
    start = time.perf_counter_ns()
    for p in procs: p.start()
    for p in procs: p.join()
    elapsed = time.perf_counter_ns() - start
    expect(value.value, 2 * n, "lock-processes counter")
    return 2 * n / (elapsed / 1e9)


def _put_many(q, n, size):
    message = b"x" * size
    for _ in range(n):
        q.put(message)


def mp_queue(n, size, kind="queue"):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue() if kind == "queue" else ctx.SimpleQueue()
    producer = ctx.Process(target=_put_many, args=(q, n, size))
    start = time.perf_counter_ns()
    producer.start()
    got = 0
    for _ in range(n):
        got += len(q.get())  # the Swift rows check what they get too
    producer.join()
    elapsed = time.perf_counter_ns() - start
    expect(got, n * size, "queue bytes")
    return n / (elapsed / 1e9)


def _put_objects(q, n):
    payload = bytes(32)
    for i in range(n):
        q.put({"id": 7, "sequence": i, "payload": payload})


def mp_queue_object(n):
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    producer = ctx.Process(target=_put_objects, args=(q, n))
    start = time.perf_counter_ns()
    producer.start()
    got = 0
    for _ in range(n):
        got += q.get()["sequence"]
    producer.join()
    elapsed = time.perf_counter_ns() - start
    expect(got, n * (n - 1) // 2, "queue sequence sum")
    return n / (elapsed / 1e9)


def _send_many(conn, n, size):
    message = b"x" * size
    for _ in range(n):
        conn.send_bytes(message)


def mp_pipe(n, size):
    ctx = multiprocessing.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    producer = ctx.Process(target=_send_many, args=(writer, n, size))
    start = time.perf_counter_ns()
    producer.start()
    got = 0
    for _ in range(n):
        got += len(reader.recv_bytes())
    producer.join()
    elapsed = time.perf_counter_ns() - start
    expect(got, n * size, "pipe bytes")
    return n / (elapsed / 1e9)


def _echo(conn, n):
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())


def pipe_pingpong(n):
    """Round trips of 8 bytes over a duplex Pipe to a forked echo process: 'p50 p99' in ns."""
    ctx = multiprocessing.get_context("fork")
    a, b = ctx.Pipe()
    echo = ctx.Process(target=_echo, args=(b, n))
    echo.start()
    samples = []
    message = b"12345678"
    for _ in range(n):
        start = time.perf_counter_ns()
        a.send_bytes(message)
        a.recv_bytes()
        samples.append(time.perf_counter_ns() - start)
    echo.join()
    samples.sort()
    return f"{samples[len(samples) // 2]} {samples[int(len(samples) * 0.99)]}"


def thread_queue(n, producers, consumers):
    """queue.Queue between threads: messages per second (8-byte ints)."""
    import queue as queue_module
    q = queue_module.Queue()
    per_producer, per_consumer = n // producers, n // consumers

    def produce():
        put = q.put
        for i in range(per_producer):
            put(i)

    sums = []

    def consume():
        get, total = q.get, 0
        for _ in range(per_consumer):
            total += get()
        sums.append(total)

    threads = [threading.Thread(target=produce) for _ in range(producers)]
    threads += [threading.Thread(target=consume) for _ in range(consumers)]
    start = time.perf_counter_ns()
    for t in threads: t.start()
    for t in threads: t.join()
    elapsed = time.perf_counter_ns() - start
    expect(sum(sums), producers * (per_producer * (per_producer - 1) // 2), "queue value sum")
    return n / (elapsed / 1e9)


CASES = {
    "thread-queue": lambda args: thread_queue(int(args[0]), int(args[1]), int(args[2])),
    "pipe-pingpong": lambda args: pipe_pingpong(int(args[0])),
    "mp-queue": lambda args: mp_queue(int(args[0]), int(args[1])),
    "mp-simplequeue": lambda args: mp_queue(int(args[0]), int(args[1]), "simple"),
    "mp-queue-object": lambda args: mp_queue_object(int(args[0])),
    "mp-pipe": lambda args: mp_pipe(int(args[0]), int(args[1])),
    "lock-uncontended": lambda args: lock_uncontended(args[0], int(args[1])),
    "lock-threads": lambda args: lock_threads(int(args[0])),
    "lock-processes": lambda args: lock_processes(int(args[0])),
}

if __name__ == "__main__":
    sys.path.insert(0, __import__("os").path.dirname(__file__))
    from peers_pool_async import CASES as POOL_CASES
    from peers_start import CASES as START_CASES
    CASES.update(POOL_CASES)
    CASES.update(START_CASES)
    print(CASES[sys.argv[1]](sys.argv[2:]))
