"""Store: open/close, the write modes, errors, types in and out, reads."""

import json
import logging
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest

import enforcelog

REAL_DETAILS = {
    "reason": "Budget exceeded",
    "spent_usd": 1234.5,
    "limits": {"daily": 1000, "nested": {"a": [1, 2, {"b": None}]}},
    "zeros": "\u0000" * 0 + "0" * 64,
}


def test_record_returns_dense_offsets_and_stats_count_them(store):
    assert store.record("tenant_123", "rule_456", "BLOCKED", run_id="run_789") == 0
    assert store.record("tenant_123", "rule_456", enforcelog.Action.STOPPED) == 1
    assert store.record("tenant_123", "rule_other", "kill") == 2
    stats = store.stats("tenant_123", "rule_456")
    assert stats.trigger_count == 2
    assert stats.total_count == 2
    assert stats.by_action == {"STOPPED": 1, "KILLED": 0, "ABORTED": 0, "BLOCKED": 1}


def test_actions_parse_case_insensitively_like_the_rust_api(store):
    for text in ["BLOCKED", "blocked", "Block", "stop", "KILLED", "abort"]:
        store.record("t", "r", text)
    actions = [e.action for e in store.query("t").events]
    assert actions == [enforcelog.Action.BLOCKED] * 3 + [
        enforcelog.Action.STOPPED, enforcelog.Action.KILLED, enforcelog.Action.ABORTED]


def test_invalid_event_names_the_field_and_records_nothing(store):
    cases = [
        (dict(tenant_id="", rule_id="r", action="BLOCKED"), "tenant_id"),
        (dict(tenant_id="t", rule_id="r\n", action="BLOCKED"), "rule_id"),
        (dict(tenant_id="t", rule_id="r", action="PAUSED"), "action"),
        (dict(tenant_id="t", rule_id="r", action="BLOCKED", run_id="x" * 129), "run_id"),
        (dict(tenant_id="t", rule_id="r", action="BLOCKED", details=[1, 2]), "details"),
        (dict(tenant_id="t", rule_id="r", action="BLOCKED", details={"x": object()}), "details"),
        (dict(tenant_id="t", rule_id="r", action="BLOCKED",
              enforced_at=datetime(2026, 1, 1)), "enforced_at"),
        (dict(tenant_id=7, rule_id="r", action="BLOCKED"), "tenant_id"),
    ]
    for kwargs, field in cases:
        with pytest.raises(enforcelog.InvalidEventError) as info:
            store.record(**kwargs)
        assert info.value.field == field, kwargs
        assert isinstance(info.value, enforcelog.Error)
    assert store.query(None).events == []
    assert store.metrics()["recorded"] == 0


def test_details_and_datetimes_round_trip(store):
    at = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=timezone(timedelta(hours=2)))
    big = {"blob": "x" * (60 * 1024), "deep": REAL_DETAILS}
    off = store.record("t", "r", "ABORTED", run_id="run", details=big, enforced_at=at)
    [event] = store.query("t").events
    assert event.offset == off
    assert event.details == big
    assert event.enforced_at == at
    assert event.enforced_at.tzinfo == timezone.utc
    assert list(event.details) == ["blob", "deep"]  # key order kept
    stats = store.stats("t", "r", as_of=at + timedelta(days=1))
    assert stats.last_triggered_at == at and stats.last_triggered_at.tzinfo == timezone.utc


def test_query_filters_and_pages(store):
    for i in range(10):
        store.record("t", f"r{i % 2}", "BLOCKED" if i % 3 else "STOPPED", run_id=f"run{i}")
    assert [e.offset for e in store.query("t", rule_id="r1").events] == [1, 3, 5, 7, 9]
    assert [e.offset for e in store.query("t", action="stopped").events] == [0, 3, 6, 9]
    assert [e.offset for e in store.query("t", run_id="run4").events] == [4]
    page = store.query("t", limit=4)
    assert [e.offset for e in page.events] == [0, 1, 2, 3]
    rest = store.query("t", from_offset=page.next_offset)
    assert [e.offset for e in rest.events] == list(range(4, 10))


def test_batch_commits_on_normal_exit_and_records_nothing_on_exception(store):
    with store.begin() as batch:
        batch.record("t", "r", "BLOCKED")
        batch.record("t", "r", "STOPPED", details=REAL_DETAILS)
        assert len(batch) == 2
    assert [e.offset for e in store.query("t").events] == [0, 1]
    with pytest.raises(RuntimeError):
        with store.begin() as batch:
            batch.record("t", "r", "BLOCKED")
            raise RuntimeError("host failure")
    uncommitted = store.begin()
    uncommitted.record("t", "r", "BLOCKED")
    del uncommitted
    assert store.stats("t", "r").trigger_count == 2
    assert [e.offset for e in store.query("t").events] == [0, 1]


def test_batch_commit_returns_offsets_and_refuses_reuse(store):
    batch = store.begin()
    batch.record("t", "r", "BLOCKED")
    batch.record("t", "r", "BLOCKED")
    assert batch.commit() == range(0, 2)
    with pytest.raises(enforcelog.ClosedError, match="already committed"):
        batch.commit()
    with pytest.raises(enforcelog.ClosedError, match="already committed"):
        batch.record("t", "r", "BLOCKED")
    with pytest.raises(enforcelog.EmptyBatchError):
        store.begin().commit()


