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
- **Only a session that commits its database transaction.** A session bound
  to a ``Connection`` that is already in a transaction (the test-fixture
  pattern ``Session(bind=conn)`` inside ``conn.begin()``) joins it, and in
  every ``join_transaction_mode`` but ``"control_fully"`` (outside a
  savepoint) its ``commit()`` commits nothing to the database: the outer
  transaction, the host's, decides. SQLAlchemy has no hook after a
  ``Connection``'s own COMMIT (its ``commit`` event runs before it, and that
  COMMIT can still fail), so recording then could leave a phantom. Staging on
  such a session raises ``sqlalchemy.exc.InvalidRequestError`` at once, and
  stages nothing. A session that joins only after its events were staged
  (the connection was idle then) records nothing at its commit: the events
  are logged and counted as dropped (below), never recorded.
- **Not after the commit.** Staging on a transaction that has already
  committed (from a host's ``after_commit`` hook, also a savepoint's), has
  rolled back or must (an ``after_rollback`` hook, after a failed flush), or
  is closing raises ``InvalidRequestError``: nothing would record it.
  Staging from an ``after_transaction_end`` hook of the outermost transaction
  starts the session's next transaction, like ``session.add()``, and is
  recorded at its commit.

When the enforcelog commit fails after the database has committed (store
closed, disk full, the batch too large): the database transaction stands and
cannot be undone, so raising from ``session.commit()`` would only tell the
caller something false (that the transaction failed). The events are instead
handled by the fail-safe contract of ``record_enforcement_standalone`` (and so
are those of a late-joined session, whose outer transaction's fate is not
known when its ``commit()`` returns): each failed batch is logged (level
ERROR) to the ``enforcelog`` logger and its events are counted in
``store.metrics()["dropped"]``; ``session.commit()`` returns
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

Listeners are installed once per session, on its first staged event
(instance-level session events; ``after_commit`` ahead of the host's own
instance listeners, so that one that raises does not stop it); nothing is
installed on the ``Session`` class. The staging lives in ``session.info``
under the key ``"enforcelog"``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple

from sqlalchemy import event
from sqlalchemy.engine import Connection, NestedTransaction
from sqlalchemy.exc import InvalidRequestError
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
    # First among the session's own after_commit listeners: a host listener
    # that raises stops the ones after it, and the database has committed by
    # then, so ours must not be among them. (Listeners on the Session class or
    # a sessionmaker still run before any instance listener.)
    event.listen(session, "after_commit", _after_commit, insert=True)
    event.listen(session, "after_transaction_end", _after_transaction_end)
    return staging


def _boundary(transaction: Optional[SessionTransaction]) -> Optional[SessionTransaction]:
    """The transaction whose fate an event staged in ``transaction`` shares: the
    nearest savepoint or the outermost transaction (SQLAlchemy's internal
    subtransactions, as in a flush, commit and roll back with it)."""
    while transaction is not None and not transaction.nested and transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _root(transaction: SessionTransaction) -> SessionTransaction:
    """The outermost transaction ``transaction`` belongs to."""
    while transaction.parent is not None:
        transaction = transaction.parent
    return transaction


def _has_ended(transaction: SessionTransaction) -> bool:
    """True when ``transaction`` can no longer commit: it has committed (an
    ``after_commit`` hook), has rolled back or must (an ``after_rollback``
    hook, a failed flush), or is being closed. An event staged on it would
    never be recorded. (One provisioning a connection, inside an
    ``after_begin`` hook, is under way; one prepared for two-phase commit
    still commits.)"""
    state = getattr(transaction, "_state", None)
    if state is None:
        # A SQLAlchemy without the (private) state: the public flag.
        return not transaction.is_active
    return getattr(state, "name", None) in ("COMMITTED", "DEACTIVE", "CLOSED")


def _connections(session: Session, root: SessionTransaction) -> List[Tuple[Connection, Any, bool]]:
    """The connections of the outermost transaction ``root``: (connection, its
    Core transaction, whether the session commits that transaction). Read
    from SQLAlchemy's private bookkeeping (no public accessor exists); empty
    when it is missing."""
    entries = getattr(root, "_connections", None)
    if not isinstance(entries, dict):
        return []
    seen: Dict[int, Tuple[Connection, Any, bool]] = {}
    for entry in entries.values():
        if isinstance(entry, tuple) and len(entry) >= 3 and isinstance(entry[0], Connection):
            seen[id(entry[0])] = (entry[0], entry[1], bool(entry[2]))
    return list(seen.values())


def _join_mode(session: Session) -> str:
    """The session's ``join_transaction_mode``; SQLAlchemy's default (which
    never commits a joined outer transaction) when the attribute is missing."""
    mode = getattr(session, "join_transaction_mode", None)
    return mode if isinstance(mode, str) else "conditional_savepoint"


