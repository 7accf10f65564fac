"""``datetime`` <-> microseconds since the Unix epoch (UTC)."""

from datetime import datetime, timedelta, timezone
from typing import Optional

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_us(value: Optional[datetime]) -> Optional[int]:
    """An aware datetime as µs since the epoch; a naive one is refused (its zone is unknown)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        from ._errors import InvalidEventError

        err = InvalidEventError("enforced_at: a naive datetime has no time zone; pass an aware one")
        err.field = "enforced_at"
        raise err
    return (value - _EPOCH) // timedelta(microseconds=1)


def from_us(value_us: Optional[int]) -> Optional[datetime]:
    """µs since the epoch as an aware UTC datetime."""
    if value_us is None:
        return None
    return _EPOCH + timedelta(microseconds=value_us)
