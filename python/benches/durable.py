"""Durable records per second from Python, beside what a Python host would
otherwise use on this machine.

    python python/benches/durable.py [--seconds 2.0]

- enforcelog: ``await store.record_async(...)`` from 1, 8 and 64 asyncio tasks,
  and ``store.record(...)`` from 8 threads; ``Durability.FSYNC`` (group commit).
- sqlite3 (standard library): WAL, ``synchronous=FULL``, one writer thread
  draining everything queued into one transaction (the batched baseline of
  benches/durable.rs), fed by 64 asyncio tasks.
- aiosqlite (if installed): 64 tasks, one connection, a commit per record
  (what an asyncio host writes naively).

- Rust: the same work from ``producers`` tokio tasks inside this process
  (``_enforcelog.rust_producers``, the shape of ``cargo bench --bench
  durable``), in turns with the Python run of the same size, so that the
  Python/Rust ratio compares like with like on a disk whose speed drifts.

docs/BENCHMARKS.md has the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import sqlite3
import tempfile
import threading
import time

import enforcelog

DETAILS = {"reason": "Budget exceeded", "spent_usd": 1234.5, "limit_usd": 1000,
           "model": "gpt-x", "step": "pay-invoice", "pad": "x" * 60}


def bench_tasks(path: str, tasks: int, seconds: float) -> float:
    async def main() -> int:
        async with enforcelog.Store(path) as store:
            deadline = time.perf_counter() + seconds
            done = [0]

            async def worker(i: int) -> None:
                # Built once, as the Rust baseline builds its events once.
                rule, run = f"rule_{i % 16}", f"run_{i}"
                while time.perf_counter() < deadline:
                    await store.record_async("tenant_123", rule, "BLOCKED",
                                             run_id=run, details=DETAILS)
                    done[0] += 1
            await asyncio.gather(*(worker(i) for i in range(tasks)))
            return done[0]
    started = time.perf_counter()
    n = asyncio.run(main())
    return n / (time.perf_counter() - started)


def bench_threads(path: str, threads: int, seconds: float) -> float:
    with enforcelog.Store(path) as store:
        deadline = time.perf_counter() + seconds
        counts = [0] * threads

        def worker(i: int) -> None:
            while time.perf_counter() < deadline:
                store.record("tenant_123", f"rule_{i % 16}", "BLOCKED", run_id=f"run_{i}",
                             details=DETAILS)
                counts[i] += 1
        started = time.perf_counter()
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return sum(counts) / (time.perf_counter() - started)


SCHEMA = ("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, tenant_id TEXT, "
          "rule_id TEXT, action TEXT, run_id TEXT, details TEXT, enforced_at INTEGER)")
INDEX = "CREATE INDEX IF NOT EXISTS by_rule ON events (tenant_id, rule_id, enforced_at)"
INSERT = "INSERT INTO events (tenant_id, rule_id, action, run_id, details, enforced_at) " \
         "VALUES (?, ?, ?, ?, ?, ?)"


def bench_sqlite_batched(path: str, tasks: int, seconds: float) -> float:
    import json
    requests: "queue.Queue" = queue.Queue()

    def writer() -> None:
        db = sqlite3.connect(os.path.join(path, "db.sqlite"), isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(SCHEMA)
        db.execute(INDEX)
        while True:
            first = requests.get()
            if first is None:
                return
            group = [first]
            while True:
                try:
                    group.append(requests.get_nowait())
                except queue.Empty:
                    break
            stop = any(g is None for g in group)
            group = [g for g in group if g is not None]
            db.execute("BEGIN")
            db.executemany(INSERT, [g[0] for g in group])
            db.execute("COMMIT")
            for _, loop, fut in group:
                loop.call_soon_threadsafe(fut.set_result, None)
            if stop:
                return

    thread = threading.Thread(target=writer)
    thread.start()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        deadline = time.perf_counter() + seconds
        done = [0]
        details = json.dumps(DETAILS)

        async def worker(i: int) -> None:
            while time.perf_counter() < deadline:
                fut = loop.create_future()
                requests.put(((("tenant_123", f"rule_{i % 16}", "BLOCKED", f"run_{i}", details,
                                time.time_ns() // 1000)), loop, fut))
                await fut
                done[0] += 1
        await asyncio.gather(*(worker(i) for i in range(tasks)))
        return done[0]
    started = time.perf_counter()
    n = asyncio.run(main())
    elapsed = time.perf_counter() - started
    requests.put(None)
    thread.join()
    return n / elapsed


def bench_aiosqlite(path: str, tasks: int, seconds: float) -> float:
    import json

    import aiosqlite  # type: ignore[import-not-found]

    async def main() -> int:
        async with aiosqlite.connect(os.path.join(path, "db.sqlite"), isolation_level=None) as db:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute(SCHEMA)
            await db.execute(INDEX)
            lock = asyncio.Lock()
            deadline = time.perf_counter() + seconds
            done = [0]
            details = json.dumps(DETAILS)

            async def worker(i: int) -> None:
                while time.perf_counter() < deadline:
                    async with lock:  # one transaction at a time on the connection
                        await db.execute("BEGIN")
                        await db.execute(INSERT, ("tenant_123", f"rule_{i % 16}", "BLOCKED",
                                                  f"run_{i}", details, time.time_ns() // 1000))
                        await db.execute("COMMIT")
                    done[0] += 1
            await asyncio.gather(*(worker(i) for i in range(tasks)))
            return done[0]
    started = time.perf_counter()
    n = asyncio.run(main())
    return n / (time.perf_counter() - started)


def rust_tasks(path: str, tasks: int, seconds: float) -> float:
    import json
    return float(enforcelog._enforcelog.rust_producers(path, tasks, seconds, json.dumps(DETAILS)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="measured time per system and configuration")
    parser.add_argument("--rounds", type=int, default=3,
                        help="turns taken by Python and Rust per configuration")
    parser.add_argument("--tasks", type=str, default="1,8,64",
                        help="comma-separated asyncio task counts")
    args = parser.parse_args()

    def measure(fn, *fn_args, seconds: float) -> float:
        with tempfile.TemporaryDirectory(prefix="enforcelog-bench-", dir=os.getcwd()) as d:
            store_dir = os.path.join(d, "store")
            return fn(store_dir if fn in (bench_tasks, bench_threads, rust_tasks) else d,
                      *fn_args, seconds)

    print(f"{'work':<34} {'Python':>12} {'Rust':>12} {'Python/Rust':>12}", flush=True)
    for tasks in (int(t) for t in args.tasks.split(",")):
        # Turns, the order alternating, so that neither side gets the
        # disk's good or bad second.
        py_rates, rust_rates = [], []
        slice_s = args.seconds / args.rounds
        for r in range(args.rounds):
            order = [(bench_tasks, py_rates), (rust_tasks, rust_rates)]
            for fn, rates in (order if r % 2 == 0 else order[::-1]):
                rates.append(measure(fn, tasks, seconds=slice_s))
        py_rate = sum(py_rates) / len(py_rates)
        rust_rate = sum(rust_rates) / len(rust_rates)
        print(f"{f'{tasks} tasks / producers':<34} {py_rate / 1000:9.1f} k/s {rust_rate / 1000:9.1f} k/s"
              f" {py_rate / rust_rate:11.0%}", flush=True)

    def row(name: str, fn, *fn_args) -> None:
        rate = measure(fn, *fn_args, seconds=args.seconds)
        print(f"{name:<34} {rate / 1000:9.1f} k/s", flush=True)

    row("8 threads, sync record()", bench_threads, 8)
    row("sqlite3 batched, 64 asyncio tasks", bench_sqlite_batched, 64)
    try:
        import aiosqlite  # noqa: F401
    except ImportError:
        print("aiosqlite: not installed (pip install aiosqlite), skipped")
    else:
        row("aiosqlite, 64 asyncio tasks", bench_aiosqlite, 64)


if __name__ == "__main__":
    main()
