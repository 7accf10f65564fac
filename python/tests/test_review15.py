"""Adversarial review of the Python package (issue 15, review15).

Each test states one finding. A test marked ``xfail(strict=True, reason="confirmed:
...")`` FAILS on this code because the defect is real (the suite stays green; the
lead removes the mark with the fix). An unmarked test refutes a suspicion: it
passes and shows why the suspected defect is not there.
"""

import asyncio
import datetime as dt
import enum
import gc
import os
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import enforcelog
from enforcelog import PolicyEnforcementWriteDriver

# What hosts put in details: nesting, unicode, NUL runs.
DETAILS = {
    "reason": "Budget exceeded \u2014 \u4e88\u7b97\u8d85\u904e",
    "raw": "\x00" * 32 + "tail",
    "budget": {"limit_usd": 100.0, "window": {"days": 30}},
}


@pytest.fixture
def fast_store(store_dir):
    s = enforcelog.Store(store_dir, durability="none")
    yield s
    s.close()


def _run_child(script: str, store_dir) -> subprocess.CompletedProcess:
    """Runs `script` in a fresh interpreter with STORE set. The outer timeout
    only keeps a hang from stalling the suite; the scripts bound their own
    waits with SIGALRM and report by exit status."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, "STORE": str(store_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )


# ---------------------------------------------------------------------------
# 1. Acknowledged data and offsets
# ---------------------------------------------------------------------------


def test_record_async_offsets_are_each_callers_own_across_two_stores_and_four_loops(store_dir):
    """Refutes: coalesced batches mixing stores, or offsets handed to the
    wrong caller, across two stores in one loop and loops in four threads."""
    import threading

    a = enforcelog.Store(store_dir / "a", durability="none")
    b = enforcelog.Store(store_dir / "b", durability="none")
    try:
        async def two_stores():
            return await asyncio.gather(*(
                (a if i % 2 else b).record_async("t", "r", "BLOCKED", details={"i": i, **DETAILS})
                for i in range(600)))

        offsets = asyncio.run(two_stores())
        for store, parity in ((a, 1), (b, 0)):
            by_offset = {e.offset: e.details["i"] for e in store.query("t").events}
            assert len(by_offset) == 300
            for i, offset in enumerate(offsets):
                if i % 2 == parity:
                    assert by_offset[offset] == i

        results = {}

        def thread(k):
            async def go():
                return await asyncio.gather(*(
                    a.record_async(f"t{k}", "r", "STOPPED", details={"i": i}) for i in range(500)))
            results[k] = asyncio.run(go())

        threads = [threading.Thread(target=thread, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(4):
            by_offset = {e.offset: e.details["i"] for e in a.query(f"t{k}").events}
            assert [by_offset[o] for o in results[k]] == list(range(500))
    finally:
        a.close()
        b.close()


def test_100k_record_async_in_flight_all_settle_with_their_own_offsets(fast_store):
    """Refutes: a hang with the wake-up socket full (100k calls in one loop
    iteration, 391 staged batches behind a 4096-deep writer queue)."""
    n = 100_000

    async def main():
        return await asyncio.gather(*(
            fast_store.record_async("t", "r", "BLOCKED", details={"i": i}) for i in range(n)))

    offsets = asyncio.run(main())
    assert len(set(offsets)) == n
    by_offset = {e.offset: e.details["i"] for e in fast_store.query("t", limit=n).events}
    assert [by_offset[o] for o in offsets] == list(range(n))


def test_refused_first_call_of_an_iteration_does_not_strand_the_next(fast_store):
    """Refutes: the KICK token lost when the first staged call of an iteration
    is refused (the staged list emptied on the error path)."""
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3650)

    async def main():
        return await asyncio.gather(
            fast_store.record_async("t", "r", "BLOCKED", enforced_at=future),
            fast_store.record_async("t", "r", "BLOCKED"),
            return_exceptions=True)

    refused, offset = asyncio.run(main())
    assert isinstance(refused, enforcelog.InvalidEventError)
    assert [e.offset for e in fast_store.query("t").events] == [offset]


def test_cancelled_record_async_is_recorded_and_later_calls_settle(fast_store):
    """Refutes: a cancelled await un-records its event or breaks the drain."""
    async def main():
        task = asyncio.ensure_future(fast_store.record_async("t", "r", "BLOCKED", run_id="cancelled"))
        await asyncio.sleep(0)  # staged
        task.cancel()
        after = await fast_store.record_async("t", "r", "BLOCKED", run_id="after")
        return after

    after = asyncio.run(main())
    events = fast_store.query("t").events
    assert [e.run_id for e in events] == ["cancelled", "after"]
    assert events[1].offset == after


def test_record_async_called_before_close_is_recorded_by_close(store):
    async def main():
        task = asyncio.ensure_future(store.record_async("t", "r", "BLOCKED"))
        await asyncio.sleep(0)  # the call is made: its event is staged
        store.close()
        return await task

    offset = asyncio.run(main())
    reopened = enforcelog.Store(store.path, read_only=True)
    try:
        assert [e.offset for e in reopened.query("t").events] == [offset]
    finally:
        reopened.close()


def test_flush_async_called_before_close_succeeds(store):
    async def main():
        task = asyncio.ensure_future(store.flush_async())
        await asyncio.sleep(0)
        store.close()
        await task

    asyncio.run(main())


def test_events_staged_on_a_stopped_loop_end_recorded_or_counted(store):
    loop = asyncio.new_event_loop()

    async def stage_then_stop():
        for _ in range(5):
            task = asyncio.ensure_future(store.record_async("t", "r", "BLOCKED"))
            task._log_destroy_pending = False
        await asyncio.sleep(0)  # the five calls are made: staged
        loop.stop()  # the loop stops before its next drain
        await asyncio.sleep(3600)

    main = loop.create_task(stage_then_stop())
    main._log_destroy_pending = False
    loop.run_forever()
    store.close()
    del main, loop
    gc.collect()  # the unclosed loop and its Completer go
    dropped = store.metrics()["dropped"]
    reopened = enforcelog.Store(store.path, read_only=True)
    try:
        recorded = len(reopened.query("t").events)
    finally:
        reopened.close()
    assert recorded + dropped == 5


FORK_CHILD_RECORDS = """
    import os, signal, sys
    import enforcelog
    store = enforcelog.Store(os.environ["STORE"], durability="none")
    store.record("t", "r", "BLOCKED")
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)  # a hang ends as SIGALRM, reported below
        try:
            store.record("t", "r", "BLOCKED")
        except enforcelog.Error:
            os._exit(0)  # a clear error: fine
        os._exit(3)  # "recorded" by a writer thread the child does not have
    _, status = os.waitpid(pid, 0)
    store.close()
    sys.exit(100 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


def test_store_used_in_a_forked_child_raises_instead_of_hanging(store_dir):
    child = _run_child(FORK_CHILD_RECORDS, store_dir)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])


