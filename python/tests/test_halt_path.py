"""The halt path (python/examples/halt_path.py): the run halts every time, also
when recording fails, from sync code, async code and sync code inside a running
loop; and what is recorded is exactly what the read driver reads back."""

import asyncio
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import enforcelog

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "halt_path.py"
_spec = importlib.util.spec_from_file_location("halt_path", EXAMPLE)
halt_path = importlib.util.module_from_spec(_spec)
sys.modules["halt_path"] = halt_path
_spec.loader.exec_module(halt_path)

STEPS = ["plan", "search", "pay-invoice", "report"]
DECISIONS = ["STOP", "KILL", "ABORT", "BLOCK", "stop", "block"]


def policy_for(i):
    """Run i halts at step i % 4 with decision i % 6; every 7th run is allowed."""
    def policy(step):
        if i % 7 == 6:
            return None
        if STEPS.index(step) == i % len(STEPS):
            return (f"rule_{i % 3}", DECISIONS[i % len(DECISIONS)])
        return ("rule_log_only", "ALLOW")
    return policy


def expected_outcomes(n_runs):
    out = []
    for i in range(n_runs):
        if i % 7 != 6:
            out.append((f"run{i}", f"rule_{i % 3}",
                        halt_path.HALTING[DECISIONS[i % len(DECISIONS)].upper()]))
    return out


def run_all_sync(store, n_runs):
    halted = 0
    for i in range(n_runs):
        run = halt_path.Run("tenant_123", f"run{i}", policy_for(i), store)
        try:
            run.run(STEPS)
            assert run.steps_done == STEPS
        except halt_path.StepEnforcementError as e:
            halted += 1
            assert e.step == STEPS[i % len(STEPS)]
            assert run.steps_done == STEPS[: i % len(STEPS)]
    return halted


async def run_all_async(store, n_runs):
    halted = 0
    for i in range(n_runs):
        run = halt_path.Run("tenant_123", f"run{i}", policy_for(i), store)
        try:
            await run.run_async(STEPS)
        except halt_path.StepEnforcementError:
            halted += 1
            assert run.steps_done == STEPS[: i % len(STEPS)]
    return halted


def halting_runs(n_runs):
    return len(expected_outcomes(n_runs))


def assert_recorded_exactly(store, n_runs):
    """The events and the read driver's counts are exactly the outcomes."""
    store.flush()
    expected = expected_outcomes(n_runs)
    events = store.query("tenant_123", limit=10_000).events
    assert [(e.run_id, e.rule_id, e.action.value) for e in events] == expected
    reader = enforcelog.PolicyEnforcementReadDriver(store)

    async def counts():
        return {r: await reader.trigger_count_30d("tenant_123", r) for r in
                ["rule_0", "rule_1", "rule_2", "rule_log_only"]}
    by_rule = Counter(rule for _, rule, _ in expected)
    assert asyncio.run(counts()) == {"rule_0": by_rule["rule_0"], "rule_1": by_rule["rule_1"],
                                     "rule_2": by_rule["rule_2"], "rule_log_only": 0}


N = 40


def test_sync_runs_halt_and_outcomes_are_read_back_exactly(store):
    assert run_all_sync(store, N) == halting_runs(N)
    assert_recorded_exactly(store, N)


def test_async_runs_halt_and_outcomes_are_read_back_exactly(store):
    assert asyncio.run(run_all_async(store, N)) == halting_runs(N)
    assert_recorded_exactly(store, N)


def test_sync_code_inside_a_running_loop_halts_and_records(store):
    async def host():
        # Sync code called from a coroutine: asyncio.run() would fail here.
        probe = asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            asyncio.run(probe)
        probe.close()
        return run_all_sync(store, N)
    assert asyncio.run(host()) == halting_runs(N)
    assert_recorded_exactly(store, N)


def test_runs_halt_when_the_store_is_closed(store):
    store.close()
    assert run_all_sync(store, N) == halting_runs(N)
    assert asyncio.run(run_all_async(store, N)) == halting_runs(N)
    assert store.metrics()["dropped"] == 2 * halting_runs(N)