def test_closed_store_raises_closed_error(store):
    store.close()
    store.close()  # idempotent
    with pytest.raises(enforcelog.ClosedError):
        store.record("t", "r", "BLOCKED")


def test_context_manager_closes(store_dir):
    with enforcelog.Store(store_dir) as s:
        s.record("t", "r", "BLOCKED")
    with pytest.raises(enforcelog.ClosedError):
        s.record("t", "r", "BLOCKED")
    with enforcelog.Store(store_dir, read_only=True) as ro:
        assert ro.stats("t", "r").trigger_count == 1


def test_read_only_store_refuses_writes(store_dir):
    enforcelog.Store(store_dir).close()
    with enforcelog.Store(store_dir, read_only=True) as ro:
        with pytest.raises(enforcelog.ReadOnlyError):
            ro.record("t", "r", "BLOCKED")
        ro.record_detached("t", "r", "BLOCKED")
        assert ro.metrics()["dropped"] == 1


def test_durability_modes_open_and_bad_options_are_refused(tmp_path):
    for mode in ["fsync", "interval", "none", enforcelog.Durability.NONE]:
        with enforcelog.Store(tmp_path / str(mode)[-6:], durability=mode) as s:
            s.record("t", "r", "BLOCKED")
            s.flush()
    with pytest.raises(enforcelog.InvalidOptionsError) as info:
        enforcelog.Store(tmp_path / "bad", durability="sometimes")
    assert info.value.field == "durability"
    with pytest.raises(enforcelog.InvalidOptionsError) as info:
        enforcelog.Store(tmp_path / "bad2", detached_timeout_ms=10 ** 9)
    assert info.value.field == "detached_timeout"


def test_metrics_is_a_dict_of_counts(store):
    store.record("t", "r", "BLOCKED")
    m = store.metrics()
    assert m["recorded"] == 1 and m["dropped"] == 0 and m["fsyncs"] >= 1
    assert all(isinstance(v, int) for v in m.values())


def test_second_process_asking_for_the_directory_alone_gets_locked_error_with_advice(
        store, store_dir):
    code = (
        "import sys, enforcelog\n"
        "try:\n"
        "    enforcelog.Store(sys.argv[1], share_directory=False)\n"
        "except enforcelog.LockedError as e:\n"
        "    print('LOCKED', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(store_dir)], capture_output=True,
                         text=True, check=True, stdin=subprocess.DEVNULL)
    assert out.stdout.startswith("LOCKED"), out
    assert "read_only=True" in out.stdout and "share_directory" in out.stdout
    assert not (store_dir / "shards").exists()
    # A reader in another process is fine.
    code_ro = "import sys, enforcelog; print(enforcelog.Store(sys.argv[1], read_only=True).path)"
    subprocess.run([sys.executable, "-c", code_ro, str(store_dir)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)


def test_detached_never_raises_counts_and_logs_what_it_drops(store, caplog):
    caplog.set_level(logging.WARNING, logger="enforcelog")
    store.record_detached("t", "r", "BLOCKED", run_id="ok", details=REAL_DETAILS)
    bad_inputs = [
        ("", "r", "BLOCKED"), ("t", "r", "PAUSED"), ("t", None, "BLOCKED"),
        ("t", "r", 42), ("t", "r", "BLOCKED", "run", {"x": {1, 2}}),
        ("t", "r", "BLOCKED", None, None, "yesterday"),
    ]
    for args in bad_inputs:
        assert store.record_detached(*args) is None
    store.flush()
    assert store.stats("t", "r").trigger_count == 1
    m = store.metrics()
    assert m["dropped"] == len(bad_inputs)
    dropped_logs = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(dropped_logs) >= 2  # the Python-side refusals at least
    store.close()
    store.record_detached("t", "r", "BLOCKED")
    assert store.metrics()["dropped"] == len(bad_inputs) + 1


def test_detached_events_queued_at_a_normal_exit_are_recorded(store_dir):
    code = (
        "import sys, enforcelog\n"
        "s = enforcelog.Store(sys.argv[1], durability='none')\n"
        "for i in range(100):\n"
        "    s.record_detached('t', 'r', 'BLOCKED', run_id=f'run{i}')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(store_dir)], check=True,
                   stdin=subprocess.DEVNULL)
    with enforcelog.Store(store_dir, read_only=True) as ro:
        assert ro.stats("t", "r").total_count == 100


def test_help_reads_well():
    doc = enforcelog.Store.__doc__
    assert "record_detached" in doc and "LockedError" in doc
    for name in enforcelog.__all__:
        assert getattr(enforcelog, name).__doc__, name


def test_rust_log_records_go_to_python_logging(store):
    """The store's own log records (here: a dropped fire-and-forget event on a
    closed store) reach the `enforcelog` logger, not stderr."""
    got = threading.Event()
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)
            if "enforcelog::" in record.getMessage() and "rule_456" in record.getMessage():
                got.set()

    handler = Collect(level=logging.DEBUG)
    log = logging.getLogger("enforcelog")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.DEBUG)
    try:
        store.close()
        store.record_detached("tenant_123", "rule_456", "BLOCKED")
        assert got.wait(timeout=30), [r.getMessage() for r in records]
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    rust = [r for r in records if "enforcelog::" in r.getMessage()]
    assert any(r.levelno >= logging.WARNING and "rule_456" in r.getMessage() for r in rust), \
        [r.getMessage() for r in rust]
