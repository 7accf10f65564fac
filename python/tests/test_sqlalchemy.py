"""PolicyEnforcementWriteDriver on a SQLAlchemy session, against a real database.

SQLite through SQLAlchemy (a file database in tmp_path), with a ``runs`` table
the host writes in the same transaction as the enforcement events: sync
``Session`` (pysqlite) and ``AsyncSession`` (aiosqlite). The events are read
back from the store; the rows from the database, through a fresh connection.
"""

import asyncio
import logging
import subprocess
import sys
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import enforcelog
from enforcelog import PolicyEnforcementReadDriver, PolicyEnforcementWriteDriver
from enforcelog.session import staged_count

# What hosts put in details: nested objects, unicode, NUL characters in strings.
DETAILS = {
    "reason": "Budget exceeded — 予算超過 ✋",
    "budget": {"limit_usd": 100.0, "spent_usd": 100.01, "window": {"days": 30, "tz": "UTC"}},
    "steps": [{"n": i, "tool": "shell", "args": ["rm", "-rf", "/tmp/x\x00y"]} for i in range(3)],
    "raw": "\x00" * 32 + "tail",
}


def _sqlite_savepoints_work(sync_engine):
    # pysqlite's own transaction handling defeats SAVEPOINT; SQLAlchemy's
    # documented recipe hands BEGIN to SQLAlchemy, so savepoints are real.
    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(sync_engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN")


@pytest.fixture
def db_path(tmp_path):
    path = tmp_path / "host.sqlite"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL)"))
    engine.dispose()
    return path


