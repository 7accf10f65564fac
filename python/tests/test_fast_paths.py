"""The fast paths give the same answers as the plain ones.

- ``details`` walked natively into the stored map must store exactly what
  the JSON encoder path stores, and refuse exactly what it refuses.
- Concurrent ``record_async`` calls of one loop iteration share one append:
  each caller still gets its own offset, holding its own event; one bad call
  fails alone; a cancelled await still records.
"""

import asyncio
import collections
import enum
import gc
import math
import os
import subprocess
import sys
import threading
import time
import types

import pytest

import enforcelog
from enforcelog import _store


class Colour(enum.IntEnum):
    RED = 1


class Tag(str):
    pass


def _deep(levels):
    d = {"leaf": 0}
    for _ in range(levels - 1):
        d = {"k": d}
    return d


def _self_containing():
    d = {"a": 1}
    d["self"] = d
    return d


# Values a host may pass as details, plain and awkward.
DETAILS = [
    {},
    {"reason": "Budget exceeded", "spent_usd": 1234.5, "limit_usd": 1000},
    {"nested": {"list": [1, 2.5, None, True, False, "x"], "tuple": (1, (2, 3))}},
    {"zeros": "\x00" * 64, "bytes_like": "a\x00b", "unicode": "sch\u00f6n \u2603 \U0001F600"},
    {"ints": [0, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30]},
    {"floats": [0.0, -0.0, 1e308, 5e-324, 0.1, -2.5e-7]},
    {"nan": float("nan")},
    {"inf": [float("inf")]},
    {1: "int key", "b": 2},
    {None: "none key"},
    {True: "bool key"},
    {2.5: "float key"},
    {"enum": Colour.RED, "tag": Tag("sub"), "bool": True},
    collections.OrderedDict([("z", 1), ("a", 2)]),
    types.MappingProxyType({"proxy": 1}),
    {"set": {1, 2}},
    {"obj": object()},
    {"bytes": b"raw"},
    _deep(63),
    _deep(64),
    _deep(65),
    _deep(1000),
    _self_containing(),
    {"big": "x" * (64 * 1024)},
    {"big": "x" * (64 * 1024 - 12)},
    "not a dict",
    ["a", "list"],
]


def _outcome(store, how, run, details):
    """What the store keeps for ``details`` written ``how``, or the error."""
    try:
        _write(store, how, run, details)
    except enforcelog.InvalidEventError as e:
        assert e.field == "details", e
        return enforcelog.InvalidEventError
    got = store.query("t", run_id=run).events
    assert len(got) == 1, how
    return got[0].details


