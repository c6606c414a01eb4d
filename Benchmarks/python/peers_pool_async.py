"""Python peers of the pool, sleep and sync-vs-async suites (imported by peers.py)."""
import asyncio
import concurrent.futures
import multiprocessing
import resource
import socket
import sys
import threading
import time


def _double(x):
    return x * 2


def pool_apply_async(n, workers):
    """Trivial tasks per second through Pool.apply_async (results collected with get)."""
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_double, range(workers))  # the workers are up
        start = time.perf_counter_ns()
        handles = [pool.apply_async(_double, (i,)) for i in range(n)]
        for i, h in enumerate(handles):  # each checked, as the engine's rows check theirs
            if h.get() != 2 * i:
                raise SystemExit(f"task {i}: wrong result")
        return n / ((time.perf_counter_ns() - start) / 1e9)


def pool_map(n, workers, chunk):
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_double, range(workers))
        start = time.perf_counter_ns()
        out = pool.map(_double, range(n), chunksize=chunk)
        elapsed = time.perf_counter_ns() - start
        if len(out) != n or out[-1] != 2 * (n - 1):
            raise SystemExit("map lost results")
        return n / (elapsed / 1e9)


def process_pool_executor(n, workers):
    """Trivial tasks per second through ProcessPoolExecutor.submit."""
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as ex:
        list(ex.map(_double, range(workers)))
        start = time.perf_counter_ns()
        futures = [ex.submit(_double, i) for i in range(n)]
        for i, f in enumerate(futures):
            if f.result() != 2 * i:
                raise SystemExit(f"task {i}: wrong result")
        return n / ((time.perf_counter_ns() - start) / 1e9)


def thread_pool(n, workers):
    """Trivial tasks per second through multiprocessing.pool.ThreadPool.apply_async."""
    from multiprocessing.pool import ThreadPool
    with ThreadPool(workers) as pool:
        start = time.perf_counter_ns()
        handles = [pool.apply_async(_double, (i,)) for i in range(n)]
        for i, h in enumerate(handles):  # each checked, as the engine's rows check theirs
            if h.get() != 2 * i:
                raise SystemExit(f"task {i}: wrong result")
        return n / ((time.perf_counter_ns() - start) / 1e9)


def thread_pool_executor(n, workers):
    with concurrent.futures.ThreadPoolExecutor(workers) as ex:
        start = time.perf_counter_ns()
        futures = [ex.submit(_double, i) for i in range(n)]
        for i, f in enumerate(futures):
            if f.result() != 2 * i:
                raise SystemExit(f"task {i}: wrong result")
        return n / ((time.perf_counter_ns() - start) / 1e9)


def asyncio_sleep_overshoot(duration_ns, samples):
    """'p50 p99' overshoot in ns of asyncio.sleep(duration), one after another."""
    async def main():
        seconds = duration_ns / 1e9
        out = []
        for _ in range(samples):
            start = time.perf_counter_ns()
            await asyncio.sleep(seconds)
            out.append(time.perf_counter_ns() - start - duration_ns)
        return out
    out = sorted(asyncio.run(main()))
    return f"{out[len(out) // 2]} {out[min(len(out) - 1, int(len(out) * 0.99))]}"


def _peak_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def sva_asyncio(workload, n, port):
    """N concurrent asyncio tasks: 'wall_ns peak_rss_kib baseline_rss_kib'."""
    _raise_fd_limit()
    baseline = _peak_rss_kib()

    async def sleeper():
        await asyncio.sleep(0.010)

    async def client():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x" * 64)
        await writer.drain()
        got = 0
        while got < 64:
            data = await reader.read(64 - got)
            if not data:
                raise RuntimeError("echo server closed early")
            got += len(data)
        writer.close()
        await writer.wait_closed()

    async def main():
        body = sleeper if workload == "sleep" else client
        await asyncio.gather(*(body() for _ in range(n)))

    start = time.perf_counter_ns()
    asyncio.run(main())
    return f"{time.perf_counter_ns() - start} {_peak_rss_kib()} {baseline}"


def sva_threads(workload, n, port):
    """N concurrent Python threads: 'wall_ns peak_rss_kib baseline_rss_kib'."""
    _raise_fd_limit()
    baseline = _peak_rss_kib()
    errors = []

    def sleeper():
        time.sleep(0.010)

    def client():
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(b"x" * 64)
                got = 0
                while got < 64:
                    data = s.recv(64 - got)
                    if not data:
                        raise RuntimeError("echo server closed early")
                    got += len(data)
        except Exception as e:  # a failed client fails the measurement below
            errors.append(e)

    body = sleeper if workload == "sleep" else client
    start = time.perf_counter_ns()
    threads = [threading.Thread(target=body) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
    return f"{time.perf_counter_ns() - start} {_peak_rss_kib()} {baseline}"


CASES = {
    "pool-apply-async": lambda a: pool_apply_async(int(a[0]), int(a[1])),
    "pool-map": lambda a: pool_map(int(a[0]), int(a[1]), int(a[2])),
    "process-pool-executor": lambda a: process_pool_executor(int(a[0]), int(a[1])),
    "thread-pool": lambda a: thread_pool(int(a[0]), int(a[1])),
    "thread-pool-executor": lambda a: thread_pool_executor(int(a[0]), int(a[1])),
    "asyncio-sleep": lambda a: asyncio_sleep_overshoot(int(a[0]), int(a[1])),
    "sva-asyncio": lambda a: sva_asyncio(a[0], int(a[1]), int(a[2])),
    "sva-threads": lambda a: sva_threads(a[0], int(a[1]), int(a[2])),
}
