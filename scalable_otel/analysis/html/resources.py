"""Worker CPU and memory series from `resource_sample` lines, downsampled in SQL.

A worker's series longer than `MAX_RESOURCE_POINTS` is cut to about that many points by
keeping the lowest and the highest sample of each run of consecutive samples, so spikes
stay visible.
"""

from __future__ import annotations

from ... import semconv as sc
from ...rundir import RESOURCES
from ..load import Run
from .common import epoch_us_sql, finite_sql

MAX_RESOURCE_POINTS = 2_000
METRICS = {"cpu": "cpu_percent", "mem": "memory_bytes"}

_POINTS = " UNION ALL ".join(
    f"SELECT worker, '{metric}' AS metric, us, {metric} AS v FROM samples "
    f"WHERE us IS NOT NULL AND {metric} IS NOT NULL"
    for metric in METRICS
)
_SERIES = f"""
WITH samples AS (
    SELECT worker, {epoch_us_sql()} AS us,
        {", ".join(f"{finite_sql(field)} AS {metric}" for metric, field in METRICS.items())}
    FROM {{t}}
    WHERE event = '{sc.RESOURCE_SAMPLE}' AND worker <> ''
), numbered AS (
    SELECT *, row_number() OVER (PARTITION BY worker, metric ORDER BY us) - 1 AS i,
        count(*) OVER (PARTITION BY worker, metric) AS n
    FROM ({_POINTS})
), grouped AS (
    SELECT *, CASE WHEN n <= $1 THEN i ELSE i * ($1 // 2) // n END AS g FROM numbered
), marked AS (
    SELECT *,
        first_value(i) OVER (PARTITION BY worker, metric, g ORDER BY v, i) AS lowest,
        first_value(i) OVER (PARTITION BY worker, metric, g ORDER BY v DESC, i) AS highest
    FROM grouped
)
SELECT worker, metric, (us - $2) / 1e6, v FROM marked
WHERE n <= $1 OR i = lowest OR i = highest
ORDER BY worker, metric, i
"""


def time_bounds(run: Run) -> tuple[int | None, int | None]:
    """The first and last time of resources.jsonl's lines, in epoch microseconds."""
    source = run.file(RESOURCES, ["timestamp", "event"])
    try:
        sql = f"SELECT min(us), max(us) FROM (SELECT {epoch_us_sql()} AS us FROM {{t}})"
        return source.query(sql)[0]
    finally:
        source.close()


def series(run: Run, t0_us: int) -> dict[str, dict]:
    """Per worker that sent samples: {"cpu": [times, values], "mem": [times, values]},
    times in seconds since `t0_us`."""
    fields = ["timestamp", "event", "worker", *METRICS.values()]
    source = run.file(RESOURCES, fields)
    try:
        rows = source.query(_SERIES, [MAX_RESOURCE_POINTS, t0_us])
    finally:
        source.close()
    by_worker: dict[str, dict] = {}
    for worker, metric, t, value in rows:
        entry = by_worker.setdefault(worker, {m: [[], []] for m in METRICS})
        entry[metric][0].append(round(t, 4))
        entry[metric][1].append(value)
    return by_worker