FORK_CHILD_EXITS = """
    import os, signal, sys
    import enforcelog
    store = enforcelog.Store(os.environ["STORE"], durability="none")
    store.record_detached("t", "r", "BLOCKED")  # registers the atexit flush
    pid = os.fork()
    if pid == 0:
        signal.alarm(10)
        sys.exit(0)  # a normal exit runs atexit: enforcelog._store._flush_at_exit
    _, status = os.waitpid(pid, 0)
    store.close()
    sys.exit(100 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""


def test_forked_child_exits_without_hanging_in_the_atexit_flush(store_dir):
    child = _run_child(FORK_CHILD_EXITS, store_dir)
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])


CLOSED_STORE_AT_EXIT = """
    import logging, os
    import enforcelog
    logging.basicConfig(level=logging.WARNING)  # a host that logs warnings
    store = enforcelog.Store(os.environ["STORE"])  # a host's module-level store
    store.record_detached("t", "r", "BLOCKED")
    store.close()  # the host's shutdown hook closes it; then the interpreter exits
"""


def test_exit_after_close_logs_nothing(store_dir):
    child = _run_child(CLOSED_STORE_AT_EXIT, store_dir)
    assert child.returncode == 0
    assert child.stderr == ""


# ---------------------------------------------------------------------------
# 3. Crashes and conversions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [-(2**63) - 1, 10**30, 2**64 + 1])
def test_details_int_beyond_64_bits_is_kept_exactly_or_refused(fast_store, n):
    try:
        fast_store.record("t", "r", "BLOCKED", details={"n": n, **DETAILS})
    except enforcelog.InvalidEventError as e:
        assert e.field == "details"
        return
    got = fast_store.query("t").events[-1].details["n"]
    assert type(got) is int and got == n


def test_details_ints_at_the_64_bit_edges_are_kept_exactly(fast_store):
    """Refutes for the walk's own range: i64 and u64 extremes survive exactly."""
    values = [-(2**63), 2**63 - 1, 2**63, 2**64 - 1, 0]
    fast_store.record("t", "r", "BLOCKED", details={"v": values})
    assert fast_store.query("t").events[0].details["v"] == values