def _same(a, b):
    """Equality that treats NaN as equal to itself and -0.0 apart from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("index", range(len(DETAILS)))
def test_native_details_store_what_the_encoder_path_stores(store, index):
    details = DETAILS[index]
    # A mapping that is not a dict always takes the encoder path (JSON text,
    # parsed by the store): the reference answer.
    reference_input = types.MappingProxyType(details) if isinstance(details, dict) else details
    expected = _outcome(store, "sync", f"reference-{index}", reference_input)
    for how in ("sync", "async", "batch"):
        got = _outcome(store, how, f"{how}-{index}", details)
        assert _same(got, expected), (how, got, expected)


def _write(store, how, run, details):
    if how == "sync":
        store.record("t", "r", "BLOCKED", run_id=run, details=details)
    elif how == "async":
        asyncio.run(store.record_async("t", "r", "BLOCKED", run_id=run, details=details))
    else:
        with store.begin() as batch:
            batch.record("t", "r", "BLOCKED", run_id=run, details=details)


def test_fire_and_forget_refuses_what_the_others_refuse_without_raising(store):
    refused = [d for i, d in enumerate(DETAILS)
               if _outcome(store, "sync", f"probe-{i}", d) is enforcelog.InvalidEventError]
    before = store.metrics()["dropped"]
    accepted = len(store.query("t").events)
    assert refused, "the table must hold refused details"
    for d in refused:
        store.record_detached("t", "r", "BLOCKED", details=d)
    store.flush()
    assert store.metrics()["dropped"] == before + len(refused)
    assert len(store.query("t").events) == accepted


def test_concurrent_record_async_calls_each_get_the_offset_of_their_own_event(store):
    n = 600  # more than one staged batch holds (256)

    async def main():
        return await asyncio.gather(*(
            store.record_async(f"tenant{i % 3}", f"rule{i % 7}", "BLOCKED", run_id=f"run{i}",
                               details={"i": i, "pad": "\x00" * (i % 50)})
            for i in range(n)))
    offsets = asyncio.run(main())
    assert sorted(offsets) == list(range(n))
    by_offset = {}
    for tenant in ("tenant0", "tenant1", "tenant2"):
        for e in store.query(tenant).events:
            by_offset[e.offset] = e
    for i, offset in enumerate(offsets):
        e = by_offset[offset]
        assert (e.tenant_id, e.rule_id, e.run_id, e.details["i"]) == (
            f"tenant{i % 3}", f"rule{i % 7}", f"run{i}", i)


def test_one_bad_call_among_concurrent_ones_fails_alone(store):
    async def one(i):
        tenant = "" if i == 5 else "t"
        return await store.record_async(tenant, "r", "BLOCKED", run_id=f"run{i}")

    async def main():
        return await asyncio.gather(*(one(i) for i in range(10)), return_exceptions=True)
    results = asyncio.run(main())
    assert isinstance(results[5], enforcelog.InvalidEventError)
    assert results[5].field == "tenant_id"
    good = [r for i, r in enumerate(results) if i != 5]
    assert sorted(good) == list(range(9))
    assert sorted(e.run_id for e in store.query("t").events) == sorted(
        f"run{i}" for i in range(10) if i != 5)


def test_store_errors_reach_every_caller_of_a_shared_append(store_dir):
    s = enforcelog.Store(store_dir, read_only=False)
    s.record("t", "r", "BLOCKED")
    s.close()
    ro = enforcelog.Store(store_dir, read_only=True)

    async def main():
        return await asyncio.gather(
            *(ro.record_async("t", "r", "BLOCKED") for _ in range(5)), return_exceptions=True)
    results = asyncio.run(main())
    assert all(isinstance(r, enforcelog.ReadOnlyError) for r in results)
    # Each caller has an exception object of its own.
    assert len({id(r) for r in results}) == 5
    ro.close()


def test_a_cancelled_await_still_records_its_event(store):
    async def main():
        task = asyncio.ensure_future(store.record_async("t", "r", "KILLED", run_id="cancelled"))
        await asyncio.sleep(0)  # the call is made and staged
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await store.flush_async()
    asyncio.run(main())
    assert [e.run_id for e in store.query("t").events] == ["cancelled"]


def test_events_staged_on_a_loop_that_closes_undrained_are_recorded(store):
    loop = asyncio.new_event_loop()

    async def stage_only():
        # Stage without ever giving the loop a chance to drain.
        completer = _store._completer()
        store._native.record_async(completer, "t", "r", "ABORTED", "orphan", None, None)
        assert len(completer) == 1
    # run_until_complete would run more iterations (and drain): drive the
    # coroutine by hand instead, as if inside the loop.
    asyncio.events._set_running_loop(loop)
    try:
        coro = stage_only()
        with pytest.raises(StopIteration):
            coro.send(None)
    finally:
        asyncio.events._set_running_loop(None)
    loop.close()
    del loop
    gc.collect()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        store.flush()
        if store.query("t").events:
            break
        time.sleep(0.01)
    assert [e.run_id for e in store.query("t").events] == ["orphan"]


def test_loops_in_several_threads_record_into_one_store(store):
    threads, per_thread = 4, 50
    offsets = []
    lock = threading.Lock()

    def run(k):
        async def main():
            return await asyncio.gather(*(
                store.record_async("t", "r", "STOPPED", run_id=f"{k}-{i}")
                for i in range(per_thread)))
        got = asyncio.run(main())
        with lock:
            offsets.extend(got)
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(offsets) == list(range(threads * per_thread))
    assert store.stats("t", "r").trigger_count == threads * per_thread


def test_a_loop_that_ran_awaitables_is_freed_with_its_descriptors(store):
    """Each loop's completer holds a socket pair and the loop's futures: it
    must go with its loop, or every asyncio.run() leaks descriptors."""
    async def main():
        await store.record_async("t", "r", "BLOCKED")
        await store.flush_async()

    def open_fds():
        return len(os.listdir("/proc/self/fd"))
    asyncio.run(main())
    gc.collect()
    before = open_fds()
    for _ in range(50):
        asyncio.run(main())
    gc.collect()
    assert open_fds() == before


@pytest.mark.parametrize("where", ["tenant_id", "rule_id", "run_id", "details key", "details value",
                                   "action"])
def test_a_lone_surrogate_is_refused_everywhere_and_stages_nothing(store, where):
    bad = "x\ud800y"
    kwargs = dict(tenant_id="t", rule_id="r", action="BLOCKED", run_id=None, details=None)
    if where in ("tenant_id", "rule_id", "run_id", "action"):
        kwargs[where] = bad
    elif where == "details key":
        kwargs["details"] = {bad: 1}
    else:
        kwargs["details"] = {"k": [bad]}
    expected = (enforcelog.InvalidEventError, UnicodeEncodeError, ValueError)
    with pytest.raises(expected):
        store.record(**kwargs)
    with pytest.raises(expected):
        asyncio.run(store.record_async(**kwargs))
    with pytest.raises(expected):
        with store.begin() as batch:
            batch.record(**kwargs)
    before = store.metrics()["dropped"]
    store.record_detached(**kwargs)  # never raises
    store.flush()
    assert store.metrics()["dropped"] == before + 1
    assert store.query(None).events == []


@pytest.mark.parametrize("ending", ["flush", "flush_async", "close", "close_async",
                                    "commit_async"])
@pytest.mark.parametrize("loops", [1, 3])
def test_every_record_async_made_before_a_flush_or_close_is_covered_by_it(store_dir, ending,
                                                                           loops):
    """Calls staged (not yet sent) on one or several loops, then, before any
    loop drains, the store is flushed or closed: every staged event must be
    in the log when that returns, and every caller gets its own offset."""
    store = enforcelog.Store(store_dir)
    per_loop = 5
    barrier = threading.Barrier(loops)
    staged = threading.Barrier(loops + 1)
    ended = threading.Event()
    results = {}

    def run(k):
        async def main():
            tasks = [asyncio.ensure_future(
                store.record_async("t", "r", "BLOCKED", run_id=f"{k}-{i}"))
                for i in range(per_loop)]
            await asyncio.sleep(0)  # every task has staged its event; no drain yet
            barrier.wait()
            if k == 0 and loops == 1:
                await _end(store, ending)
            else:
                staged.wait()
                ended.wait()
            results[k] = await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run(main())

    ts = [threading.Thread(target=run, args=(k,)) for k in range(loops)]
    for t in ts:
        t.start()
    if loops > 1:
        staged.wait()
        asyncio.run(_end(store, ending))
        ended.set()
    for t in ts:
        t.join()
    runs = sorted(f"{k}-{i}" for k in range(loops) for i in range(per_loop))
    if ending.startswith("close"):
        reopened = enforcelog.Store(store_dir, read_only=True)
        kept = reopened.query("t").events
        reopened.close()
    else:
        kept = store.query("t").events
        store.close()
    assert sorted(e.run_id for e in kept) == runs
    offsets = [o for k in results for o in results[k]]
    assert len(set(offsets)) == len(runs) and all(isinstance(o, int) for o in offsets)
    by_offset = {e.offset: e.run_id for e in kept}
    for k in results:
        for i, offset in enumerate(results[k]):
            assert by_offset[offset] == f"{k}-{i}"


async def _end(store, ending):
    if ending == "flush":
        store.flush()
    elif ending == "flush_async":
        await store.flush_async()
    elif ending == "close":
        store.close()
    elif ending == "close_async":
        await store.close_async()
    else:
        batch = store.begin()
        batch.record("other", "r", "BLOCKED")
        await batch.commit_async()


EXITING_WITH_DAEMON_THREADS = r"""
import logging, os, sys, threading, time
import enforcelog
logging.basicConfig(level=logging.WARNING, stream=open(os.devnull, "w"))
live = enforcelog.Store(sys.argv[1] + "/live", detached_timeout_ms=0)
closed = enforcelog.Store(sys.argv[1] + "/closed")
closed.close()
def spam(store, tenant):
    while True:
        # Rust logs (drops) and waits without the GIL on every call.
        store.record_detached(tenant, "r", "BLOCKED", details={"reason": "x" * 100})
for store in (live, closed):
    for tenant in ("t", ""):
        threading.Thread(target=spam, args=(store, tenant), daemon=True).start()
time.sleep(0.05)
sys.exit(0)
"""


def test_daemon_threads_calling_the_store_as_the_interpreter_exits_never_abort(tmp_path):
    """A daemon thread inside a native call when the interpreter finalises
    was ended by CPython with pthread_exit, which aborted the process
    (SIGABRT, "exception not rethrown") every time."""
    for i in range(5):
        d = tmp_path / str(i)
        d.mkdir()
        out = subprocess.run([sys.executable, "-c", EXITING_WITH_DAEMON_THREADS, str(d)],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL,
                             timeout=60)
        assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