def _joined_connection(
    session: Session, root: Optional[SessionTransaction]
) -> Optional[Connection]:
    """A connection whose database transaction the session's commit of
    ``root`` (its outermost transaction, None before it has one) would not
    commit (the session joined a transaction the host began on a Connection
    it bound the session to), else None."""
    used = [] if root is None else _connections(session, root)
    for conn, core_transaction, should_commit in used:
        if not should_commit or isinstance(core_transaction, NestedTransaction):
            # rollback_only (commit leaves the outer transaction to the host),
            # or a savepoint (create_savepoint, or a host savepoint under
            # control_fully): the commit only releases a savepoint.
            return conn
    bind = session.bind
    if isinstance(bind, Connection) and all(conn is not bind for conn, _, _ in used):
        # Not used yet: the session will join the transaction the bind is in,
        # and commit it only in control_fully mode and outside a savepoint.
        if bind.in_transaction() and (
                _join_mode(session) != "control_fully" or bind.in_nested_transaction()):
            return bind
    return None


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
    event, and ``sqlalchemy.exc.InvalidRequestError`` when the session's
    current transaction has committed, rolled back (or must) or is closing,
    or when the session joins a transaction that its commit does not commit;
    each stages nothing."""
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
    transaction = _current(session)
    if transaction is not None and _has_ended(transaction):
        # Staged here, the event would belong to a transaction whose commit is
        # over (an after_commit hook), that rolls back, or that is being
        # closed: nothing would ever record it.
        raise InvalidRequestError(
            "enforcelog: cannot stage an enforcement event on a SQLAlchemy session "
            "transaction that has already committed, rolled back (or must, after a "
            "failed flush) or is closing (an after_commit or after_rollback hook); "
            "record it before session.commit(), after session.rollback() in the "
            "session's next transaction, or with record_enforcement_standalone"
        )
    transaction = _boundary(transaction or _autobegin(session))
    assert transaction is not None
    root = _root(transaction)
    _refuse_joined(session, root)
    _staging(session).add(transaction, [staged])


def check_joinable(session: Session) -> None:
    """Refuses, when the driver is made, a session that joins a transaction
    its commit does not commit (see the module documentation); ``stage()``
    checks again, as the connection's state can change in between. Raises
    ``sqlalchemy.exc.InvalidRequestError``."""
    _refuse_joined(session, session.get_transaction())


def _refuse_joined(session: Session, root: Optional[SessionTransaction]) -> None:
    joined = _joined_connection(session, root)
    if joined is not None:
        raise InvalidRequestError(
            f"enforcelog: this SQLAlchemy session joins a transaction it does not commit "
            f"(the Connection {joined!r} it is bound to was already in a transaction; "
            f"join_transaction_mode={_join_mode(session)!r}): session.commit() "
            f"commits nothing to the database, and enforcelog cannot know whether the "
            f"outer transaction will commit, so it records nothing rather than an outcome "
            f"that may be rolled back. Record on a session that owns its transaction (bound "
            f"to an Engine, or join_transaction_mode='control_fully'), or on a batch from "
            f"store.begin() committed after the outer transaction"
        )


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
    uncommitted = _still_in_transaction(session, transaction)
    if uncommitted is not None:
        # The session joined an outer transaction after its events were
        # staged (stage() refuses the ones it can see): the database has
        # committed nothing, so recording could create a phantom. Counted and
        # logged, never recorded.
        error = InvalidRequestError(
            f"the session's commit did not commit the transaction of {uncommitted!r} "
            f"(it joined an outer transaction), so its outcome is unknown")
        for store, count in _per_store(events):
            _dropped(store, count, error)
        return
    _record(events)


def _still_in_transaction(session: Session, root: SessionTransaction) -> Optional[Connection]:
    """After the commit of the outermost ``root``: a connection of the session
    still in a database transaction (so the commit did not reach the
    database), else None. Public API: every connection the session commits is
    out of its transaction by now."""
    candidates = [conn for conn, _, _ in _connections(session, root)]
    if isinstance(session.bind, Connection):
        candidates.append(session.bind)
    for conn in candidates:
        if not conn.closed and conn.in_transaction():
            return conn
    return None


def _per_store(events: List[_StagedEvent]) -> List[Tuple[Store, int]]:
    counts: Dict[int, Tuple[Store, int]] = {}
    for staged in events:
        store, count = counts.get(id(staged.store), (staged.store, 0))
        counts[id(staged.store)] = (store, count + 1)
    return list(counts.values())


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    staging = session.info.get(INFO_KEY)
    if not isinstance(staging, _Staging):
        return
    # Whatever is still staged here was not committed: dropped.
    staging.pop(transaction)
    if transaction.parent is None:
        # The outermost transaction is over; nothing of it may outlive it.
        # Only ITS entries: a hook that ran before this one may already have
        # begun the session's next transaction and staged events on it.
        for key, (staged_on, _) in list(staging.by_transaction.items()):
            if _root(staged_on) is transaction:
                del staging.by_transaction[key]


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