def test_details_dict_changed_during_the_walk_never_panics(fast_store):
    details = {"big": 2**63, "a": 1, "b": 2}  # 2**63: the i64 read fails, allocating

    def grow(phase, info):
        if phase == "start" and len(details) < 8:
            details[f"k{len(details)}"] = 1

    threshold, enabled = gc.get_threshold(), gc.isenabled()
    gc.callbacks.append(grow)
    gc.set_threshold(1)
    gc.enable()
    try:
        fast_store.record("t", "r", "BLOCKED", details=details)
    except enforcelog.Error:
        pass  # a clear error is fine
    except BaseException as e:  # noqa: BLE001 - the finding: what escapes
        pytest.fail(f"{type(e).__module__}.{type(e).__name__}: {e}")
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(grow)
        if not enabled:
            gc.disable()


def test_str_subclass_ids_and_details_record_their_own_text(fast_store):
    """Refutes: the in-place UTF-8 read (convert.rs:51) calling __str__
    overrides or reading freed text: the str's own data is recorded."""
    class Sneaky(str):
        def __str__(self):
            return "other"

        def __eq__(self, other):
            raise RuntimeError("no eq")

        __hash__ = str.__hash__

    tenant = Sneaky("tenant\u00e9\u200b")
    fast_store.record(tenant, Sneaky("r"), Sneaky("blocked"), details={"k": Sneaky("v\u4e88")})
    event = fast_store.query("tenant\u00e9\u200b").events[0]
    assert (event.rule_id, event.action.value, event.details) == ("r", "BLOCKED", {"k": "v\u4e88"})


def test_self_referencing_and_very_deep_details_are_refused_cleanly(fast_store):
    """Refutes: stack overflow or a hang on hostile nesting; each is an
    InvalidEventError naming details, on every write path."""
    loop_dict = {"a": 1}
    loop_dict["self"] = loop_dict
    deep = {}
    node = deep
    for _ in range(100_000):
        node["n"] = {}
        node = node["n"]
    deep_list = []
    cell = deep_list
    for _ in range(100_000):
        cell.append([])
        cell = cell[0]
    for bad in (loop_dict, deep, {"l": deep_list}):
        with pytest.raises(enforcelog.InvalidEventError) as e:
            fast_store.record("t", "r", "BLOCKED", details=bad)
        assert e.value.field == "details"
        fast_store.record_detached("t", "r", "BLOCKED", details=bad)
    assert fast_store.metrics()["dropped"] == 3
    assert fast_store.query("t").events == []


# ---------------------------------------------------------------------------
# 4. The fail-safe contract
# ---------------------------------------------------------------------------


class _Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("str() of this exception fails")


def test_record_detached_survives_hostile_actions_and_details(fast_store):
    """Refutes: a hostile enum .value, dict subclass or mapping escaping the
    fail-safe call; each is dropped and counted."""
    class RaisingValue(enum.Enum):
        X = 1

        @property
        def value(self):
            raise _Unprintable()

    class BadMapping(dict):
        def items(self):
            raise _Unprintable()

    class Unhashable:
        def __hash__(self):
            raise _Unprintable()

        def __eq__(self, other):
            raise _Unprintable()

        def __repr__(self):
            raise _Unprintable()

    bad_mapping = BadMapping(a=1)
    bad_mapping[1] = 2  # a non-str key: the walk hands it to the encoder, which calls items()
    calls = [
        dict(action=RaisingValue.X),
        dict(action=object()),
        dict(details=bad_mapping),
        dict(details={"k": Unhashable()}),
        dict(details=[("k", "v")]),
        dict(tenant_id=Unhashable()),
    ]
    for overrides in calls:
        kwargs = dict(tenant_id="t", rule_id="r", action="BLOCKED", details=DETAILS)
        kwargs.update(overrides)
        fast_store.record_detached(**kwargs)
    assert fast_store.metrics()["dropped"] == len(calls)


def test_record_detached_never_raises_when_the_error_cannot_be_printed(fast_store):
    class HostileTime(dt.datetime):
        def utcoffset(self):
            raise _Unprintable()

    fast_store.record_detached(
        "t", "r", "BLOCKED", enforced_at=HostileTime(2026, 1, 1, tzinfo=dt.timezone.utc))
    assert fast_store.metrics()["dropped"] == 1


def test_standalone_never_raises_for_a_store_of_the_wrong_type(store_dir):
    async def main():
        await enforcelog.record_enforcement_standalone(
            tenant_id="t", rule_id="r", action_taken="STOPPED", store=str(store_dir))

    asyncio.run(main())


