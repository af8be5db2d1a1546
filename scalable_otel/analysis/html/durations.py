"""Per task name: end counts and the distribution of durations, computed in SQL.

The box plots need quantiles, not every value: DuckDB computes them (linear
interpolation, as numpy's default), and at most `MAX_DURATION_DOTS` evenly spaced
quantiles stand for the values as dots.
"""

from __future__ import annotations

import math

from ... import semconv as sc
from ...rundir import TASKS
from ..load import Run
from .attempts import UNKNOWN_TASK

MAX_DURATION_DOTS = 300

_GRID = "[" + ", ".join(repr(i / (MAX_DURATION_DOTS - 1)) for i in range(MAX_DURATION_DOTS)) + "]"
_STATS = f"""
SELECT coalesce(task, '{UNKNOWN_TASK}'),
    count(*) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
    count(*) FILTER (WHERE event = '{sc.TASK_FAILED}'),
    count(*) FILTER (WHERE event = '{sc.TASK_CANCELLED}'),
    count(d), sum(d), min(d), max(d), avg(d),
    quantile_cont(d, [0.25, 0.5, 0.75, 0.95]),
    CASE WHEN count(d) <= {MAX_DURATION_DOTS} THEN list_sort(list(d) FILTER (WHERE d IS NOT NULL))
        ELSE quantile_cont(d, {_GRID}) END
FROM (
    -- the attempts that ran (completed or raised on a worker) have a duration to plot
    SELECT nullif(task, '') AS task, event,
        CASE WHEN event IN ('{sc.TASK_COMPLETED}', '{sc.TASK_FAILED}') AND worker <> ''
            AND isfinite(duration_s) THEN greatest(0, duration_s) END AS d
    FROM {{t}}
    WHERE event IN ('{sc.TASK_COMPLETED}', '{sc.TASK_FAILED}', '{sc.TASK_CANCELLED}')
)
GROUP BY 1
"""
_FIGURES = ("total", "min", "max", "mean")


def _rounded(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def task_stats(run: Run, attempts_per_task: dict[str, int]) -> list[dict]:
    """One dict per task name: attempts, completed, failed, cancelled, and for the `n`
    attempts with a duration: total, min, q1, median, q3, p95, max, mean and `dots`.
    Sorted by total time, most first."""
    source = run.file(TASKS, ["event", "task", "worker", "duration_s"])
    try:
        rows = source.query(_STATS)
    finally:
        source.close()
    stats = {}
    for task, completed, failed, cancelled, n, *figures, quartiles, dots in rows:
        entry = {"task": task, "attempts": 0, "completed": completed, "failed": failed}
        entry |= {"cancelled": cancelled, "n": n}
        if n:
            entry |= {k: _rounded(v) for k, v in zip(_FIGURES, figures)}
            entry["total"] = entry["total"] or 0.0  # a sum past the largest double
            q1, median, q3, p95 = (_rounded(q) for q in quartiles)
            entry |= {"q1": q1, "median": median, "q3": q3, "p95": p95}
            entry["dots"] = [v for v in map(_rounded, dots) if v is not None]
        else:
            entry |= {"total": 0.0, "dots": []}
        stats[task] = entry
    for task, count in attempts_per_task.items():
        entry = stats.setdefault(
            task,
            {"task": task, "completed": 0, "failed": 0, "cancelled": 0, "n": 0},
        )
        entry.setdefault("total", 0.0)
        entry.setdefault("dots", [])
        entry["attempts"] = count
    return sorted(stats.values(), key=lambda s: (-s["total"], -s["attempts"], s["task"]))
