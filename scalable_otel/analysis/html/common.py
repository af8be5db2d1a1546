"""Small shared pieces of the HTML report's figures: times in microseconds, plain values."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from ...rundir import parse_datetime
from ..columns import epoch_us_sql  # noqa: F401 (the figures import it from here)
from ..facts import finite_number as number

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def finite_sql(column: str) -> str:
    """SQL for a DOUBLE column with NaN and infinities as NULL."""
    return f"CASE WHEN isfinite({column}) THEN {column} END"


def epoch_us(value) -> int | None:
    """Epoch microseconds of an ISO 8601 timestamp (naive ones are UTC), else None."""
    stamp = parse_datetime(value) if isinstance(value, str) else None
    return None if stamp is None else (stamp - _EPOCH) // _MICROSECOND


def utc(us: int | None) -> datetime | None:
    """The UTC time of epoch microseconds."""
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def integer(value, default: int | None = None) -> int | None:
    """`finite_number(value)` as an int, else `default`."""
    result = number(value)
    return default if result is None else int(result)


def text(value) -> str | None:
    """Text as is, None as None, anything else as its str()."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def cut(value: str | None, limit: int) -> str | None:
    """`value` cut to at most `limit` characters, ending with an ellipsis when cut."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1] + "…"


def seconds(us: int | None, t0_us: int) -> float | None:
    """Microseconds since the epoch as seconds since `t0_us`, rounded to the microsecond."""
    return None if us is None else round((us - t0_us) / 1e6, 6)
