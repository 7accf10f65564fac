"""The driver API, with exactly the names and keyword arguments hosts call."""

import asyncio
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

import enforcelog
from enforcelog import (PolicyEnforcementReadDriver, PolicyEnforcementWriteDriver,
                        record_enforcement_standalone)


@pytest.fixture(autouse=True)
def no_default_store():
    enforcelog.set_default_store(None)
    yield
    enforcelog.set_default_store(None)


def test_write_driver_records_when_the_unit_commits_and_not_otherwise(store):
    async def main():
        async with store.begin() as unit:
            driver = PolicyEnforcementWriteDriver(unit)
            await driver.record_enforcement(tenant_id="tenant_123", rule_id="rule_456",
                                            action_taken="BLOCKED", run_id="run_789",
                                            details={"reason": "Budget exceeded"})
        with pytest.raises(RuntimeError):
            async with store.begin() as unit:
                await PolicyEnforcementWriteDriver(unit).record_enforcement(
                    tenant_id="tenant_123", rule_id="rule_456", action_taken="STOPPED")
                raise RuntimeError("the host's transaction failed")
        unit = store.begin()
        await PolicyEnforcementWriteDriver(unit).record_enforcement(
            tenant_id="tenant_123", rule_id="rule_456", action_taken="KILLED")
        # never committed: nothing recorded
    asyncio.run(main())
    [event] = store.query("tenant_123").events
    assert (event.action, event.run_id, event.details) == (
        enforcelog.Action.BLOCKED, "run_789", {"reason": "Budget exceeded"})


def test_write_driver_refuses_bad_units_and_bad_events(store):
    with pytest.raises(TypeError):
        PolicyEnforcementWriteDriver(store)

    async def main():
        driver = PolicyEnforcementWriteDriver(store.begin())
        with pytest.raises(enforcelog.InvalidEventError) as info:
            await driver.record_enforcement(tenant_id="t", rule_id="r", action_taken="PAUSED")
        assert info.value.field == "action"
    asyncio.run(main())


def test_standalone_with_store_and_default_store(store):
    async def main():
        await record_enforcement_standalone(tenant_id="tenant_123", rule_id="rule_456",
                                            action_taken="STOPPED", run_id="run_789",
                                            store=store)
        # No default store yet: dropped, logged, never raised.
        await record_enforcement_standalone(tenant_id="tenant_123", rule_id="rule_456",
                                            action_taken="STOPPED")
        enforcelog.set_default_store(store)
        await record_enforcement_standalone(tenant_id="tenant_123", rule_id="rule_456",
                                            action_taken="stop", details={"n": 1})
        # Bad input: never raises.
        await record_enforcement_standalone(tenant_id="", rule_id="rule_456",
                                            action_taken="STOPPED")
        await store.flush_async()
    asyncio.run(main())
    assert store.stats("tenant_123", "rule_456").trigger_count == 2
    assert store.metrics()["dropped"] == 1


def test_default_store_opens_from_enforcelog_dir(tmp_path):
    code = (
        "import asyncio, enforcelog\n"
        "asyncio.run(enforcelog.record_enforcement_standalone(tenant_id='t', rule_id='r',"
        " action_taken='BLOCKED'))\n"
        "print(enforcelog.get_default_store().path)\n"
    )
    env = {"ENFORCELOG_DIR": str(tmp_path / "env-store"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True, stdin=subprocess.DEVNULL)
    assert out.stdout.strip() == str(tmp_path / "env-store")
    with enforcelog.Store(tmp_path / "env-store", read_only=True) as ro:
        assert ro.stats("t", "r").trigger_count == 1


def test_read_driver_counts_last_and_stats(store):
    reader = PolicyEnforcementReadDriver(store)
    at = datetime.now(timezone.utc).replace(microsecond=0)

    async def main():
        assert await reader.trigger_count_30d("tenant_123", "rule_456") == 0
        assert await reader.last_triggered_at("tenant_123", "rule_456") is None
        store.record("tenant_123", "rule_456", "BLOCKED", enforced_at=at)
        await store.record_async("tenant_123", "rule_456", "STOPPED", enforced_at=at - timedelta(days=365))  # outside the 30 days
        count = await reader.trigger_count_30d("tenant_123", "rule_456")
        last = await reader.last_triggered_at("tenant_123", "rule_456")
        stats = await reader.stats("tenant_123", "rule_456")
        return count, last, stats
    count, last, stats = asyncio.run(main())
    assert count == 1
    assert last == at and last.tzinfo == timezone.utc
    assert stats.total_count == 2 and stats.by_action["BLOCKED"] == 1
    assert isinstance(count, int)
