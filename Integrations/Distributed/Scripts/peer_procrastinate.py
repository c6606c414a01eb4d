#!/usr/bin/env python3
"""The distributed suite's Python peer: procrastinate on the same PostgreSQL server, the same task
(n squared), the same measures as `distributed-worker bench`: tasks per second with N worker
processes (enqueue all in batches, wait until all succeeded) and enqueue-to-result latency (one task
at a time). procrastinate stores no result, so a task's end is its job's status turning
'succeeded', read by polling that row every 0.5 ms (no wake-up exists for it). One JSON object per
line on stdout.

usage: peer_procrastinate.py bench --socket DIR --port P [--processes 1,2,4] [--tasks N] [--latency-samples N]
       peer_procrastinate.py worker QUEUE        (a worker process; the bench starts them)
"""
import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import warnings

import procrastinate
import psycopg

warnings.filterwarnings("ignore")  # the app lives in this script's __main__: intended, a benchmark


def square(n):
    return n * n


def make_app(conninfo):
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    app.task(name="square")(square)
    return app


def worker(queue):
    app = make_app(os.environ["PEER_CONNINFO"])
    app.run_worker(queues=[queue], concurrency=1, wait=True, delete_jobs="never")


async def wait_all_succeeded(conn, queue, count, deadline):
    while time.monotonic() < deadline:
        cur = await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = %s AND status = 'succeeded'", (queue,))
        if (await cur.fetchone())[0] >= count:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{queue}: not all {count} jobs succeeded in time")


async def run(processes, tasks, samples, conninfo):
    queue = f"bench-{processes}-{os.getpid()}"
    env = dict(os.environ, PEER_CONNINFO=conninfo)
    workers = [subprocess.Popen([sys.executable, __file__, "worker", queue], env=env) for _ in range(processes)]
    try:
        app = make_app(conninfo)
        async with app.open_async(), await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            task = app.tasks["square"].configure(queue=queue)
            await task.batch_defer_async(*[{"n": n} for n in range(100)])  # warm-up
            await wait_all_succeeded(conn, queue, 100, time.monotonic() + 120)

            start = time.monotonic()
            for batch in range(0, tasks, 1000):
                await task.batch_defer_async(*[{"n": n} for n in range(batch, min(batch + 1000, tasks))])
            await wait_all_succeeded(conn, queue, 100 + tasks, time.monotonic() + 600)
            elapsed = time.monotonic() - start

            latencies = []
            for n in range(samples):
                sent = time.monotonic()
                job = await task.defer_async(n=n)
                while True:
                    cur = await conn.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (job,))
                    if (await cur.fetchone())[0] == "succeeded":
                        break
                    await asyncio.sleep(0.0005)
                latencies.append((time.monotonic() - sent) * 1000)
            latencies.sort()
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()
    return {
        "system": f"procrastinate {procrastinate.__version__}", "processes": processes, "tasks": tasks,
        "tasks_per_s": tasks / elapsed, "latency_p50_ms": latencies[len(latencies) // 2],
        "latency_p99_ms": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)],
    }


async def bench(args):
    conninfo = f"host={args.socket} port={args.port} user=postgres dbname=procrastinate"
    admin = f"host={args.socket} port={args.port} user=postgres dbname=postgres"
    async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
        cur = await conn.execute("SELECT 1 FROM pg_database WHERE datname = 'procrastinate'")
        if await cur.fetchone() is None:
            await conn.execute("CREATE DATABASE procrastinate")
    app = make_app(conninfo)
    async with app.open_async():
        try:
            await app.schema_manager.apply_schema_async()
        except Exception as error:  # applied by an earlier run
            if "already exists" not in str(error) + str(error.__cause__):
                raise
    for processes in [int(p) for p in args.processes.split(",")]:
        print(json.dumps(await run(processes, args.tasks, args.latency_samples, conninfo), sort_keys=True), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "worker":
        worker(sys.argv[2])
        sys.exit(0)
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["bench"])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--port", required=True)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--latency-samples", type=int, default=200)
    asyncio.run(bench(parser.parse_args()))
