"""Enforcement events inside a SQLAlchemy session's transaction.

``PolicyEnforcementWriteDriver(session)`` (a SQLAlchemy 2.x ``Session``, or an
``AsyncSession``, whose ``sync_session`` is used) stages events on the session;
this module holds the staging and the session event listeners. It is imported
only when a session is passed, so the package works without SQLAlchemy (the
optional extra ``enforcelog[sqlalchemy]``).

What is recorded, and when:

- **Staging.** ``record_enforcement`` validates the event at once (a bad one
  raises ``InvalidEventError`` and stages nothing) and stages it on the
  session's current transaction: the innermost savepoint
  (``session.begin_nested()``), else the outermost transaction. Like
  ``session.add()``, it starts the session's transaction (autobegin) when
  none is under way. ``enforced_at`` is the time of the call, not of the
  commit. ``details`` is copied then, so later changes to the dict do not
  reach the log.
- **Savepoints.** A savepoint that is released hands its events to the
  enclosing transaction; one that rolls back drops them.
- **Commit.** When the outermost transaction has committed (the ``after_commit``
  session event), its events are recorded in ONE enforcelog batch per store,
  atomically, and synchronously: when ``session.commit()`` returns, the events
  are durable (under the store's ``Durability.FSYNC``, the default). The GIL is
  released while the batch waits for its fsync.
- **Rollback, close, exception.** A transaction that rolls back, or ends any
  other way than by committing (``session.close()``, an exception inside
  ``with session.begin():``), drops its events. A session used for several
  transactions records each transaction's events once, at its own commit.

When the enforcelog commit fails after the database has committed (store
closed, disk full, the batch too large): the database transaction stands and
cannot be undone, so raising from ``session.commit()`` would only tell the
caller something false (that the transaction failed). The events are instead
handled by the fail-safe contract of ``record_enforcement_standalone``: each
failed batch is logged (level ERROR) to the ``enforcelog`` logger and its events
are counted in ``store.metrics()["dropped"]``; ``session.commit()`` returns
normally. The count is kept in this process (no gap marker is written to the
log for these events). A process that dies between the database's commit and
the batch's fsync loses the events silently: the order is chosen so that the
log never holds an outcome whose transaction rolled back (never a phantom),
at the price of this window.

Cost: only a commit that staged events waits for enforcelog (one group-commit
fsync). For an ``AsyncSession`` that wait happens inside ``await
session.commit()`` on the event loop's thread (SQLAlchemy runs session events
synchronously), so the loop stalls for one fsync (typically well under a
millisecond to a few milliseconds) per such commit; other threads keep running.
Hosts for which that matters stage events in a batch from ``store.begin()``
and ``await batch.commit_async()`` instead.

Listeners are installed once per session, on its first driver (instance-level
session events); nothing is installed on the ``Session`` class. The staging
lives in ``session.info`` under the key ``"enforcelog"``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from ._errors import ReadOnlyError
from ._store import ActionLike, Store

logger = logging.getLogger("enforcelog")

#: Where a session's staging lives in ``session.info``.
INFO_KEY = "enforcelog"

__all__ = ["INFO_KEY", "stage", "staged_count"]


@dataclass(frozen=True)
class _StagedEvent:
    """One validated event waiting for its transaction's commit."""

    store: Store
    tenant_id: str
    rule_id: str
    action: ActionLike
    run_id: Optional[str]
    details: Optional[Dict[str, Any]]
    enforced_at: datetime


class _Staging:
    """A session's staged events, per transaction (savepoint or outermost).

    Invariant: every key is a transaction of this session that has neither
    committed nor ended yet; events move to the enclosing transaction when a
    savepoint is released and are recorded (outermost) or dropped at the end.
    """

    def __init__(self) -> None:
        # Keyed by id(); the transaction itself is kept in the value so the id
        # cannot be reused while the entry exists.
        self.by_transaction: Dict[int, Tuple[SessionTransaction, List[_StagedEvent]]] = {}

    def add(self, transaction: SessionTransaction, staged: List[_StagedEvent]) -> None:
        entry = self.by_transaction.get(id(transaction))
        if entry is None:
            self.by_transaction[id(transaction)] = (transaction, list(staged))
        else:
            entry[1].extend(staged)

    def pop(self, transaction: SessionTransaction) -> List[_StagedEvent]:
        entry = self.by_transaction.pop(id(transaction), None)
        return [] if entry is None else entry[1]

    def count(self) -> int:
        return sum(len(events) for _, events in self.by_transaction.values())


def _staging(session: Session) -> _Staging:
    """The session's staging; installs the listeners on first use."""
    staging = session.info.get(INFO_KEY)
    if isinstance(staging, _Staging):
        return staging
    staging = _Staging()
    session.info[INFO_KEY] = staging
    event.listen(session, "after_commit", _after_commit)
    event.listen(session, "after_transaction_end", _after_transaction_end)
    return staging