def test_runs_halt_when_the_store_is_read_only(store_dir):
    enforcelog.Store(store_dir).close()
    with enforcelog.Store(store_dir, read_only=True) as ro:
        assert run_all_sync(ro, N) == halting_runs(N)
        assert asyncio.run(run_all_async(ro, N)) == halting_runs(N)
        assert ro.metrics()["dropped"] == 2 * halting_runs(N)
        assert ro.query("tenant_123").events == []


def test_runs_halt_when_the_default_store_cannot_be_opened(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ENFORCELOG_DIR", str(blocker / "store"))
    enforcelog.set_default_store(None)
    assert run_all_sync(None, N) == halting_runs(N)
    assert asyncio.run(run_all_async(None, N)) == halting_runs(N)
    enforcelog.set_default_store(None)


def test_runs_halt_when_the_disk_is_full(store_dir):
    """A child process with a file-size limit (RLIMIT_FSIZE): writes past it fail
    with EFBIG, the writer fails, and every run still halts."""
    enforcelog.Store(store_dir).close()
    script = textwrap.dedent(f"""
        import asyncio, resource, signal, sys
        sys.path.insert(0, {str(EXAMPLE.parent)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import enforcelog
        from test_halt_path import run_all_sync, run_all_async
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        store = enforcelog.Store(sys.argv[1], detached_timeout_ms=20)
        limit = max(p.stat().st_size for p in __import__('pathlib').Path(sys.argv[1]).rglob('*')
                    if p.is_file())
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        sync_halted = run_all_sync(store, {N})
        async_halted = asyncio.run(run_all_async(store, {N}))
        try:
            store.record('t', 'r', 'BLOCKED', details={{'pad': 'x' * 60000}})
            durable_failed = False
        except enforcelog.Error:
            durable_failed = True
        print(sync_halted, async_halted, durable_failed, store.metrics()['dropped'])
    """)
    out = subprocess.run([sys.executable, "-c", script, str(store_dir)], capture_output=True,
                         text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert out.returncode == 0, out.stderr
    sync_halted, async_halted, durable_failed, dropped = out.stdout.split()
    assert int(sync_halted) == halting_runs(N)
    assert int(async_halted) == halting_runs(N)
    assert durable_failed == "True"
    assert int(dropped) > 0


def test_the_example_runs_as_a_script(tmp_path):
    env = dict(os.environ, ENFORCELOG_DIR=str(tmp_path / "demo"))
    out = subprocess.run([sys.executable, str(EXAMPLE)], env=env, capture_output=True,
                         text=True, check=True, stdin=subprocess.DEVNULL)
    assert "halted: step 'pay-invoice'" in out.stdout
    assert "trigger count: 1" in out.stdout


@pytest.fixture
def read_only_mount(tmp_path):
    """A store directory on a read-only bind mount (needs root and mount; the
    skip says so when the machine does not allow it)."""
    src, dst = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    dst.mkdir()
    enforcelog.Store(src / "store").close()
    mounted = subprocess.run(["mount", "--bind", str(src), str(dst)], capture_output=True,
                             stdin=subprocess.DEVNULL)
    if mounted.returncode != 0:
        pytest.skip(f"read-only bind mount not permitted here: {mounted.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True,
                       capture_output=True, stdin=subprocess.DEVNULL)
        yield dst / "store"
    finally:
        # Lazy: a closed store may keep its memory maps until it is collected.
        subprocess.run(["umount", "-l", str(dst)], check=True, stdin=subprocess.DEVNULL)


def test_runs_halt_when_the_store_directory_is_read_only(read_only_mount, monkeypatch):
    with pytest.raises(enforcelog.Error):
        enforcelog.Store(read_only_mount)
    monkeypatch.setenv("ENFORCELOG_DIR", str(read_only_mount))
    enforcelog.set_default_store(None)
    try:
        assert run_all_sync(None, N) == halting_runs(N)
        assert asyncio.run(run_all_async(None, N)) == halting_runs(N)
    finally:
        enforcelog.set_default_store(None)
    with enforcelog.Store(read_only_mount, read_only=True) as ro:
        assert run_all_sync(ro, N) == halting_runs(N)
        assert ro.query("tenant_123").events == []
