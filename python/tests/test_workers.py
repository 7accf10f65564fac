"""Several worker processes on one store directory (issue 16), through the
package: each writer after the first claims a shard, and every process's
reads answer for all of them."""

import json
import subprocess
import sys

import enforcelog

WORKER = r"""
import asyncio, json, sys
from datetime import datetime, timedelta, timezone
import enforcelog

path, worker, n, at_base = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
store = enforcelog.Store(path)
acked = []
DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def stamp(i):
    # "now": stamped when appended (None); else a fixed time before the base,
    # either within the last 19 days or 36 to 45 days back, never near the
    # edge of a 30-day window read minutes later.
    if at_base == "now":
        return None
    age_us = (1 + (i * 7919) % (19 * DAY_US)) if i % 3 else (36 * DAY_US + (i * 7919) % (9 * DAY_US))
    return int(at_base) - age_us


def at(us):
    return None if us is None else EPOCH + timedelta(microseconds=us)


async def main():
    async def one(i):
        tenant = f"tenant{(worker + i) % 3}"
        rule = f"rule{i % 5}"
        action = ["STOPPED", "KILLED", "ABORTED", "BLOCKED"][i % 4]
        us = stamp(i)
        await store.record_async(tenant, rule, action, run_id=f"w{worker}-{i}",
                                 details={"worker": worker, "i": i, "pad": "\x00" * (i % 9)},
                                 enforced_at=at(us))
        acked.append([tenant, rule, action, us])
    await asyncio.gather(*(one(i) for i in range(n)))

asyncio.run(main())
# A fire-and-forget and a batch too, as a host mixes them.
us = stamp(n)
store.record_detached("tenant0", "rule0", "BLOCKED", run_id=f"w{worker}-detached", enforced_at=at(us))
with store.begin() as batch:
    batch.record("tenant1", "rule1", "KILLED", run_id=f"w{worker}-batch", enforced_at=at(us))
store.flush()
acked += [["tenant0", "rule0", "BLOCKED", us], ["tenant1", "rule1", "KILLED", us]]
print(json.dumps({"shard": store.shard, "acked": acked}), flush=True)
# Wait for the parent's go, so that every worker is still open (holding its
# shard) when the others read.
sys.stdin.readline()
store.refresh()
out = {f"{t}/{r}": store.stats(t, r).trigger_count
       for t in ("tenant0", "tenant1", "tenant2") for r in [f"rule{k}" for k in range(5)]}
page, total = store.query(None, limit=37), 0
while True:
    total += len(page.events)
    if page.next_offset is None:
        break
    page = store.query(None, limit=37, from_shard=page.next_shard, from_offset=page.next_offset)
print(json.dumps({"stats": out, "query_total": total}), flush=True)
store.close()
"""


def start_worker(path, worker, n, at_base_us=None):
    """Starts worker process `worker`: it records `n` events (tenant
    ``tenant{(worker + i) % 3}``, rule ``rule{i % 5}``, run id ``w{worker}-{i}``)
    and 2 more into `path`, stamped now or, with `at_base_us`, at fixed times
    before it; then prints ``{"shard", "acked": [[tenant, rule, action,
    enforced_at_us]]}``. Its stats and query total follow on ``release``."""
    at = "now" if at_base_us is None else str(at_base_us)
    return subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(worker), str(n), at],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def read_acks(proc):
    """The worker's first report: its shard and every event it acknowledged."""
    return json.loads(proc.stdout.readline())


def release(proc):
    """Lets the worker read: after a refresh it reports its trigger counts of
    tenant0..2 x rule0..4 and how many events a paged query of every tenant
    saw (``finish`` returns that report)."""
    proc.stdin.write("go\n")
    proc.stdin.flush()


def finish(proc):
    """The released worker's report, once it has exited cleanly."""
    report = json.loads(proc.stdout.readline())
    assert proc.wait(timeout=120) == 0
    return report


def test_four_worker_processes_record_into_one_directory_and_each_reads_all(tmp_path):
    path = tmp_path / "store"
    workers, per_worker = 4, 300
    procs = [start_worker(path, w, per_worker) for w in range(workers)]
    first = [read_acks(p) for p in procs]
    assert sorted(f["shard"] for f in first) == list(range(workers))
    oracle = {}
    for f in first:
        for tenant, rule, _, _ in f["acked"]:
            oracle[f"{tenant}/{rule}"] = oracle.get(f"{tenant}/{rule}", 0) + 1
    total = sum(oracle.values())
    assert total == workers * (per_worker + 2)
    # Every worker is released before any is waited for: each reads while
    # the others still hold their shards.
    for p in procs:
        release(p)
    seconds = [finish(p) for p in procs]
    for s in seconds:
        assert {k: v for k, v in s["stats"].items() if v} == oracle
        assert s["query_total"] == total
    # And a reader opened afterwards, in this process.
    with enforcelog.Store(path, read_only=True) as reader:
        got = {}
        page = reader.query(None, limit=1000)
        events = []
        while True:
            events += page.events
            if page.next_offset is None:
                break
            page = reader.query(None, limit=1000, from_shard=page.next_shard,
                                from_offset=page.next_offset)
        assert len(events) == total
        assert len({(e.shard, e.offset) for e in events}) == total
        for e in events:
            got[f"{e.tenant_id}/{e.rule_id}"] = got.get(f"{e.tenant_id}/{e.rule_id}", 0) + 1
        assert got == oracle
