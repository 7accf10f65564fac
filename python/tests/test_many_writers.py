"""Issue 16's acceptance test: many processes, one directory.

8 CLI writer processes (``enforcelog import``, 10,000 events each) and 4
Python worker processes (through the package) record concurrently into one
store directory, while a seeded schedule SIGKILLs random CLI writers (at
least 20 times) mid-import and restarts each with what it had not
acknowledged. Then:

- ``enforcelog verify`` is clean (every shard);
- every acknowledged event is present exactly once (a paged ``enforcelog
  query`` of every tenant, following its ``--after-shard``/``--after-offset``
  hints), and nothing else is;
- ``enforcelog stats --format json`` equals the oracle computed from the
  events the processes acknowledged, and so does each Python worker's own
  ``stats`` after a refresh.

What a CLI writer acknowledged is what ``import --progress-json`` reported
committed. The batch a kill interrupted is atomic: it is in the store whole
or not at all. Whether it is becomes visible once a writer has opened the
dead writer's shard again (a dead writer may have written it without
publishing it as durable), so before looking for it the harness opens every
shard no process holds, as a host resuming an import must; it then counts
the batch as acknowledged (it is in the store) or imports it again.

The CLI binary: ``ENFORCELOG_BIN`` (python/run-tests.sh sets it after
``cargo build -p enforcelog-cli``), else ``$CARGO_TARGET_DIR/debug/enforcelog``.
``ENFORCELOG_TEST_SEED`` replays another kill schedule.
"""

import json
import os
import random
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import enforcelog
from test_workers import finish, read_acks, release, start_worker

SEED = int(os.environ.get("ENFORCELOG_TEST_SEED", "1616"))
CLI_WRITERS = 8
EVENTS_PER_CLI = 10_000
BATCH = 100
PY_WORKERS = 4
EVENTS_PER_PY = 2_500
KILLS_PER_CLI = 3
KILLS_MIN = 20
ACTIONS = ["STOPPED", "KILLED", "ABORTED", "BLOCKED"]
DAY_US = 86_400_000_000
WINDOW_US = 30 * DAY_US
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Longest wait for any one thing a process must do (a batch, an exit).
WAIT_S = 300


def enforcelog_bin():
    given = os.environ.get("ENFORCELOG_BIN")
    if given:
        path = Path(given)
    else:
        root = Path(__file__).resolve().parents[2]
        path = Path(os.environ.get("CARGO_TARGET_DIR", root / "target")) / "debug" / "enforcelog"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"no enforcelog binary at {path}: set ENFORCELOG_BIN, or build it with "
                    "`cargo build -p enforcelog-cli` (python/run-tests.sh does)")
    return str(path.resolve())


def utc_text(us):
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def nested(depth, leaf):
    value = leaf
    for k in range(depth):
        value = {f"level{k}": value, "list": [k, None, "\x00"]}
    return value


def cli_event(w, i, base_us):
    """Event `i` of CLI writer `w`: (its import line, (tenant, rule, action,
    enforced_at_us)). Stamped before `base_us`, within the last 19 days or
    36 to 45 days back, so no event is near the edge of the 30-day window
    however long the test runs. Run id: the writer's batch (`c<w>-b<k>`)."""
    tenant = f"tenant{(w + i) % 3}"
    rule = f"rule{(3 * i + w) % 5}"
    action = ACTIONS[(i + w) % 4]
    mix = i * 104_729 + w * 7_919
    if (i + w) % 3:
        age_us = 1 + mix % (19 * DAY_US)
    else:
        age_us = 36 * DAY_US + mix % (9 * DAY_US)
    at_us = base_us - age_us
    details = {"w": w, "i": i, "pad": "\x00" * (i % 64), "deep": nested(i % 12, i)}
    if i % 1000 == 999:
        # Near the 64 KiB limit of details (a zero byte is 6 bytes of JSON).
        details["blob"] = "\x00" * 10_000
    line = json.dumps({"tenant_id": tenant, "rule_id": rule, "action_taken": action,
                       "run_id": f"c{w}-b{i // BATCH}", "details": details,
                       "enforced_at": utc_text(at_us)}, separators=(",", ":"))
    return line + "\n", (tenant, rule, action, at_us)


