"""``Store`` and ``Batch``: the Python face of the Rust store.

Every call that can wait (an fsync, the writer's queue, the projections)
releases the GIL while it waits. The ``*_async`` calls never block the event
loop: the store's future is polled on the loop's own thread and settles an
asyncio future when the writer answers (python/src/completion.rs).
"""

from __future__ import annotations

import asyncio
import atexit
import enum
import json
import logging
import operator
import os
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from . import _enforcelog
from ._errors import ClosedError, InvalidEventError, InvalidOptionsError
from ._time import from_us, to_us

logger = logging.getLogger("enforcelog")


class Action(str, enum.Enum):
    """How a policy halted a run. Plain strings work too, case-insensitively
    (``"BLOCKED"``, ``"blocked"``, ``"block"``)."""

    STOPPED = "STOPPED"
    KILLED = "KILLED"
    ABORTED = "ABORTED"
    BLOCKED = "BLOCKED"


class Durability(str, enum.Enum):
    """When a write is acknowledged (docs/DURABILITY.md)."""

    #: After the records are written and fsynced (group commit). The default.
    FSYNC = "fsync"
    #: After the write; fsync at most once per ``interval_ms``.
    INTERVAL = "interval"
    #: Never fsync except on segment seal and close. For tests and bulk loads.
    NONE = "none"


ActionLike = Union[str, Action, enum.Enum]


def _describe(error: BaseException) -> str:
    """``Type: message``, even for an exception whose ``str()`` fails."""
    try:
        return f"{type(error).__name__}: {error}"
    except BaseException:  # noqa: BLE001 - a broken __str__ must not escape
        return f"{type(error).__name__} (its message cannot be printed)"


def _action_str(action: ActionLike) -> str:
    """A query's action filter as text (writes convert natively)."""
    if isinstance(action, enum.Enum):
        value = action.value if isinstance(action.value, str) else action.name
        return str(value)
    if isinstance(action, str):
        return action
    err = InvalidEventError(f"action: expected a str or an enum member, got {type(action).__name__}")
    err.field = "action"
    raise err


# Built once: json.dumps with options builds an encoder per call.
_DETAILS_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False)


def _details_json(details: Any) -> str:
    """``details`` as JSON text. The native side walks plain dicts itself and
    calls this only for what its walk does not cover exactly (non-``str``
    keys, integers beyond 64 bits, other mappings and types, deep nesting),
    so the answer for those is what the standard encoder says."""
    if not isinstance(details, Mapping):
        err = InvalidEventError(f"details: must be a dict, not {type(details).__name__}")
        err.field = "details"
        raise err
    try:
        text = _DETAILS_ENCODER.encode(details if isinstance(details, dict) else dict(details))
    except (TypeError, ValueError, RecursionError) as e:
        err = InvalidEventError(f"details: not JSON-serialisable: {e}")
        err.field = "details"
        raise err from None
    # The store parses integers into 64 bits; a larger one would come back
    # as the nearest float. Only this path can see one (the native walk
    # refuses them itself), and it is the rare path: parse again to check.
    try:
        json.loads(text, parse_int=_int64)
    except RecursionError:
        pass  # too deep to parse here: the store refuses it by its depth
    return text


def _int64(digits: str) -> int:
    value = int(digits)
    if not -(2**63) <= value < 2**64:
        shown = digits if len(digits) <= 40 else digits[:40] + "..."
        err = InvalidEventError(
            f"details: the integer {shown} is outside the 64-bit range details keep exactly")
        err.field = "details"
        raise err
    return value


# Each loop's completer. The loop's reader callback is the completer's only
# strong reference: it holds the loop's futures (and so the loop), and a
# strong value here would keep every loop that ever ran alive. The last
# answer is cached, weakly too: this lookup is on every awaitable call.
_completers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Callable[[], Any]]" = (
    weakref.WeakKeyDictionary())
_last: Tuple[Callable[[], Any], Callable[[], Any]] = (lambda: None, lambda: None)