@pytest.fixture
def engine(db_path):
    engine = create_engine(f"sqlite:///{db_path}")
    _sqlite_savepoints_work(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def async_engine(db_path):
    engine = create_async_engine(f"sqlite+aiosqlite:///{db_path}")
    _sqlite_savepoints_work(engine.sync_engine)
    yield engine
    asyncio.run(engine.dispose())


@pytest.fixture(autouse=True)
def no_default_store():
    enforcelog.set_default_store(None)
    yield
    enforcelog.set_default_store(None)


def runs_in_db(db_path):
    """The runs table as committed, read through a connection of its own."""
    engine = create_engine(f"sqlite:///{db_path}")
    try:
        with engine.connect() as conn:
            return sorted(tuple(r) for r in conn.execute(text("SELECT id, status FROM runs")))
    finally:
        engine.dispose()


def events_in(store):
    return [(e.tenant_id, e.rule_id, e.action.value, e.run_id, e.details)
            for e in store.query().events]


def insert_run(session, run_id):
    session.execute(text("INSERT INTO runs (id, status) VALUES (:id, 'halted')"), {"id": run_id})


def mapped_run_class():
    """An ORM class on the runs table (a registry of its own per test)."""
    from sqlalchemy import String
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class Run(Base):
        __tablename__ = "runs"
        id: Mapped[str] = mapped_column(String, primary_key=True)
        status: Mapped[str] = mapped_column(String)

    return Run


def halt(driver, run_id, action="BLOCKED", details=DETAILS):
    driver.record_enforcement_sync(tenant_id="tenant_123", rule_id="rule_456",
                                   action_taken=action, run_id=run_id, details=details)


# -- sync Session -------------------------------------------------------------

def test_session_commit_records_the_row_and_every_event(engine, db_path, store):
    before = datetime.now(timezone.utc)
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        insert_run(session, "run_1")
        halt(driver, "run_1", "BLOCKED")
        halt(driver, "run_1", "stop", details={"note": "second outcome"})
        staged_at = datetime.now(timezone.utc)
        assert store.query().events == []  # nothing before the commit
        session.commit()
        # commit() returned: the events are there (durable, FSYNC store).
        recorded = store.query().events
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert events_in(store) == [
        ("tenant_123", "rule_456", "BLOCKED", "run_1", DETAILS),
        ("tenant_123", "rule_456", "STOPPED", "run_1", {"note": "second outcome"}),
    ]
    # enforced_at is when record_enforcement ran, not when the session committed.
    assert all(before <= e.enforced_at <= staged_at for e in recorded)
    # One batch: consecutive offsets.
    assert [e.offset for e in recorded] == [recorded[0].offset, recorded[0].offset + 1]

    async def counts():
        reader = PolicyEnforcementReadDriver(store)
        return await reader.trigger_count_30d("tenant_123", "rule_456")
    assert asyncio.run(counts()) == 2


def test_session_rollback_records_neither_row_nor_events(engine, db_path, store):
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        insert_run(session, "run_1")
        halt(driver, "run_1")
        session.rollback()
        assert staged_count(session) == 0
    assert runs_in_db(db_path) == []
    assert events_in(store) == []
    assert store.metrics()["dropped"] == 0  # a rollback is not a loss


def test_exception_inside_session_begin_records_neither(engine, db_path, store):
    make_session = sessionmaker(engine)
    with pytest.raises(RuntimeError, match="step failed"):
        with make_session.begin() as session:
            insert_run(session, "run_1")
            halt(PolicyEnforcementWriteDriver(session, store=store), "run_1")
            raise RuntimeError("step failed")
    assert runs_in_db(db_path) == []
    assert events_in(store) == []
    # The same pattern without the exception commits both.
    with make_session.begin() as session:
        insert_run(session, "run_2")
        halt(PolicyEnforcementWriteDriver(session, store=store), "run_2")
    assert runs_in_db(db_path) == [("run_2", "halted")]
    assert [e[3] for e in events_in(store)] == ["run_2"]


def test_savepoint_rollback_drops_only_the_events_staged_inside_it(engine, db_path, store):
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        insert_run(session, "kept_before")
        halt(driver, "kept_before", "BLOCKED")
        with pytest.raises(ValueError):
            with session.begin_nested():
                insert_run(session, "rolled_back")
                halt(driver, "rolled_back", "KILLED")
                raise ValueError("the step inside the savepoint failed")
        with session.begin_nested():  # released: its events join the transaction
            insert_run(session, "released")
            halt(driver, "released", "STOPPED")
            # A savepoint inside the released one, rolled back on its own.
            inner = session.begin_nested()
            insert_run(session, "inner_rolled_back")
            halt(driver, "inner_rolled_back", "ABORTED")
            inner.rollback()
        # Released into a savepoint that then rolls back: dropped with it.
        outer = session.begin_nested()
        inner = session.begin_nested()
        insert_run(session, "released_then_outer_rolled_back")
        halt(driver, "released_then_outer_rolled_back", "ABORTED")
        inner.commit()
        outer.rollback()
        halt(driver, "kept_after", "BLOCKED")
        insert_run(session, "kept_after")
        session.commit()
    expected = ["kept_before", "released", "kept_after"]
    assert runs_in_db(db_path) == sorted((r, "halted") for r in expected)
    assert [e[3] for e in events_in(store)] == expected
    assert [e[2] for e in events_in(store)] == ["BLOCKED", "STOPPED", "BLOCKED"]


def test_commit_from_inside_a_savepoint_records_its_events(engine, db_path, store):
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        halt(driver, "outer")
        session.begin_nested()
        halt(driver, "inside")
        session.commit()  # releases the savepoint, then commits the transaction
    assert [e[3] for e in events_in(store)] == ["outer", "inside"]


def test_session_reused_for_several_transactions_records_each_once(engine, db_path, store):
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        for i in range(3):
            insert_run(session, f"run_{i}")
            halt(driver, f"run_{i}")
            session.commit()
        insert_run(session, "run_rolled_back")
        halt(driver, "run_rolled_back")
        session.rollback()
        with session.begin():
            insert_run(session, "run_3")
            halt(driver, "run_3")
        # A second driver on the same session shares its staging.
        halt(PolicyEnforcementWriteDriver(session, store=store), "run_4")
        halt(driver, "run_4", "KILLED")
        session.commit()
    assert [e[3] for e in events_in(store)] == ["run_0", "run_1", "run_2", "run_3", "run_4", "run_4"]
    assert len(runs_in_db(db_path)) == 4


def test_session_closed_without_commit_drops_staged_events(engine, db_path, store):
    session = Session(engine)
    driver = PolicyEnforcementWriteDriver(session, store=store)
    insert_run(session, "run_1")
    halt(driver, "run_1")
    assert staged_count(session) == 1
    session.close()
    assert staged_count(session) == 0
    # The closed session is used again: only the new transaction's events.
    halt(driver, "run_2")
    session.commit()
    assert runs_in_db(db_path) == []
    assert [e[3] for e in events_in(store)] == ["run_2"]


def test_staging_without_a_transaction_starts_one_like_add(engine, store):
    with Session(engine) as session:
        assert not session.in_transaction()
        halt(PolicyEnforcementWriteDriver(session, store=store), "run_1")
        assert session.in_transaction()
        with pytest.raises(InvalidRequestError):
            session.begin()  # as after session.add(): the transaction is under way
        session.commit()
    assert [e[3] for e in events_in(store)] == ["run_1"]
    with Session(engine, autobegin=False) as session:
        with pytest.raises(InvalidRequestError):
            halt(PolicyEnforcementWriteDriver(session, store=store), "run_2")
        assert staged_count(session) == 0


def test_bad_input_raises_at_record_time_and_stages_nothing(engine, db_path, store):
    bad_events = [
        (dict(tenant_id="", rule_id="rule_456", action_taken="BLOCKED"), "tenant_id"),
        (dict(tenant_id="tenant_123", rule_id="rule_456", action_taken="PAUSED"), "action"),
        (dict(tenant_id="tenant_123", rule_id=None, action_taken="BLOCKED"), "rule_id"),
        (dict(tenant_id="tenant_123", rule_id="rule_456", action_taken="BLOCKED",
              details={"n": float("nan")}), "details"),
        (dict(tenant_id="tenant_123", rule_id="rule_456", action_taken="BLOCKED",
              details={"blob": "x" * (64 << 10)}), "details"),
        (dict(tenant_id="tenant_123", rule_id="rule_456", action_taken="BLOCKED",
              details=["not", "a", "dict"]), "details"),
    ]
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        insert_run(session, "run_1")
        for kwargs, field in bad_events:
            with pytest.raises(enforcelog.InvalidEventError) as info:
                asyncio.run(driver.record_enforcement(**kwargs))
            assert info.value.field == field
            with pytest.raises(enforcelog.InvalidEventError):
                driver.record_enforcement_sync(**kwargs)
        assert staged_count(session) == 0
        session.commit()
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert events_in(store) == []
    assert store.metrics()["dropped"] == 0


def test_details_are_copied_when_staged(engine, store):
    details = {"reason": "Budget exceeded", "limits": {"usd": 100}}
    with Session(engine) as session:
        halt(PolicyEnforcementWriteDriver(session, store=store), "run_1", details=details)
        details["reason"] = "changed after staging"
        details["limits"]["usd"] = {"not": float("nan")}  # would not even encode
        session.commit()
    assert events_in(store)[0][4] == {"reason": "Budget exceeded", "limits": {"usd": 100}}


def test_64_kib_details_and_many_events_commit_as_one_batch(engine, store):
    blob = ("\x00" * 1024 + "ü" * 512)[: (60 << 10) // 2]
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        for i in range(200):
            halt(driver, f"run_{i}", details={"i": i, "blob": blob, "deep": {"a": {"b": [i]}}})
        session.commit()
    events = store.query(limit=1000).events
    assert [e.details["i"] for e in events] == list(range(200))
    assert all(e.details["blob"] == blob for e in events)
    assert [e.offset for e in events] == list(range(events[0].offset, events[0].offset + 200))


def test_enforcelog_failure_after_db_commit_is_logged_counted_and_not_raised(
        engine, db_path, store, caplog):
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        insert_run(session, "run_1")
        halt(driver, "run_1", "BLOCKED")
        halt(driver, "run_1", "KILLED")
        store.close()  # the store goes away between staging and commit
        with caplog.at_level(logging.ERROR, logger="enforcelog"):
            session.commit()  # does not raise: the database has committed
        assert staged_count(session) == 0
        # The session goes on working.
        insert_run(session, "run_2")
        session.commit()
    assert runs_in_db(db_path) == [("run_1", "halted"), ("run_2", "halted")]
    assert store.metrics()["dropped"] == 2
    [message] = [r.getMessage() for r in caplog.records if r.name == "enforcelog"]
    assert "2 enforcement event(s)" in message and "ClosedError" in message


def test_a_failing_batch_records_none_of_its_events(engine, db_path, store, caplog):
    # More than one segment's worth (64 MiB) of events in one transaction: the
    # batch is refused whole (atomic), after the database committed.
    blob = "x" * (60 << 10)
    count = (64 << 20) // len(blob) + 8
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        insert_run(session, "run_1")
        for i in range(count):
            halt(driver, "run_1", details={"i": i, "blob": blob})
        with caplog.at_level(logging.ERROR, logger="enforcelog"):
            session.commit()
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert events_in(store) == []
    assert store.metrics()["dropped"] == count
    assert any("TooLarge" in r.getMessage() for r in caplog.records)
    # The store still works.
    store.record("tenant_123", "rule_456", "BLOCKED")
    assert len(store.query().events) == 1


# -- which store; what the driver refuses -------------------------------------

def test_session_driver_uses_the_default_store_without_store_kw(engine, store, tmp_path):
    with Session(engine) as session:
        with pytest.raises(LookupError):
            PolicyEnforcementWriteDriver(session)
        enforcelog.set_default_store(store)
        halt(PolicyEnforcementWriteDriver(session), "run_1")
        # The store is fixed when the driver is made.
        with enforcelog.Store(tmp_path / "other") as other:
            enforcelog.set_default_store(other)
            halt(PolicyEnforcementWriteDriver(session), "run_2")
            session.commit()
            assert [e[3] for e in events_in(other)] == ["run_2"]
    assert [e[3] for e in events_in(store)] == ["run_1"]


def test_session_driver_refuses_a_read_only_store_and_bad_store(engine, store_dir, store):
    store.record("t", "r", "BLOCKED")
    store.close()
    with enforcelog.Store(store_dir, read_only=True) as ro, Session(engine) as session:
        with pytest.raises(enforcelog.ReadOnlyError):
            PolicyEnforcementWriteDriver(session, store=ro)
        with pytest.raises(TypeError):
            PolicyEnforcementWriteDriver(session, store=str(store_dir))
    with pytest.raises(TypeError):
        PolicyEnforcementWriteDriver(ro.begin(), store=ro)


def test_package_works_without_sqlalchemy(tmp_path):
    # SQLAlchemy made unimportable: the package imports, batches work, and a
    # unit that is neither a batch nor a session gets the clear TypeError.
    code = (
        "import sys\n"
        "sys.modules['sqlalchemy'] = None\n"
        "import asyncio, enforcelog\n"
        "from enforcelog import PolicyEnforcementWriteDriver\n"
        "assert not any(m.startswith('sqlalchemy') and sys.modules[m] for m in sys.modules)\n"
        f"store = enforcelog.Store({str(tmp_path / 'store')!r})\n"
        "with store.begin() as b:\n"
        "    asyncio.run(PolicyEnforcementWriteDriver(b).record_enforcement("
        "tenant_id='t', rule_id='r', action_taken='BLOCKED'))\n"
        "print(store.stats('t', 'r').trigger_count)\n"
        "try:\n"
        "    PolicyEnforcementWriteDriver(object())\n"
        "except TypeError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL)
    count, message = out.stdout.strip().split("\n")
    assert count == "1"
    assert "store.begin()" in message and "Session" in message and "object" in message


# -- AsyncSession ---------------------------------------------------------------

def test_async_session_commit_rollback_and_savepoint(async_engine, db_path, store):
    async def main():
        make_session = async_sessionmaker(async_engine)
        async with make_session() as session:
            driver = PolicyEnforcementWriteDriver(session, store=store)
            await session.execute(text("INSERT INTO runs VALUES ('committed', 'halted')"))
            await driver.record_enforcement(tenant_id="tenant_123", rule_id="rule_456",
                                            action_taken="BLOCKED", run_id="committed",
                                            details=DETAILS)
            try:
                async with session.begin_nested():
                    await session.execute(text("INSERT INTO runs VALUES ('sp', 'halted')"))
                    await driver.record_enforcement(tenant_id="tenant_123", rule_id="rule_456",
                                                    action_taken="KILLED", run_id="sp")
                    raise KeyError("savepoint body failed")
            except KeyError:
                pass
            await session.commit()
            assert staged_count(session) == 0

            await session.execute(text("INSERT INTO runs VALUES ('rolled_back', 'halted')"))
            await driver.record_enforcement(tenant_id="tenant_123", rule_id="rule_456",
                                            action_taken="STOPPED", run_id="rolled_back")
            assert staged_count(session) == 1
            await session.rollback()

        with pytest.raises(LookupError):
            async with make_session.begin() as session:
                await session.execute(text("INSERT INTO runs VALUES ('exc', 'halted')"))
                await PolicyEnforcementWriteDriver(session, store=store).record_enforcement(
                    tenant_id="tenant_123", rule_id="rule_456", action_taken="ABORTED",
                    run_id="exc")
                raise LookupError("host failure")

        async with make_session.begin() as session:  # a second transaction, committed
            await session.execute(text("INSERT INTO runs VALUES ('second', 'halted')"))
            await PolicyEnforcementWriteDriver(session, store=store).record_enforcement(
                tenant_id="tenant_123", rule_id="rule_456", action_taken="stopped",
                run_id="second")
        reader = PolicyEnforcementReadDriver(store)
        return await reader.trigger_count_30d("tenant_123", "rule_456")

    assert asyncio.run(main()) == 2
    assert runs_in_db(db_path) == [("committed", "halted"), ("second", "halted")]
    assert events_in(store) == [
        ("tenant_123", "rule_456", "BLOCKED", "committed", DETAILS),
        ("tenant_123", "rule_456", "STOPPED", "second", None),
    ]


def test_async_session_failure_after_db_commit_is_logged_counted_and_not_raised(
        async_engine, db_path, store, caplog):
    async def main():
        async with AsyncSession(async_engine) as session:
            driver = PolicyEnforcementWriteDriver(session, store=store)
            await session.execute(text("INSERT INTO runs VALUES ('run_1', 'halted')"))
            await driver.record_enforcement(tenant_id="tenant_123", rule_id="rule_456",
                                            action_taken="BLOCKED", run_id="run_1")
            await store.close_async()
            with caplog.at_level(logging.ERROR, logger="enforcelog"):
                await session.commit()
    asyncio.run(main())
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert store.metrics()["dropped"] == 1
    assert any("1 enforcement event(s)" in r.getMessage() for r in caplog.records)


def test_async_sessions_in_concurrent_tasks_keep_their_own_events(async_engine, db_path, store):
    async def host_task(make_session, i):
        async with make_session() as session:
            driver = PolicyEnforcementWriteDriver(session, store=store)
            # Staged before the session touches the database: autobegins.
            await driver.record_enforcement(tenant_id=f"tenant_{i}", rule_id="rule_456",
                                            action_taken="BLOCKED", run_id=f"run_{i}")
            await session.execute(text("INSERT INTO runs VALUES (:id, 'halted')"),
                                  {"id": f"run_{i}"})
            await asyncio.sleep(0)  # let the other tasks interleave
            await driver.record_enforcement(tenant_id=f"tenant_{i}", rule_id="rule_456",
                                            action_taken="STOPPED", run_id=f"run_{i}")
            if i % 2:
                await session.rollback()
            else:
                await session.commit()

    async def main():
        make_session = async_sessionmaker(async_engine)
        # SQLite has one writer: the tasks take turns at the database, but their
        # staging interleaves in the one event loop.
        for group in range(2):
            await asyncio.gather(*(host_task(make_session, group * 4 + i) for i in range(4)))
    asyncio.run(main())
    committed = [f"run_{i}" for i in range(8) if i % 2 == 0]
    assert runs_in_db(db_path) == [(r, "halted") for r in committed]
    events = events_in(store)
    assert sorted({e[3] for e in events}) == committed
    for run in committed:
        assert [e[2] for e in events if e[3] == run] == ["BLOCKED", "STOPPED"]


# -- more than one store; scoped sessions; lifetime -------------------------------

def test_one_transaction_two_stores_one_batch_each(engine, db_path, store, tmp_path, caplog):
    with enforcelog.Store(tmp_path / "second") as second, Session(engine) as session:
        to_first = PolicyEnforcementWriteDriver(session, store=store)
        to_second = PolicyEnforcementWriteDriver(session, store=second)
        halt(to_first, "run_1", "BLOCKED")
        halt(to_second, "run_1", "KILLED")
        halt(to_first, "run_1", "STOPPED")
        session.commit()
        assert [e[2] for e in events_in(store)] == ["BLOCKED", "STOPPED"]
        assert [e[2] for e in events_in(second)] == ["KILLED"]
        # One store failing does not cost the other its events.
        halt(to_first, "run_2", "BLOCKED")
        halt(to_second, "run_2", "KILLED")
        store.close()
        with caplog.at_level(logging.ERROR, logger="enforcelog"):
            session.commit()
        assert [e[3] for e in events_in(second)] == ["run_1", "run_2"]
    assert store.metrics()["dropped"] == 1
    assert second.metrics()["dropped"] == 0


def test_scoped_sessions_stand_for_their_current_session(engine, async_engine, store):
    from sqlalchemy.ext.asyncio import async_scoped_session
    from sqlalchemy.orm import scoped_session

    scoped = scoped_session(sessionmaker(engine))
    halt(PolicyEnforcementWriteDriver(scoped, store=store), "sync_scoped")
    scoped.commit()
    scoped.remove()

    async def main():
        scoped_async = async_scoped_session(async_sessionmaker(async_engine),
                                            scopefunc=asyncio.current_task)
        await PolicyEnforcementWriteDriver(scoped_async, store=store).record_enforcement(
            tenant_id="tenant_123", rule_id="rule_456", action_taken="BLOCKED",
            run_id="async_scoped")
        await scoped_async.commit()
        await scoped_async.remove()
    asyncio.run(main())
    assert [e[3] for e in events_in(store)] == ["sync_scoped", "async_scoped"]


def test_sessions_with_drivers_are_freed(engine, store):
    import gc
    import weakref

    refs = []
    for i in range(20):
        session = Session(engine)
        halt(PolicyEnforcementWriteDriver(session, store=store), f"run_{i}")
        if i % 2:
            session.commit()
        session.close()
        refs.append(weakref.ref(session))
        del session
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert len(events_in(store)) == 10


def test_a_commit_the_database_refuses_records_no_events(engine, db_path, store):
    from sqlalchemy.exc import IntegrityError

    Run = mapped_run_class()
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)
        halt(driver, "run_1")  # staged first: autobegins, as add() would
        session.add(Run(id="run_1", status="halted"))
        session.commit()
        halt(driver, "run_1_again", "KILLED")
        session.add(Run(id="run_1", status="halted"))  # duplicate key: the flush fails
        with pytest.raises(IntegrityError):
            session.commit()
        assert staged_count(session) == 1  # until the host rolls back
        session.rollback()
        assert staged_count(session) == 0
        halt(driver, "run_2", "STOPPED")
        session.add(Run(id="run_2", status="halted"))
        session.commit()
    assert runs_in_db(db_path) == [("run_1", "halted"), ("run_2", "halted")]
    assert [e[3] for e in events_in(store)] == ["run_1", "run_2"]


def test_disk_full_after_db_commit_is_logged_counted_and_not_raised(tmp_path):
    """A child process with a file-size limit (RLIMIT_FSIZE) the database's
    small writes stay under and the events' batch does not: the write fails
    with EFBIG after the database committed."""
    import textwrap

    script = textwrap.dedent("""
        import logging, resource, signal, sys
        from sqlalchemy import create_engine, text
        from sqlalchemy.orm import Session
        import enforcelog
        from enforcelog import PolicyEnforcementWriteDriver

        store_dir, db = sys.argv[1], sys.argv[2]
        logging.basicConfig(stream=sys.stderr)
        engine = create_engine(f"sqlite:///{db}")
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT NOT NULL)"))
        store = enforcelog.Store(store_dir)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        limit = 256 << 10
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        with Session(engine) as session:
            driver = PolicyEnforcementWriteDriver(session, store=store)
            session.execute(text("INSERT INTO runs VALUES ('run_1', 'halted')"))
            pad = ("\\x00" * 8 + "y" * 1016) * 40  # ~42 KB of JSON
            for i in range(8):  # ~340 KB in one batch: past the limit
                driver.record_enforcement_sync(
                    tenant_id="tenant_123", rule_id="rule_456", action_taken="BLOCKED",
                    run_id="run_1", details={"i": i, "pad": pad})
            session.commit()  # must not raise
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id FROM runs")).fetchall()
        print(len(rows), store.metrics()["dropped"])
    """)
    store_dir, db = tmp_path / "store", tmp_path / "host.sqlite"
    out = subprocess.run([sys.executable, "-c", script, str(store_dir), str(db)],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "8"]
    assert "8 enforcement event(s) of a committed SQLAlchemy transaction" in out.stderr
    assert runs_in_db(db) == [("run_1", "halted")]
    # Reopened without the limit: none of the batch is in the log.
    with enforcelog.Store(store_dir) as reopened:
        assert reopened.query().events == []


def test_events_staged_from_flush_hooks_share_the_transaction(engine, db_path, store):
    # Hosts stage outcomes from their own session hooks; during a flush the
    # session is inside SQLAlchemy's internal subtransaction.
    Run = mapped_run_class()
    with Session(engine) as session:
        driver = PolicyEnforcementWriteDriver(session, store=store)

        @event.listens_for(session, "after_flush")
        def _record_halts(session, _flush_context):
            for obj in session.new:
                halt(driver, obj.id)

        session.add(Run(id="run_1", status="halted"))
        session.flush()
        savepoint = session.begin_nested()
        session.add(Run(id="run_sp", status="halted"))
        session.flush()  # staged inside the savepoint...
        savepoint.rollback()  # ...and dropped with it
        session.add(Run(id="run_2", status="halted"))
        session.commit()  # flushes, then commits
        session.add(Run(id="run_rolled_back", status="halted"))
        session.flush()
        session.rollback()
    assert runs_in_db(db_path) == [("run_1", "halted"), ("run_2", "halted")]
    assert [e[3] for e in events_in(store)] == ["run_1", "run_2"]


# -- sessions joined to a transaction they do not commit (review15 finding 6) ---

JOIN_CASES = [
    # (join_transaction_mode, host opens a savepoint on the connection first)
    (None, False),  # SQLAlchemy's default: the host's transaction is left to the host
    (None, True),
    ("rollback_only", False),
    ("create_savepoint", False),
    ("control_fully", True),  # fully, but of the host's savepoint only
]


@pytest.mark.parametrize("outer_commits", [True, False], ids=["outer_commit", "outer_rollback"])
@pytest.mark.parametrize("mode,host_savepoint", JOIN_CASES)
def test_session_joined_to_an_outer_transaction_is_refused_at_record_time(
        engine, db_path, store, mode, host_savepoint, outer_commits):
    with engine.connect() as conn:
        outer = conn.begin()
        if host_savepoint:
            conn.begin_nested()
        kw = {} if mode is None else {"join_transaction_mode": mode}
        session = Session(bind=conn, **kw)
        driver = PolicyEnforcementWriteDriver(session, store=store)
        # Refused before and after the session has joined (executed SQL).
        with pytest.raises(InvalidRequestError, match="joins a transaction it does not commit"):
            halt(driver, "before_sql")
        insert_run(session, "run_1")
        with pytest.raises(InvalidRequestError, match="joins a transaction it does not commit"):
            halt(driver, "after_sql")
        assert staged_count(session) == 0
        session.commit()  # the session goes on working; nothing was staged
        session.close()
        if outer_commits:
            outer.commit()
        else:
            outer.rollback()
    assert runs_in_db(db_path) == ([("run_1", "halted")] if outer_commits else [])
    assert events_in(store) == []
    assert store.metrics()["dropped"] == 0


def test_session_controlling_the_outer_transaction_commits_it_and_records_once(
        engine, db_path, store):
    with engine.connect() as conn:
        conn.begin()
        session = Session(bind=conn, join_transaction_mode="control_fully")
        driver = PolicyEnforcementWriteDriver(session, store=store)
        insert_run(session, "run_1")
        halt(driver, "run_1")
        session.commit()  # commits the connection's transaction
        assert not conn.in_transaction()
        session.close()
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert events_in(store) == [("tenant_123", "rule_456", "BLOCKED", "run_1", DETAILS)]


@pytest.mark.parametrize("sql_first", [True, False], ids=["sql_first", "record_first"])
def test_session_bound_to_an_idle_connection_owns_its_transaction_and_records(
        engine, db_path, store, sql_first):
    with engine.connect() as conn:
        with Session(bind=conn) as session:
            driver = PolicyEnforcementWriteDriver(session, store=store)
            if sql_first:  # the session began the connection's transaction itself
                insert_run(session, "run_1")
                halt(driver, "run_1")
            else:
                halt(driver, "run_1")
                insert_run(session, "run_1")
            session.commit()
            assert not conn.in_transaction()
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert events_in(store) == [("tenant_123", "rule_456", "BLOCKED", "run_1", DETAILS)]


@pytest.mark.parametrize("outer_commits", [True, False], ids=["outer_commit", "outer_rollback"])
def test_session_joining_an_outer_transaction_after_staging_records_nothing_and_counts(
        engine, db_path, store, caplog, outer_commits):
    # Staged while the connection was idle (so not refused), then the host
    # begins a transaction on it and the session joins it: the session's
    # commit commits nothing, so the events are counted and logged, never
    # recorded (a record could be a phantom; the outer fate is unknown then).
    with engine.connect() as conn:
        session = Session(bind=conn)
        driver = PolicyEnforcementWriteDriver(session, store=store)
        halt(driver, "run_1")
        outer = conn.begin()
        insert_run(session, "run_1")
        with caplog.at_level(logging.ERROR, logger="enforcelog"):
            session.commit()
        assert staged_count(session) == 0
        session.close()
        if outer_commits:
            outer.commit()
        else:
            outer.rollback()
    assert runs_in_db(db_path) == ([("run_1", "halted")] if outer_commits else [])
    assert events_in(store) == []
    assert store.metrics()["dropped"] == 1
    [message] = [r.getMessage() for r in caplog.records if r.name == "enforcelog"]
    assert "1 enforcement event(s)" in message and "joined an outer transaction" in message


def test_async_session_joined_to_an_outer_transaction_is_refused(async_engine, db_path, store):
    async def main():
        async with async_engine.connect() as conn:
            outer = await conn.begin()
            session = AsyncSession(bind=conn)
            driver = PolicyEnforcementWriteDriver(session, store=store)
            await session.execute(text("INSERT INTO runs VALUES ('run_1', 'halted')"))
            with pytest.raises(InvalidRequestError, match="joins a transaction it does not commit"):
                await driver.record_enforcement(tenant_id="tenant_123", rule_id="rule_456",
                                                action_taken="BLOCKED", run_id="run_1")
            await session.commit()
            await session.close()
            await outer.commit()
    asyncio.run(main())
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert events_in(store) == []


# -- staging from the session's own event hooks (review15 finding 8) -----------

def test_event_staged_from_a_savepoint_release_hook_is_refused_and_the_rest_recorded(
        engine, db_path, store):
    session = Session(engine)
    driver = PolicyEnforcementWriteDriver(session, store=store)
    refused = []

    def host_hook(s):  # fires for the savepoint's release, then the outer commit
        try:
            halt(driver, "late")
        except InvalidRequestError as e:
            refused.append(str(e))

    halt(driver, "outer")
    savepoint = session.begin_nested()
    halt(driver, "inside")
    event.listen(session, "after_commit", host_hook)
    savepoint.commit()
    session.commit()
    session.close()
    assert [e[3] for e in events_in(store)] == ["outer", "inside"]
    assert len(refused) == 2 and all("already committed" in m for m in refused)
    assert store.metrics()["dropped"] == 0


def test_event_staged_when_the_transaction_ends_goes_to_the_next_one(engine, store):
    # A host hook that runs before enforcelog's own after_transaction_end
    # starts the session's next transaction (autobegin) and stages on it: the
    # end of the old transaction must not drop it.
    session = Session(engine)
    staged_at_end = []

    def host_end_hook(s, transaction):
        if transaction.parent is None and not staged_at_end:
            staged_at_end.append(True)
            halt(driver, "next")

    event.listen(session, "after_transaction_end", host_end_hook)
    driver = PolicyEnforcementWriteDriver(session, store=store)
    halt(driver, "first")
    session.commit()
    assert staged_count(session) == 1
    session.commit()
    session.close()
    assert [e[3] for e in events_in(store)] == ["first", "next"]


def test_event_staged_after_a_failed_flush_or_in_a_rollback_hook_is_refused(
        engine, db_path, store):
    Run = mapped_run_class()
    session = Session(engine)
    driver = PolicyEnforcementWriteDriver(session, store=store)
    insert_run(session, "run_1")
    session.commit()
    refused = []

    def on_rollback(s):  # the failed flush rolls the database transaction back
        try:
            halt(driver, "in_after_rollback")
        except InvalidRequestError as e:
            refused.append(e)

    def on_soft_rollback(s, previous):
        if previous.parent is None:  # the outermost is over: the next one starts
            halt(driver, "next")

    event.listen(session, "after_rollback", on_rollback)
    event.listen(session, "after_soft_rollback", on_soft_rollback)
    halt(driver, "doomed")  # staged on a transaction that then fails
    session.add(Run(id="run_1", status="duplicate"))
    with pytest.raises(Exception, match="UNIQUE"):
        session.flush()
    assert len(refused) == 1
    # The transaction can only roll back now: refused, not staged to vanish.
    with pytest.raises(InvalidRequestError, match="rolled back"):
        halt(driver, "after_failed_flush")
    session.rollback()  # drops "doomed"; the hook stages on the next transaction
    assert staged_count(session) == 1
    session.commit()
    session.close()
    assert [e[3] for e in events_in(store)] == ["next"]
    assert len(refused) == 1 and store.metrics()["dropped"] == 0
    assert runs_in_db(db_path) == [("run_1", "halted")]


def test_a_host_after_commit_hook_that_raises_does_not_lose_committed_events(
        engine, db_path, store):
    # The host's hook is on the session before enforcelog's; SQLAlchemy stops
    # at the first listener that raises, after the database has committed.
    session = Session(engine)

    def failing_host_hook(s):
        raise RuntimeError("host after_commit hook failed")

    event.listen(session, "after_commit", failing_host_hook)
    driver = PolicyEnforcementWriteDriver(session, store=store)
    insert_run(session, "run_1")
    halt(driver, "run_1")
    with pytest.raises(RuntimeError, match="host after_commit hook failed"):
        session.commit()
    session.close()
    assert runs_in_db(db_path) == [("run_1", "halted")]
    assert events_in(store) == [("tenant_123", "rule_456", "BLOCKED", "run_1", DETAILS)]


def test_check_joinable_refuses_a_joined_session_before_any_record(engine, store):
    # enforcelog.session.check_joinable is what a driver can call when made.
    from enforcelog.session import check_joinable

    with engine.connect() as idle:
        check_joinable(Session(bind=idle))  # owns the transaction it will begin
    check_joinable(Session(engine))
    with engine.connect() as conn:
        conn.begin()
        check_joinable(Session(bind=conn, join_transaction_mode="control_fully"))
        session = Session(bind=conn)
        with pytest.raises(InvalidRequestError, match="joins a transaction it does not commit"):
            check_joinable(session)
        insert_run(session, "run_1")  # joined now: refused all the same
        with pytest.raises(InvalidRequestError, match="joins a transaction it does not commit"):
            check_joinable(session)
        session.close()