def test_record_detached_lets_keyboard_interrupt_through_wherever_it_is_raised(fast_store):
    class Interrupted(enum.Enum):
        X = 1

        @property
        def value(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fast_store.record_detached("t", "r", Interrupted.X)


# ---------------------------------------------------------------------------
# 5. The SQLAlchemy session extra
# ---------------------------------------------------------------------------


def test_session_joined_to_an_outer_transaction_records_nothing_when_it_rolls_back(
        tmp_path, fast_store):
    from sqlalchemy.exc import InvalidRequestError

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as c:
        c.execute(text("create table runs (id integer primary key)"))
    with engine.connect() as conn:
        outer = conn.begin()
        session = Session(bind=conn)
        driver = PolicyEnforcementWriteDriver(session, store=fast_store)
        session.execute(text("insert into runs values (1)"))
        # Refused: the session's commit commits nothing, enforcelog cannot
        # know the outer transaction's fate (session.py, stage()).
        with pytest.raises(InvalidRequestError, match="joins a transaction it does not commit"):
            driver.record_enforcement_sync("tenant_123", "rule_456", "BLOCKED", details=DETAILS)
        session.commit()
        session.close()
        outer.rollback()
    with engine.connect() as c:
        assert c.execute(text("select count(*) from runs")).scalar() == 0
    engine.dispose()
    assert fast_store.query("tenant_123").events == []


def test_event_staged_after_the_commit_is_recorded_raised_or_counted(tmp_path, fast_store):
    from sqlalchemy import event as sa_event
    from sqlalchemy.exc import InvalidRequestError

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    session = Session(engine)
    driver = PolicyEnforcementWriteDriver(session, store=fast_store)
    driver.record_enforcement_sync("t", "r", "BLOCKED", run_id="first")
    raised = []

    def host_hook(s):  # a host's own after_commit listener records an outcome
        try:
            driver.record_enforcement_sync("t", "r", "STOPPED", run_id="late", details=DETAILS)
        except (enforcelog.Error, InvalidRequestError) as e:
            raised.append(e)

    sa_event.listen(session, "after_commit", host_hook, once=True)
    session.commit()
    session.commit()  # a second transaction, in case the event went to the next one
    session.close()
    engine.dispose()
    recorded = [e.run_id for e in fast_store.query("t").events]
    assert recorded[0] == "first"
    assert len(recorded) - 1 + len(raised) + fast_store.metrics()["dropped"] == 1
    assert fast_store.metrics()["dropped"] == 0 and len(raised) == 1  # refused, clearly


def _savepoint_engine(path):
    """SQLite through pysqlite with real BEGIN/SAVEPOINT (SQLAlchemy's recipe:
    pysqlite's own transaction handling breaks savepoints)."""
    from sqlalchemy import event as sa_event

    engine = create_engine(f"sqlite:///{path}")

    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @sa_event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN")

    with engine.begin() as c:
        c.execute(text("create table runs (id text primary key)"))
    return engine


def _nested_scenarios():
    def a(s, rec):  # savepoint rolled back, outer commits
        rec("o"); n = s.begin_nested(); rec("n"); n.rollback(); s.commit()

    def b(s, rec):  # exception inside `with begin_nested()`
        rec("o")
        try:
            with s.begin_nested():
                rec("n")
                raise ValueError("savepoint body failed")
        except ValueError:
            pass
        s.commit()

    def c(s, rec):  # commit with a savepoint still open commits it too
        rec("o"); s.begin_nested(); rec("n"); s.commit()

    def d(s, rec):  # savepoint released, outer rolled back
        rec("o"); n = s.begin_nested(); rec("n"); n.commit(); s.rollback()

    def e(s, rec):  # rollback from inside a savepoint, then a new transaction
        s.begin_nested(); rec("n"); s.rollback(); rec("x"); s.commit()

    def f(s, rec):  # one session, three transactions
        rec("1"); s.commit(); rec("2"); s.rollback(); rec("3"); s.commit()

    def g(s, rec):  # inner released into an outer savepoint that rolls back
        n1 = s.begin_nested(); rec("1"); n2 = s.begin_nested(); rec("2"); n2.commit()
        n1.rollback(); rec("3"); s.commit()

    def h(s, rec):  # inner rolled back, outer savepoint released
        n1 = s.begin_nested(); rec("1"); n2 = s.begin_nested(); rec("2"); n2.rollback()
        n1.commit(); s.commit()

    def j(s, rec):  # `with session.begin()` around a rolled-back savepoint
        with s.begin():
            rec("1"); n = s.begin_nested(); rec("2"); n.rollback(); rec("3")

    return [a, b, c, d, e, f, g, h, j]


@pytest.mark.parametrize("scenario", _nested_scenarios(), ids=lambda f: f.__name__)
def test_session_records_exactly_the_rows_the_database_kept(tmp_path, fast_store, scenario):
    """Refutes: begin_nested edge cases recording a rolled-back savepoint's
    events or losing a released one's: each event is staged beside a row of
    its own, and the log must hold exactly the rows the database kept."""
    engine = _savepoint_engine(tmp_path / "db.sqlite")
    session = Session(engine)
    driver = PolicyEnforcementWriteDriver(session, store=fast_store)

    def rec(run):
        session.execute(text("insert into runs values (:r)"), {"r": run})
        driver.record_enforcement_sync("t", "r", "BLOCKED", run_id=run, details=DETAILS)

    scenario(session, rec)
    session.close()
    with engine.connect() as c:
        kept = sorted(r[0] for r in c.execute(text("select id from runs")))
    engine.dispose()
    assert sorted(e.run_id for e in fast_store.query("t").events) == kept


def test_two_interleaved_sessions_keep_their_own_events(tmp_path, fast_store):
    """Refutes: staging shared between sessions (one rolls back, one commits)."""
    engine = _savepoint_engine(tmp_path / "db.sqlite")
    one, two = Session(engine), Session(engine)
    PolicyEnforcementWriteDriver(one, store=fast_store).record_enforcement_sync(
        "t", "r", "BLOCKED", run_id="one")
    PolicyEnforcementWriteDriver(two, store=fast_store).record_enforcement_sync(
        "t", "r", "BLOCKED", run_id="two")
    two.rollback()
    one.commit()
    one.close()
    two.close()
    engine.dispose()
    assert [e.run_id for e in fast_store.query("t").events] == ["one"]


# ---------------------------------------------------------------------------
# 6. Tenant isolation through the Python API
# ---------------------------------------------------------------------------


def test_look_alike_tenants_are_kept_apart_and_empty_ids_refused(fast_store):
    """Refutes: look-alike ids (case, zero-width space, trailing space, NFC vs
    NFD) sharing counts; "" accepted on a write or read as all tenants."""
    tenants = ["acme", "ACME", "acme\u200b", "acme ", "\u00e1", "a\u0301"]
    for i, t in enumerate(tenants):
        for _ in range(i + 1):
            fast_store.record(t, "r", "STOPPED")
    for i, t in enumerate(tenants):
        assert fast_store.stats(t, "r").total_count == i + 1
        assert {e.tenant_id for e in fast_store.query(t).events} == {t}
    with pytest.raises(enforcelog.InvalidEventError):
        fast_store.record("", "r", "STOPPED")
    with pytest.raises(enforcelog.Error):
        fast_store.stats("", "r")
    with pytest.raises(enforcelog.Error):
        fast_store.query("")
    with pytest.raises(TypeError):
        fast_store.stats(None, "r")


def test_an_empty_tenant_in_a_read_raises_a_value_error_naming_the_field(fast_store):
    with pytest.raises(ValueError) as e:
        fast_store.stats("", "r")
    assert e.value.field == "tenant_id"


# ---------------------------------------------------------------------------
# Options at their extremes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["interval_ms", "detached_timeout_ms"])
def test_negative_option_is_an_invalid_options_error_naming_it(store_dir, option):
    with pytest.raises(enforcelog.InvalidOptionsError) as e:
        enforcelog.Store(store_dir, durability="interval", **{option: -1})
    assert option.replace("_ms", "") in e.value.field


def test_options_at_their_extremes_give_clear_errors_or_work(store_dir):
    """Refutes: a panic (Instant/Duration overflow) for u64::MAX timeouts or
    intervals; a zero interval or an unknown durability accepted."""
    with pytest.raises(enforcelog.InvalidOptionsError):
        enforcelog.Store(store_dir / "a", detached_timeout_ms=2**64 - 1)
    with pytest.raises(enforcelog.InvalidOptionsError):
        enforcelog.Store(store_dir / "b", durability="interval", interval_ms=0)
    with pytest.raises(enforcelog.InvalidOptionsError):
        enforcelog.Store(store_dir / "c", durability="bogus")
    for name, options in (("d", dict(durability="interval", interval_ms=2**64 - 1)),
                          ("e", dict(detached_timeout_ms=0))):
        with enforcelog.Store(store_dir / name, **options) as s:
            s.record_detached("t", "r", "BLOCKED", details=DETAILS)
            assert s.record("t", "r", "BLOCKED") == 1
            s.flush()
            assert s.metrics()["dropped"] == 0