def _completer() -> Any:
    """The running loop's ``Completer`` (python/src/completion.rs): it polls
    the store's futures on the loop thread and settles their asyncio
    futures, woken through a file descriptor the loop watches."""
    global _last
    loop = asyncio.get_running_loop()
    loop_ref, completer_ref = _last
    if loop_ref() is loop:
        completer = completer_ref()
        if completer is not None:
            return completer
    found = _completers.get(loop)
    completer = None if found is None else found()
    if completer is None:
        completer = _enforcelog.Completer(loop)
        loop.add_reader(completer.fileno(), completer.drain)
        _completers[loop] = weakref.ref(completer)
    _last = (weakref.ref(loop), weakref.ref(completer))
    return completer


@dataclass(frozen=True)
class StoredEvent:
    """An event read back from the store."""

    offset: int
    tenant_id: str
    rule_id: str
    action: Action
    run_id: Optional[str]
    details: Optional[Dict[str, Any]]
    enforced_at: datetime
    #: The shard of the directory it was written to (0: the root store; see
    #: ``Store.shard``). ``(shard's store, offset)`` identifies it.
    shard: int = 0


@dataclass(frozen=True)
class QueryPage:
    """One page of query results; pass ``next_shard`` and ``next_offset`` as
    ``from_shard`` and ``from_offset`` for the next."""

    events: List[StoredEvent]
    next_offset: Optional[int]
    undecodable: int
    lost: int
    #: The shard ``next_offset`` is in: pass both (``from_shard=``,
    #: ``from_offset=``) for the next page.
    next_shard: Optional[int] = None


@dataclass(frozen=True)
class RuleStats:
    """Statistics of one (tenant, rule) as of an instant."""

    tenant_id: str
    rule_id: str
    as_of: datetime
    #: Events in the primary window (the last 30 days by default).
    trigger_count: int
    #: The latest ``enforced_at`` at or before ``as_of``, or None.
    last_triggered_at: Optional[datetime]
    #: Events at or before ``as_of``.
    total_count: int
    #: Primary-window counts by action name (``"STOPPED"``...).
    by_action: Dict[str, int]
    #: Counts per configured window, keyed by the window's length in seconds.
    window_counts: Dict[int, int]
    #: The log offset the answer reflects.
    offset: int
    missing_at_least: int
    gap_in_window: bool

    @classmethod
    def _from_native(cls, d: Dict[str, Any]) -> "RuleStats":
        return cls(
            tenant_id=d["tenant_id"],
            rule_id=d["rule_id"],
            as_of=from_us(d["as_of_us"]),  # type: ignore[arg-type]
            trigger_count=d["trigger_count"],
            last_triggered_at=from_us(d["last_triggered_at_us"]),
            total_count=d["total_count"],
            by_action=dict(d["by_action"]),
            window_counts=dict(d["window_counts"]),
            offset=d["offset"],
            missing_at_least=d["missing_at_least"],
            gap_in_window=d["gap_in_window"],
        )


