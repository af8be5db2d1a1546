"""Small shared pieces of the HTML report's figures: times in microseconds, plain values."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from ...rundir import parse_datetime
from ..facts import finite_number as number

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

# A line's time in epoch microseconds; NULL when it is no time. A time without a zone is
# UTC (as `rundir.parse_iso` reads it), not DuckDB's session time zone. Integers, because
# epoch seconds as doubles lose the last microsecond digit.
_ZONED = r"([zZ]|[+-]\d\d(:?\d\d)?)$"


def epoch_us_sql(column: str = "timestamp") -> str:
    """SQL for `column` (ISO 8601 text) as epoch microseconds, NULL if it is no time."""
    return (
        f"epoch_us(try_cast(CASE WHEN regexp_matches({column}, '{_ZONED}') THEN {column} "
        f"ELSE {column} || '+00:00' END AS TIMESTAMPTZ))"
    )


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