class CliWriter:
    """One logical CLI writer: its events, what is known to be in the store
    (a prefix: `known`), the import process writing the rest, and when that
    process is SIGKILLed (seeded: after given numbers of acknowledged
    events, and a drawn delay, so anywhere in the next batch's cycle of
    write, fsync and publish)."""

    def __init__(self, w, base_us, tmp, rng):
        self.w = w
        self.tmp = tmp
        self.events = [cli_event(w, i, base_us) for i in range(EVENTS_PER_CLI)]
        batches = EVENTS_PER_CLI // BATCH
        self.kill_at = [b * BATCH for b in sorted(rng.sample(range(2, batches - 5), KILLS_PER_CLI))]
        self.kill_delays = [rng.uniform(0, 0.05) for _ in range(KILLS_PER_CLI)]
        self.known = 0          # events 0..known are in the store
        self.acked = 0          # reported committed by the running import
        self.reports = 0        # progress lines of the running import
        self.summary = None
        self.eof = True
        self.killed = False
        self.proc = None
        self.reader = None
        self.invocations = 0

    def spawn(self, binary, data_dir, cond):
        start = self.known
        path = self.tmp / f"cli{self.w}-{self.invocations}.jsonl"
        path.write_text("".join(line for line, _ in self.events[start:]))
        err = open(self.tmp / f"cli{self.w}-{self.invocations}.err", "w")
        self.invocations += 1
        self.acked, self.reports, self.summary, self.eof = start, 0, None, False
        self.proc = subprocess.Popen(
            [binary, "--data-dir", str(data_dir), "import", "--batch", str(BATCH),
             "--progress-json", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True)
        err.close()
        self.reader = threading.Thread(target=self._read, args=(self.proc, start, cond))
        self.reader.start()

    def _read(self, proc, start, cond):
        for line in proc.stdout:
            report = json.loads(line)
            kill = None
            with cond:
                if "batch" in report:
                    # Every input line is one event: lines 1..=L are events
                    # start..start+L.
                    self.acked = start + report["last_line"]
                    self.reports += 1
                    if self.kill_at and self.acked >= self.kill_at[0] and not self.killed:
                        self.kill_at.pop(0)
                        kill = self.kill_delays.pop(0)
                else:
                    self.summary = report
                cond.notify_all()
            if kill is not None:
                time.sleep(kill)
                proc.kill()
                with cond:
                    self.killed = True
                    cond.notify_all()
        with cond:
            self.eof = True
            cond.notify_all()


def adopt_free_shards(data_dir):
    """Opens, as a writer, every shard of the directory no process holds, and
    closes it: its recovery settles whether a dead writer's last batch is in
    the store, and publishes it if so."""
    dirs = [data_dir]
    shards = data_dir / "shards"
    if shards.is_dir():
        dirs += sorted((p for p in shards.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    for d in dirs:
        try:
            enforcelog.Store(d, share_directory=False).close()
        except enforcelog.LockedError:
            pass  # held by a live writer, whose open recovered it


def count_run(data_dir, run_id):
    """Events with this run id, in every shard (every tenant)."""
    with enforcelog.Store(data_dir, read_only=True) as reader:
        page, total = reader.query(None, run_id=run_id, limit=100_000), 0
        while True:
            total += len(page.events)
            if page.next_offset is None:
                return total
            page = reader.query(None, run_id=run_id, limit=100_000,
                                from_shard=page.next_shard, from_offset=page.next_offset)


def cli(binary, data_dir, *args):
    return subprocess.run([binary, "--data-dir", str(data_dir), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=WAIT_S)


def query_all_pages(binary, data_dir, tenant):
    """Every event of `tenant` through `enforcelog query`, page after page,
    each page continuing from the hint the previous one printed."""
    rows, cursor = [], []
    for _ in range(10_000):
        out = cli(binary, data_dir, "query", "--tenant", tenant, "--format", "jsonl",
                  "--limit", "7000", *cursor)
        assert out.returncode == 0, out.stderr
        rows += [json.loads(line) for line in out.stdout.splitlines()]
        hint = out.stderr.partition("more events may follow: ")[2]
        if not hint:
            return rows
        cursor = hint.splitlines()[0].split(" ")
    raise AssertionError("query paging never ended")


def oracle_report(events, as_of_us):
    """What `enforcelog stats --format json --as-of` must print for these
    (tenant, rule, action, enforced_at_us) events."""
    rules = {}
    for tenant, rule, action, at_us in events:
        if at_us > as_of_us:
            continue
        r = rules.setdefault((tenant, rule), {"window": 0, "last": None, "total": 0,
                                               "by": {a: 0 for a in ACTIONS}})
        r["total"] += 1
        r["last"] = at_us if r["last"] is None else max(r["last"], at_us)
        if at_us > as_of_us - WINDOW_US:
            r["window"] += 1
            r["by"][action] += 1
    return {
        "as_of": utc_text(as_of_us),
        "window": "30d",
        "rules": [{"tenant_id": t, "rule_id": rr, "window": "30d", "trigger_count": r["window"],
                   "last_triggered_at": utc_text(r["last"]), "total_count": r["total"],
                   "by_action": r["by"], "gap_in_window": False, "missing_at_least": 0}
                  for (t, rr), r in sorted(rules.items(), key=lambda kv: (kv[0][0].encode(), kv[0][1].encode()))],
    }


def test_eight_cli_writers_and_four_python_workers_with_sigkills_match_the_oracle(tmp_path):
    binary = enforcelog_bin()
    data_dir = tmp_path / "store"
    base_us = int(time.time() * 1_000_000) - 60_000_000
    rng = random.Random(SEED)
    cond = threading.Condition()
    writers = [CliWriter(w, base_us, tmp_path, rng) for w in range(CLI_WRITERS)]
    for wr in writers:
        wr.spawn(binary, data_dir, cond)
    # The Python workers start once every CLI writer has committed a batch,
    # so that all twelve processes write at once.
    with cond:
        assert cond.wait_for(lambda: all(wr.reports > 0 or wr.eof for wr in writers), WAIT_S)
    workers = [start_worker(data_dir, k, EVENTS_PER_PY, at_base_us=base_us)
               for k in range(PY_WORKERS)]

    kills, landed = 0, 0
    while True:
        with cond:
            assert cond.wait_for(lambda: any(wr.killed for wr in writers)
                                 or all(wr.eof for wr in writers), WAIT_S)
            victims = [wr for wr in writers if wr.killed]
        if not victims:
            break
        for victim in victims:
            victim.proc.wait()
            victim.reader.join()
            victim.killed = False
            if victim.summary is not None:
                # It had finished (its store closed) before the signal landed.
                assert victim.summary["imported"] == EVENTS_PER_CLI - victim.known, victim.summary
                victim.known = EVENTS_PER_CLI
                continue
            kills += 1
            acked = victim.acked
            assert acked >= victim.known
            victim.known = acked
            if acked < EVENTS_PER_CLI:
                # The batch in flight: whole or absent, once its shard is recovered.
                adopt_free_shards(data_dir)
                found = count_run(data_dir, f"c{victim.w}-b{acked // BATCH}")
                assert found in (0, BATCH), f"writer {victim.w}: batch {acked // BATCH} is torn: {found}"
                victim.known += found
                landed += found // BATCH
            if victim.known < EVENTS_PER_CLI:
                victim.spawn(binary, data_dir, cond)
    assert kills >= KILLS_MIN, f"only {kills} kills landed mid-import (seed {SEED})"
    print(f"seed {SEED}: {kills} SIGKILLs mid-import; {landed} in-flight batch(es) found committed")

    for wr in writers:
        code = wr.proc.wait(timeout=WAIT_S)
        wr.reader.join()
        if wr.known < EVENTS_PER_CLI:
            err = (tmp_path / f"cli{wr.w}-{wr.invocations - 1}.err").read_text()
            assert code == 0, err
            assert wr.acked == EVENTS_PER_CLI and wr.summary is not None, (wr.summary, err)
            wr.known = EVENTS_PER_CLI
    py_first = [read_acks(p) for p in workers]

    # Everything acknowledged, by every process.
    oracle_events = [e for wr in writers for _, e in wr.events]
    expected_ids = {("c", wr.w, i) for wr in writers for i in range(EVENTS_PER_CLI)}
    for k, first in enumerate(py_first):
        assert len(first["acked"]) == EVENTS_PER_PY + 2
        oracle_events += [tuple(a) for a in first["acked"]]
    expected_ids |= {("p", f"w{k}-{i}") for k in range(PY_WORKERS) for i in range(EVENTS_PER_PY)}
    expected_ids |= {("p", f"w{k}-{s}") for k in range(PY_WORKERS) for s in ("detached", "batch")}
    assert len(oracle_events) == len(expected_ids)

    # A dead writer's last shard may still await recovery: settle it, as above.
    adopt_free_shards(data_dir)
    verify = cli(binary, data_dir, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert len([l for l in verify.stdout.splitlines() if ": ok: " in l or l.startswith("ok: ")]) >= 2

    # Every acknowledged event, once; nothing else.
    seen = {}
    for tenant in ("tenant0", "tenant1", "tenant2"):
        for row in query_all_pages(binary, data_dir, tenant):
            d = row.get("details") or {}
            key = ("c", d["w"], d["i"]) if row["run_id"].startswith("c") else ("p", row["run_id"])
            seen[key] = seen.get(key, 0) + 1
    twice = {k: n for k, n in seen.items() if n > 1}
    assert not twice, f"events present more than once: {sorted(twice)[:10]}"
    assert set(seen) == expected_ids, (
        f"missing {sorted(expected_ids - set(seen))[:10]}, extra {sorted(set(seen) - expected_ids)[:10]}")

    # The statistics: the CLI's, and each worker's own after a refresh.
    as_of_us = int(time.time() * 1_000_000)
    stats = cli(binary, data_dir, "stats", "--format", "json", "--as-of", utc_text(as_of_us))
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) == oracle_report(oracle_events, as_of_us)
    counts = {}
    for tenant, rule, _, at_us in oracle_events:
        if at_us > as_of_us - WINDOW_US:
            counts[f"{tenant}/{rule}"] = counts.get(f"{tenant}/{rule}", 0) + 1
    for p in workers:
        release(p)
    for report in [finish(p) for p in workers]:
        assert {k: v for k, v in report["stats"].items() if v} == counts
        assert report["query_total"] == len(expected_ids)
    # The directory was shared: more shards than processes at any one time
    # would mean dead writers' shards were not reused.
    shard_dirs = [p for p in (data_dir / "shards").iterdir() if p.name.isdigit()]
    assert 1 <= len(shard_dirs) <= CLI_WRITERS + PY_WORKERS + 1, len(shard_dirs)
    # About 150 MB: not left behind for pytest's last-three-runs keeping
    # (on a failure it stays, for a look).
    shutil.rmtree(tmp_path, ignore_errors=True)
