"""The halt path of a host, end to end.

Before each step of a run the host asks its policy; on STOP, KILL, ABORT or
BLOCK it records the outcome through the fail-safe call and raises its own
``StepEnforcementError``. Recording can never keep the run from halting: the
fail-safe call never raises and returns within the store's bound, whatever
the store's state (closed, read-only, disk full).

Run it: ``ENFORCELOG_DIR=/tmp/halt-demo python python/examples/halt_path.py``.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

import enforcelog

#: Policy decisions that halt a run, and the action recorded for each.
HALTING = {"STOP": "STOPPED", "KILL": "KILLED", "ABORT": "ABORTED", "BLOCK": "BLOCKED"}

#: A policy: given a step, ``None`` (go on) or ``(rule_id, decision)``.
Policy = Callable[[str], Optional[Tuple[str, str]]]


class StepEnforcementError(Exception):
    """The policy halted the run before ``step``."""

    def __init__(self, step: str, rule_id: str, decision: str) -> None:
        super().__init__(f"step {step!r} halted by rule {rule_id}: {decision}")
        self.step = step
        self.rule_id = rule_id
        self.decision = decision


@dataclass
class Run:
    """One run of a host, checked against ``policy`` before every step."""

    tenant_id: str
    run_id: str
    policy: Policy
    store: Optional[enforcelog.Store] = None
    steps_done: List[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.steps_done = []

    def _decision(self, step: str) -> Optional[Tuple[str, str]]:
        verdict = self.policy(step)
        if verdict is None or verdict[1].upper() not in HALTING:
            return None
        return verdict[0], verdict[1].upper()

    def enforce(self, step: str) -> None:
        """Sync check: records a halting decision fire-and-forget, then raises."""
        verdict = self._decision(step)
        if verdict is None:
            return
        rule_id, decision = verdict
        enforcelog.record_enforcement_standalone_sync(
            tenant_id=self.tenant_id, rule_id=rule_id, action_taken=HALTING[decision],
            run_id=self.run_id, details={"step": step, "decision": decision}, store=self.store)
        raise StepEnforcementError(step, rule_id, decision)

    async def enforce_async(self, step: str) -> None:
        """Async check, through the driver API hosts call."""
        verdict = self._decision(step)
        if verdict is None:
            return
        rule_id, decision = verdict
        await enforcelog.record_enforcement_standalone(
            tenant_id=self.tenant_id, rule_id=rule_id, action_taken=HALTING[decision],
            run_id=self.run_id, details={"step": step, "decision": decision}, store=self.store)
        raise StepEnforcementError(step, rule_id, decision)

    def run(self, steps: Iterable[str]) -> None:
        for step in steps:
            self.enforce(step)
            self.steps_done.append(step)

    async def run_async(self, steps: Iterable[str]) -> None:
        for step in steps:
            await self.enforce_async(step)
            await asyncio.sleep(0)
            self.steps_done.append(step)


def budget_policy(step: str) -> Optional[Tuple[str, str]]:
    """Blocks any step that spends money."""
    return ("rule_budget", "BLOCK") if step.startswith("pay") else None


def main() -> None:
    path = os.environ.get("ENFORCELOG_DIR") or tempfile.mkdtemp(prefix="enforcelog-halt-")
    with enforcelog.Store(path) as store:
        run = Run("tenant_123", "run_789", budget_policy, store)
        try:
            run.run(["plan", "search", "pay-invoice", "report"])
        except StepEnforcementError as e:
            print("halted:", e)
        store.flush()
        print("steps done:", run.steps_done)
        print("trigger count:", store.stats("tenant_123", "rule_budget").trigger_count)


if __name__ == "__main__":
    main()