def _boundary(transaction: Optional[SessionTransaction]) -> Optional[SessionTransaction]:
    """The transaction whose fate an event staged in ``transaction`` shares: the
    nearest savepoint or the outermost transaction (SQLAlchemy's internal
    subtransactions, as in a flush, commit and roll back with it)."""
    while transaction is not None and not transaction.nested and transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _current(session: Session) -> Optional[SessionTransaction]:
    """The innermost savepoint, else the outermost transaction, else None."""
    return session.get_nested_transaction() or session.get_transaction()


def _autobegin(session: Session) -> SessionTransaction:
    """Starts the session's transaction as ``session.add()`` does (no connection
    is taken). Raises ``InvalidRequestError`` when the session has autobegin off
    and no transaction, as ``add()`` does."""
    autobegin = getattr(session, "_autobegin_t", None)
    if autobegin is not None:
        transaction: SessionTransaction = autobegin()
        return transaction
    # A SQLAlchemy without the (private) autobegin hook: an explicit begin.
    return session.begin()


def stage(
    session: Session,
    store: Store,
    tenant_id: str,
    rule_id: str,
    action_taken: ActionLike,
    run_id: Optional[str] = None,
    details: Optional[Mapping[str, Any]] = None,
) -> None:
    """Validates one event and stages it on ``session``'s current transaction
    (see the module documentation). Raises ``InvalidEventError`` for a bad
    event, staging nothing."""
    enforced_at = datetime.now(timezone.utc)
    # Validated by the store's own batch, so exactly what a batch would refuse
    # is refused here, and the same error is raised.
    scratch = store.begin()
    try:
        scratch.record(tenant_id, rule_id, action_taken, run_id, details, enforced_at)
    finally:
        scratch.discard()
    snapshot = None if details is None else copy.deepcopy(dict(details))
    staged = _StagedEvent(store, tenant_id, rule_id, action_taken, run_id, snapshot, enforced_at)
    transaction = _boundary(_current(session) or _autobegin(session))
    assert transaction is not None
    _staging(session).add(transaction, [staged])


def staged_count(session: Any) -> int:
    """How many events are staged on ``session`` (a ``Session`` or an
    ``AsyncSession``) and not yet recorded or dropped."""
    session = getattr(session, "sync_session", session)
    staging = session.info.get(INFO_KEY)
    return staging.count() if isinstance(staging, _Staging) else 0


def check_writable(store: Store) -> None:
    """Refuses a read-only store when the driver is made, not after the
    database has committed."""
    if store.read_only:
        raise ReadOnlyError(f"{store!r} is read-only; a write driver needs a writable store")


def _after_commit(session: Session) -> None:
    # Runs after the database committed `transaction` (a savepoint's release,
    # or the outermost commit); it is still the session's current one here.
    staging = session.info.get(INFO_KEY)
    if not isinstance(staging, _Staging):
        return
    transaction = _current(session)
    if transaction is None:
        return
    events = staging.pop(transaction)
    if not events:
        return
    if transaction.parent is not None:
        enclosing = _boundary(transaction.parent)
        assert enclosing is not None
        staging.add(enclosing, events)
        return
    _record(events)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    staging = session.info.get(INFO_KEY)
    if not isinstance(staging, _Staging):
        return
    # Whatever is still staged here was not committed: dropped.
    staging.pop(transaction)
    if transaction.parent is None:
        # The outermost transaction is over; nothing of it may outlive it.
        staging.by_transaction.clear()


def _record(events: List[_StagedEvent]) -> None:
    """Records a committed transaction's events: one batch per store. Never
    raises (the database has committed; see the module documentation)."""
    by_store: Dict[int, Tuple[Store, List[_StagedEvent]]] = {}
    for staged in events:
        by_store.setdefault(id(staged.store), (staged.store, []))[1].append(staged)
    for store, staged_events in by_store.values():
        try:
            batch = store.begin()
            for e in staged_events:
                batch.record(e.tenant_id, e.rule_id, e.action, e.run_id, e.details, e.enforced_at)
            batch.commit()
        except Exception as e:  # noqa: BLE001 - the database has committed: never raise
            _dropped(store, len(staged_events), e)


def _dropped(store: Store, count: int, error: Exception) -> None:
    """Counts and logs the events of a failed batch. Never raises."""
    try:
        store._count_dropped(count)
    except Exception:  # noqa: BLE001 - still log the loss below
        logger.warning("enforcelog: could not count dropped session events", exc_info=True)
    try:
        logger.error(
            "enforcelog: %d enforcement event(s) of a committed SQLAlchemy transaction "
            "were not recorded in %s: %s: %s",
            count, store.path, type(error).__name__, error,
        )
    except Exception:  # noqa: BLE001 - a broken log handler must not raise here either
        pass
