"""The exception hierarchy: ``Error`` and one subclass per kind of store error.

The native module raises these by name (``python/src/lib.rs``, ``error_class``).
"""

from typing import Optional

__all__ = [
    "Error", "LockedError", "InvalidEventError", "InvalidFilterError", "ClosedError", "ReadOnlyError",
    "IoError", "CorruptionError", "TooLargeError", "EmptyBatchError", "PoisonedError",
    "QueueFullError", "NotAStoreError", "InvalidOptionsError", "OffsetOutOfRangeError",
    "ProjectionStalledError",
]


class Error(Exception):
    """Base class of every error the store raises."""

    #: The invalid field or option, where the error names one.
    field: Optional[str] = None


class LockedError(Error):
    """Another writer (another process, or another Store here) holds the store's lock."""


class InvalidEventError(Error, ValueError):
    """An event field is invalid; ``.field`` names it (tenant_id, rule_id, action, run_id,
    details, enforced_at)."""


class InvalidFilterError(Error, ValueError):
    """A read's filter is invalid (``stats("", rule)``, an id too long...);
    ``.field`` names it (tenant_id, rule_id, run_id, action)."""


class ClosedError(Error):
    """The store (or the batch) is closed."""


class ReadOnlyError(Error):
    """The store was opened with ``read_only=True``."""


class IoError(Error, OSError):
    """A file operation failed (disk full, permissions...)."""


class CorruptionError(Error):
    """Data on disk failed its checksum or does not parse."""


class TooLargeError(Error, ValueError):
    """A record or batch is larger than the store accepts."""


class EmptyBatchError(Error):
    """A batch was committed with no events in it."""


class PoisonedError(Error):
    """The writer stopped after a failure and accepts no more appends."""


class QueueFullError(Error):
    """The writer's queue is full."""


class NotAStoreError(Error):
    """The directory is not an enforcelog store (or of an unsupported version)."""


class InvalidOptionsError(Error, ValueError):
    """An option is out of range; ``.field`` names it."""


class OffsetOutOfRangeError(Error):
    """An offset beyond the end of the log."""


class ProjectionStalledError(Error):
    """The projections stopped making progress, so a query cannot be answered."""
