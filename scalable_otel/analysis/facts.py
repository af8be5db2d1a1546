"""What the read path decides once, for every reader (report, runs, trends, compare, html,
cost, advise): when run.json's task counts are the run's, what a number is, what a size is.

**Counts.** run.json's `tasks_submitted`, `tasks_completed`, `tasks_failed` and
`tasks_cancelled` are the recorder's own totals, written when the session closes the run.
They are *final*, and readers show them, only when the run ended (status `completed`,
`failed` or `interrupted`), its telemetry process reported that end (no `telemetry_lost`)
and the count is a whole number of 0 or more (not null: a count the session never
learned is null). Otherwise (a running or crashed run, a run without a readable
run.json, lost telemetry, a null or damaged count) the count is the number of lines of
that event in tasks.jsonl. Cache lookups, hits and misses are always counted in
cache.jsonl.

**Served from the cache.** A task attempt was served from the cache when its span (the
`span_id` that its `task_completed` line and the `cache_lookup` lines made inside it
share) has a lookup whose `result` is `hit` and none whose result is `miss`: its
`duration_s` is then a lookup, not the task's work. A miss on the same span means the
task computed something itself, so it counts as an execution. Its `saved_s` is the sum
of its hits' `saved_s`. `served_from_cache` is that rule as SQL; trends and comparisons
both leave those attempts out of their duration statistics through it.

**Numbers.** `finite_number` reads a field that should hold a number: an int or a float,
or text that is one (`"1.5"`, as DuckDB casts it), as a finite float. Anything else is
None: booleans, NaN, infinities, numbers beyond a double (`1e999`, a 400-digit integer),
other text and other types. It never raises.

**Sizes.** `size_bytes` is the manifest's own reading of a size (`16G`, `512Mi`, `16GB`,
a number of bytes), so a request reads the same in the manifest check and in advice.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from numbers import Real

from .. import semconv as sc
from ..manifest import size_bytes

__all__ = [
    "COUNTS",
    "counts_are_final",
    "final_count",
    "finite_number",
    "served_from_cache",
    "size_bytes",
    "task_counts",
]

#: The task counts every reader gives: name -> (run.json field, tasks.jsonl event).
COUNTS: dict[str, tuple[str, str]] = {
    "submitted": ("tasks_submitted", sc.TASK_SUBMITTED),
    "completed": ("tasks_completed", sc.TASK_COMPLETED),
    "failed": ("tasks_failed", sc.TASK_FAILED),
    "cancelled": ("tasks_cancelled", sc.TASK_CANCELLED),
}

# What float() reads that is a number in JSON text too (float() would also take "1_0").
_NUMBER_TEXT = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def finite_number(value) -> float | None:
    """`value` as a finite float, or None (see the module docstring).

    >>> finite_number(2), finite_number("1.5"), finite_number(float("nan")), finite_number(True)
    (2.0, 1.5, None, None)
    >>> finite_number(10**400) is None
    True
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > 1000 or not _NUMBER_TEXT.match(value):
            return None
    elif not isinstance(value, Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):  # an integer beyond a double
        return None
    return number if math.isfinite(number) else None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def counts_are_final(meta: Mapping, status: str) -> bool:
    """Whether run.json's counts are the run's own: it ended and its telemetry did not end
    early. `status` is the run's status as read (`Run.status`, with crashed inferred)."""
    return status in sc.RUN_ENDED and meta.get("telemetry_lost") is not True


def final_count(meta: Mapping, status: str, field: str) -> int | None:
    """run.json's `field` when it is final (see `counts_are_final`), else None: count the
    lines instead."""
    value = meta.get(field)
    return value if counts_are_final(meta, status) and _is_count(value) else None


def task_counts(meta: Mapping, status: str, events: Mapping[str, int]) -> dict[str, int]:
    """`submitted`, `completed`, `failed` and `cancelled` of a run: run.json's where final,
    else the lines of that event (`events`: tasks.jsonl's line count by event).

    >>> task_counts({"status": "completed", "tasks_completed": 0, "telemetry_lost": True},
    ...             "completed", {"task_completed": 3})["completed"]
    3
    """
    counts = {}
    for name, (field, event) in COUNTS.items():
        final = final_count(meta, status, field)
        counts[name] = final if final is not None else int(events.get(event) or 0)
    return counts


def served_from_cache(cache: str = "{c}") -> str:
    """SQL for the task attempts served from the cache (see the module docstring): one row
    per `span_id` with the time its hits saved, `saved_s`, from the cache.jsonl relation
    named by the placeholder `cache` (`query_files` fills it in).

    >>> print(served_from_cache("{cb}").split("FROM")[1].split()[0])
    {cb}
    """
    return f"""
    SELECT span_id, coalesce(sum(saved_s) FILTER (WHERE result = 'hit'), 0.0) AS saved_s
    FROM {cache}
    WHERE event = '{sc.CACHE_LOOKUP}' AND span_id IS NOT NULL
    GROUP BY span_id
    HAVING count(*) FILTER (WHERE result = 'hit') > 0
       AND count(*) FILTER (WHERE result = 'miss') = 0
    """
