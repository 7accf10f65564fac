"""Several worker processes on one store directory (issue 16), through the
package: each writer after the first claims a shard, and every process's
reads answer for all of them."""

import json
import subprocess
import sys

import enforcelog

WORKER = r"""
import asyncio, json, sys
import enforcelog

path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = enforcelog.Store(path)
acked = []

async def main():
    async def one(i):
        tenant = f"tenant{(worker + i) % 3}"
        rule = f"rule{i % 5}"
        action = ["STOPPED", "KILLED", "ABORTED", "BLOCKED"][i % 4]
        await store.record_async(tenant, rule, action, run_id=f"w{worker}-{i}",
                                 details={"worker": worker, "i": i, "pad": "\x00" * (i % 9)})
        acked.append([tenant, rule])
    await asyncio.gather(*(one(i) for i in range(n)))

asyncio.run(main())
# A fire-and-forget and a batch too, as a host mixes them.
store.record_detached("tenant0", "rule0", "BLOCKED", run_id=f"w{worker}-detached")
with store.begin() as batch:
    batch.record("tenant1", "rule1", "KILLED", run_id=f"w{worker}-batch")
store.flush()
acked += [["tenant0", "rule0"], ["tenant1", "rule1"]]
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


def test_four_worker_processes_record_into_one_directory_and_each_reads_all(tmp_path):
    path = tmp_path / "store"
    workers, per_worker = 4, 300
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(path), str(w), str(per_worker)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for w in range(workers)]
    first = [json.loads(p.stdout.readline()) for p in procs]
    assert sorted(f["shard"] for f in first) == list(range(workers))
    oracle = {}
    for f in first:
        for tenant, rule in f["acked"]:
            oracle[f"{tenant}/{rule}"] = oracle.get(f"{tenant}/{rule}", 0) + 1
    total = sum(oracle.values())
    assert total == workers * (per_worker + 2)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    seconds = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        assert p.wait(timeout=120) == 0
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