# Stores that took fire-and-forget calls: flushed at interpreter exit.
_detached_stores: "weakref.WeakSet[Store]" = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for store in list(_detached_stores):
        try:
            store.flush()
        except ClosedError:
            pass  # closed meanwhile: close() flushed it
        except Exception:  # noqa: BLE001 - exit must not fail over the audit log
            logger.warning("enforcelog: flush at exit failed", exc_info=True)


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's store threads: its stores
    refuse every call (the native side checks the process), so they are
    not flushed at exit, and each loop's completer belongs to the parent."""
    global _last
    _detached_stores.clear()
    _completers.clear()
    _last = (lambda: None, lambda: None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Store:
    """An enforcelog store, opened in this process.

    ``Store(path, durability="fsync", interval_ms=100, detached_timeout_ms=50,
    read_only=False, share_directory=True, shard_refresh_ms=1000)``. Several
    worker processes may open one directory for writing: the first writes
    the root store, each other claims a shard of it (``store.shard``), and
    ``stats``/``query`` in any of them answer for all; other processes'
    events are seen as of the last refresh (at most ``shard_refresh_ms`` ago,
    or at once after ``refresh()``), this process's own at once. With
    ``share_directory=False`` a held directory raises ``LockedError``. Use as
    ``with Store(...) as store:`` or ``async with``; ``close()`` is idempotent.

    Write modes: ``record()`` / ``await record_async()`` (durable, returns
    the offset, raises on failure); ``begin()`` (a caller-owned batch); and
    ``record_detached()`` (fail-safe fire-and-forget for the halt path:
    never raises, returns within ``detached_timeout_ms``).
    """

    def __init__(
        self,
        path: Any,
        *,
        durability: Union[str, Durability] = Durability.FSYNC,
        interval_ms: int = 100,
        detached_timeout_ms: int = 50,
        read_only: bool = False,
        share_directory: bool = True,
        shard_refresh_ms: int = 1000,
    ) -> None:
        mode = durability.value if isinstance(durability, Durability) else str(durability).lower()
        for name, value in (("interval_ms", interval_ms),
                            ("detached_timeout_ms", detached_timeout_ms),
                            ("shard_refresh_ms", shard_refresh_ms)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                err = InvalidOptionsError(
                    f"invalid option {name}: expected a non-negative int of milliseconds, "
                    f"got {value!r}")
                err.field = name
                raise err
        self._native = _enforcelog.NativeStore(
            str(path), mode, interval_ms, detached_timeout_ms, bool(read_only),
            bool(share_directory), shard_refresh_ms,
        )
        self._read_only = bool(read_only)
        self._dropped_here = 0
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------
    @property
    def path(self) -> str:
        """The store's directory."""
        return str(self._native.dir())

    @property
    def read_only(self) -> bool:
        """Whether the store was opened read-only."""
        return self._read_only

    @property
    def shard(self) -> int:
        """The shard of the directory this store writes: 0 for the root store
        (the first writer), ``n`` for ``<path>/shards/<n>/``, claimed because
        other processes were writing the lower ones (``share_directory``)."""
        return int(self._native.shard())

    def refresh(self) -> None:
        """Picks up now what the directory's other writers (other processes'
        shards) have made durable; without it, ``stats`` and ``query`` see
        them as of the last background look, at most ``shard_refresh_ms``
        ago. This process's own writes are seen at once."""
        self._native.refresh()

    def close(self) -> None:
        """Flushes and closes the store; later writes raise ``ClosedError``
        (``record_detached`` counts them as dropped). Idempotent. Awaitable
        ``record_async`` calls made before it are recorded by it."""
        self._native.close()
        _detached_stores.discard(self)

    async def close_async(self) -> None:
        """``close()`` without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close_async()

    # -- writing -------------------------------------------------------
    def record(
        self,
        tenant_id: str,
        rule_id: str,
        action: ActionLike,
        run_id: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
        enforced_at: Optional[datetime] = None,
    ) -> int:
        """Records one event durably; returns its offset. Raises on failure.
        Releases the GIL while it waits."""
        return self._native.record(tenant_id, rule_id, action, run_id, details, to_us(enforced_at))

    async def record_async(
        self,
        tenant_id: str,
        rule_id: str,
        action: ActionLike,
        run_id: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
        enforced_at: Optional[datetime] = None,
    ) -> int:
        """``record()`` as an awaitable that never blocks the event loop.

        Bad input raises ``InvalidEventError`` when awaited, before anything is
        staged. The calls one loop iteration makes on a store are sent to its
        writer as one append (one atomic batch: after a crash all of them are
        in the log or none is), so they share one fsync; each call still gets
        the offset of its own event. Cancelling the await does not un-record
        the event."""
        at_us = None if enforced_at is None else to_us(enforced_at)
        return await self._native.record_async(  # type: ignore[no-any-return]
            _completer(), tenant_id, rule_id, action, run_id, details, at_us)

    def record_detached(
        self,
        tenant_id: Any,
        rule_id: Any,
        action: Any,
        run_id: Any = None,
        details: Any = None,
        enforced_at: Any = None,
    ) -> None:
        """Fail-safe fire-and-forget: never raises (not for bad input, a closed
        store, a read-only store or a failing disk), returns within
        ``detached_timeout_ms``. An event it cannot record is logged to the
        ``enforcelog`` logger and counted in ``metrics()["dropped"]``.
        Safe from sync code inside a running event loop. ``flush()`` makes the
        queued events durable; interpreter exit flushes them too."""
        try:
            _detached_stores.add(self)
            at_us = None if enforced_at is None else to_us(enforced_at)
            refused = self._native.record_detached(tenant_id, rule_id, action, run_id, details, at_us)
            if refused is not None:
                self._drop(refused)
        except BaseException as e:  # noqa: BLE001 - the halt path must never fail here
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            self._drop(_describe(e))

    def _count_dropped(self, count: int) -> None:
        """Counts events lost on the Python side (refused fire-and-forget
        input, session events after a database commit) into
        ``metrics()["dropped"]``."""
        with self._lock:
            self._dropped_here += count

    def _drop(self, reason: str) -> None:
        self._count_dropped(1)
        try:
            logger.warning("enforcelog: fire-and-forget event dropped: %s", reason)
        except Exception:  # noqa: BLE001
            pass

    def begin(self) -> "Batch":
        """A caller-owned batch: ``with store.begin() as batch:`` commits on normal
        exit and records nothing on an exception."""
        return Batch(self._native.begin())

    def flush(self) -> None:
        """Waits until every event recorded so far (fire-and-forget included) is durable."""
        self._native.flush()

    async def flush_async(self) -> None:
        """``flush()`` without blocking the event loop."""
        await self._native.flush_async(_completer())

    # -- reading -------------------------------------------------------
    def stats(self, tenant_id: str, rule_id: str, as_of: Optional[datetime] = None) -> RuleStats:
        """Statistics of one (tenant, rule) as of ``as_of`` (default: now).
        Reflects everything committed before the call."""
        return RuleStats._from_native(self._native.stats(tenant_id, rule_id, to_us(as_of)))

    def query(
        self,
        tenant_id: Optional[str] = None,
        *,
        rule_id: Optional[str] = None,
        action: Optional[ActionLike] = None,
        run_id: Optional[str] = None,
        since: Optional[datetime] = None,
        until: Optional[datetime] = None,
        from_offset: Optional[int] = None,
        limit: Optional[int] = None,
        from_shard: Optional[int] = None,
    ) -> QueryPage:
        """Events shard by shard, each in log order, filtered; ``tenant_id=None``
        means all tenants. ``since`` is inclusive, ``until`` exclusive. For the
        next page pass the page's ``next_shard`` and ``next_offset``."""
        page = self._native.query(
            tenant_id,
            rule_id,
            None if action is None else _action_str(action),
            run_id,
            to_us(since),
            to_us(until),
            _whole("from_offset", from_offset, 64),
            _whole("limit", limit, 63),
            _whole("from_shard", from_shard, 32),
        )
        events = [
            StoredEvent(
                offset=e["offset"],
                tenant_id=e["tenant_id"],
                rule_id=e["rule_id"],
                action=Action(e["action"]),
                run_id=e["run_id"],
                details=None if e["details_json"] is None else json.loads(e["details_json"]),
                enforced_at=from_us(e["enforced_at_us"]),  # type: ignore[arg-type]
                shard=e["shard"],
            )
            for e in page["events"]
        ]
        return QueryPage(events, page["next_offset"], page["undecodable"], page["lost"],
                         page["next_shard"])

    # -- tamper evidence (docs/AUDIT.md) --------------------------------
    def head(self, shard: Optional[int] = None) -> Dict[str, Any]:
        """The tree head of this store's log now: ``{"store_id", "shard",
        "size", "root", "time"}``, the JSON ``enforcelog head`` prints. Keep
        it somewhere this machine cannot rewrite; ``prove_consistency`` and
        ``enforcelog audit`` later check that the log still extends it.

        A directory several processes write has one log, and one tree, per
        shard: there ``head()`` raises, and ``head(shard=n)`` (or
        ``heads()``) gives a shard's."""
        return json.loads(self._native.head_json(_whole("shard", shard, 32)))

    def heads(self) -> List[Dict[str, Any]]:
        """The head of every shard of the store's directory, in shard order
        (one for a directory of one log)."""
        return [json.loads(text) for text in self._native.heads_json()]

    def prove_inclusion(
        self, offset: int, tree_size: Optional[int] = None, shard: Optional[int] = None
    ) -> Dict[str, Any]:
        """The proof that the record at ``offset`` (of shard ``shard``, in a
        directory of several) is in the tree of the first ``tree_size``
        records (default: all of them now), as the JSON object ``enforcelog
        prove`` prints; ``enforcelog.verify.check_inclusion`` checks it."""
        shard = _whole("shard", shard, 32)
        # The size a head would cover, without a head's full pass.
        size = self._native.head_size(shard) if tree_size is None else _whole("tree_size", tree_size, 64)
        return json.loads(
            self._native.prove_inclusion_json(_whole("offset", offset, 64), size, shard))

    def prove_consistency(
        self, old_size: int, new_size: Optional[int] = None, shard: Optional[int] = None
    ) -> Dict[str, Any]:
        """The proof that the tree of the first ``new_size`` records (default:
        all of them now) extends the tree of the first ``old_size``, in the
        store's log or shard ``shard``'s; ``enforcelog.verify.check_consistency``
        checks it (compare its ``old_root`` with the head you kept)."""
        shard = _whole("shard", shard, 32)
        size = self._native.head_size(shard) if new_size is None else _whole("new_size", new_size, 64)
        return json.loads(
            self._native.prove_consistency_json(_whole("old_size", old_size, 64), size, shard))

    def metrics(self) -> Dict[str, int]:
        """What the store did since it was opened: ``recorded``, ``dropped``
        (fire-and-forget events not recorded, bad input included, and events
        of SQLAlchemy sessions whose enforcelog commit failed after the
        database committed: ``enforcelog.session``), ``fsyncs``,
        append latency quantiles in µs, ..."""
        m = dict(self._native.metrics())
        with self._lock:
            m["dropped"] += self._dropped_here
        return m

    def __repr__(self) -> str:
        return f"enforcelog.Store({self.path!r}, read_only={self._read_only})"


class Batch:
    """Events staged by the caller and committed together (one atomic append).

    ``with store.begin() as batch:`` / ``async with``: commits on normal exit
    (an empty batch commits nothing), records nothing on an exception. Outside
    a ``with``, nothing is recorded unless ``commit()`` is called.
    """

    def __init__(self, native: Any) -> None:
        self._native = native

    def record(
        self,
        tenant_id: str,
        rule_id: str,
        action: ActionLike,
        run_id: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
        enforced_at: Optional[datetime] = None,
    ) -> None:
        """Stages one event (validated now, so a bad one raises here)."""
        self._native.record(tenant_id, rule_id, action, run_id, details, to_us(enforced_at))

    def __len__(self) -> int:
        return len(self._native)

    @property
    def is_open(self) -> bool:
        """False once committed or discarded."""
        return bool(self._native.is_open())

    def commit(self) -> range:
        """Commits the staged events; returns their offsets. Blocks (without the GIL)."""
        start, end = self._native.commit()
        return range(start, end)

    async def commit_async(self) -> range:
        """``commit()`` without blocking the event loop."""
        start, end = await self._native.commit_async(_completer())
        return range(start, end)

    def discard(self) -> None:
        """Drops the staged events."""
        self._native.discard()

    def __enter__(self) -> "Batch":
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None or not self.is_open:
            self.discard()
        elif len(self) == 0:
            self.discard()
        else:
            self.commit()

    async def __aenter__(self) -> "Batch":
        return self

    async def __aexit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None or not self.is_open:
            self.discard()
        elif len(self) == 0:
            self.discard()
        else:
            await self.commit_async()


__all__ = ["Action", "Durability", "Store", "Batch", "StoredEvent", "QueryPage", "RuleStats"]


def _whole(name: str, value: Any, bits: int) -> Any:
    """``value`` as an int when it is ``None`` or a whole number (an int, or
    any integer type: ``operator.index``, so a numpy integer) in ``0 ..
    2**bits``; otherwise InvalidOptionsError naming ``name`` (a bool is
    refused, not read as 0 or 1, and a number out of range is not left to
    the binding, which would raise a bare OverflowError)."""
    if value is None:
        return None
    number = None
    if not isinstance(value, bool):
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    if number is None or not 0 <= number < 1 << bits:
        err = InvalidOptionsError(
            f"invalid option {name}: expected a whole number below 2**{bits}, got {value!r}")
        err.field = name
        raise err
    return number
