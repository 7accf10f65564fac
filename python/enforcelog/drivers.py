"""The enforcement drivers hosts already call, on an enforcelog store.

- ``PolicyEnforcementWriteDriver(unit)``: stages events on the caller's unit of
  work (a batch from ``store.begin()``, or a SQLAlchemy session: see
  ``enforcelog.session``); the caller commits.
- ``record_enforcement_standalone(...)``: fail-safe fire-and-forget for the
  halt path; commits by itself, never raises, never blocks the halt for longer
  than the store's ``detached_timeout_ms``.
- ``PolicyEnforcementReadDriver(store)``: the trigger queries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from datetime import datetime
from typing import Any, Mapping, Optional

from ._store import ActionLike, Batch, RuleStats, Store

logger = logging.getLogger("enforcelog")

__all__ = [
    "PolicyEnforcementWriteDriver",
    "PolicyEnforcementReadDriver",
    "record_enforcement_standalone",
    "record_enforcement_standalone_sync",
    "set_default_store",
    "get_default_store",
]

_default_lock = threading.Lock()
_default_store: Optional[Store] = None


def _forget_default_store_in_child() -> None:
    """A forked child cannot use the parent's store (its writer did not
    survive the fork): the next default-store call opens its own, from
    ``ENFORCELOG_DIR``, or reports that there is none."""
    global _default_store, _default_lock
    _default_lock = threading.Lock()  # the parent may have held it
    _default_store = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_store_in_child)


def set_default_store(store: Optional[Store]) -> None:
    """Sets (or with ``None`` clears) the store ``record_enforcement_standalone``
    uses when called without ``store=``."""
    global _default_store
    with _default_lock:
        _default_store = store


def get_default_store() -> Store:
    """The process's default store: the one set by ``set_default_store``, or else
    one opened on first use from the ``ENFORCELOG_DIR`` environment variable (the
    CLI's convention). Raises ``LookupError`` when neither is there."""
    global _default_store
    with _default_lock:
        if _default_store is None:
            path = os.environ.get("ENFORCELOG_DIR")
            if not path:
                raise LookupError(
                    "no default enforcelog store: call enforcelog.set_default_store(store) "
                    "or set ENFORCELOG_DIR"
                )
            _default_store = Store(path)
        return _default_store


def _sqlalchemy_session(unit: Any) -> Any:
    """The SQLAlchemy ``Session`` behind ``unit`` (itself, an ``AsyncSession``'s
    ``sync_session``, or a scoped session's current one), or None. Imports
    nothing: a host that holds a session has already imported the SQLAlchemy
    modules that define it."""
    orm = sys.modules.get("sqlalchemy.orm")
    aio = sys.modules.get("sqlalchemy.ext.asyncio")
    # A scoped session stands for the session of the current scope.
    if orm is not None and isinstance(unit, orm.scoped_session):
        unit = unit()
    elif aio is not None and isinstance(unit, aio.async_scoped_session):
        unit = unit()
    if orm is not None and isinstance(unit, orm.Session):
        return unit
    if aio is not None and isinstance(unit, aio.AsyncSession):
        return unit.sync_session
    return None


class PolicyEnforcementWriteDriver:
    """Records enforcement outcomes inside the caller's unit of work; the caller
    commits.

    ``unit`` is either

    - a batch from ``store.begin()``: the events are recorded when the caller
      commits it (or leaves its ``with``/``async with`` normally), and not at
      all when it does not; or
    - a SQLAlchemy 2.x ``Session`` or ``AsyncSession``, or a scoped one (the
      optional extra ``enforcelog[sqlalchemy]``): the events are staged on the
      session's transaction, recorded in one atomic batch when the session commits, and
      dropped when it (or their savepoint) rolls back. ``store=`` picks the
      store, else the process's default (``get_default_store()``). When
      ``session.commit()`` returns the events are durable; if recording fails
      after the database committed, the events are logged and counted as
      dropped, never raised. For an ``AsyncSession`` that wait (one fsync)
      happens on the event loop's thread, inside ``await session.commit()``.
      Details: the module ``enforcelog.session``.
    """

    def __init__(self, unit: Any, *, store: Optional[Store] = None) -> None:
        """Raises ``TypeError`` for a unit that is neither a batch nor a session
        (and for ``store=`` with a batch); for a session, ``LookupError`` when
        there is no ``store=`` and no default store, ``ReadOnlyError`` for a
        read-only store."""
        self._batch: Optional[Batch] = None
        self._session: Any = None
        self._store: Optional[Store] = None
        if isinstance(unit, Batch):
            if store is not None:
                raise TypeError("store= is for a SQLAlchemy session; a batch writes to its own store")
            self._batch = unit
            return
        session = _sqlalchemy_session(unit)
        if session is None:
            raise TypeError(
                f"PolicyEnforcementWriteDriver needs a batch from store.begin() or a "
                f"SQLAlchemy Session or AsyncSession, got {type(unit).__name__}"
            )
        from . import session as _session

        target = store if store is not None else get_default_store()
        if not isinstance(target, Store):
            raise TypeError(f"store= must be an enforcelog.Store, got {type(target).__name__}")
        _session.check_writable(target)
        self._session = session
        self._store = target

    def record_enforcement_sync(
        self,
        tenant_id: str,
        rule_id: str,
        action_taken: ActionLike,
        run_id: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """``record_enforcement`` for sync code (a sync ``Session``): the same
        staging, without an event loop."""
        if self._batch is not None:
            self._batch.record(tenant_id, rule_id, action_taken, run_id, details)
            return
        from . import session as _session

        assert self._store is not None
        _session.stage(self._session, self._store, tenant_id, rule_id, action_taken, run_id, details)

    async def record_enforcement(
        self,
        tenant_id: str,
        rule_id: str,
        action_taken: ActionLike,
        run_id: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """Stages one outcome on the unit. Raises ``InvalidEventError`` (``.field``
        names the field) for a bad one, staging nothing; nothing is written
        until the unit commits. Never blocks: staging does no I/O."""
        self.record_enforcement_sync(tenant_id, rule_id, action_taken, run_id, details)


def record_enforcement_standalone_sync(
    tenant_id: str,
    rule_id: str,
    action_taken: ActionLike,
    run_id: Optional[str] = None,
    details: Optional[Mapping[str, Any]] = None,
    store: Optional[Store] = None,
) -> None:
    """``record_enforcement_standalone`` for sync code (also sync code called
    inside a running event loop, where ``asyncio.run()`` fails): the same
    fail-safe fire-and-forget, without an event loop."""
    try:
        target = store if store is not None else get_default_store()
    except BaseException as e:  # noqa: BLE001 - never raise on the halt path
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        logger.warning("enforcelog: enforcement outcome dropped, no store: %s", e)
        return
    if not isinstance(target, Store):
        logger.warning("enforcelog: enforcement outcome dropped: store= is a %s, not an "
                       "enforcelog.Store", type(target).__name__)
        return
    target.record_detached(tenant_id, rule_id, action_taken, run_id, details)


async def record_enforcement_standalone(
    tenant_id: str,
    rule_id: str,
    action_taken: ActionLike,
    run_id: Optional[str] = None,
    details: Optional[Mapping[str, Any]] = None,
    store: Optional[Store] = None,
) -> None:
    """Records one outcome on its own, fail-safe: never raises, returns within
    the store's ``detached_timeout_ms``. Without ``store=`` it uses the default
    store (``set_default_store``, or else ``ENFORCELOG_DIR``, opened on first
    use). What cannot be recorded is logged to the ``enforcelog`` logger and
    counted (``metrics()["dropped"]``). ``flush()`` makes it durable; a normal
    interpreter exit flushes it."""
    record_enforcement_standalone_sync(tenant_id, rule_id, action_taken, run_id, details, store)


class PolicyEnforcementReadDriver:
    """The trigger queries, answered from the store's projections (read-your-writes:
    everything committed before the call is counted).

    The queries are awaitables, like the write driver's: an answer may wait
    for the projections to fold what was just committed, and that wait runs
    off the event loop. Sync code asks the store directly:
    ``store.stats(tenant_id, rule_id).trigger_count``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def stats(
        self, tenant_id: str, rule_id: str, as_of: Optional[datetime] = None
    ) -> RuleStats:
        """The full statistics of one (tenant, rule)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._store.stats, tenant_id, rule_id, as_of)

    async def trigger_count_30d(self, tenant_id: str, rule_id: str) -> int:
        """Outcomes of the rule for the tenant in the last 30 days."""
        return (await self.stats(tenant_id, rule_id)).trigger_count

    async def last_triggered_at(self, tenant_id: str, rule_id: str) -> Optional[datetime]:
        """When the rule last fired for the tenant (aware UTC), or None."""
        return (await self.stats(tenant_id, rule_id)).last_triggered_at
