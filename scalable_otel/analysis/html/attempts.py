"""The timeline's data: task attempts matched to their ends, stacked in lanes, capped.

An attempt is a ``(key, attempt)`` pair that ran on a worker. It starts at its first
``task_started`` line and ends at the earliest ``task_completed``, ``task_failed`` or
``task_cancelled`` line with the same key and attempt. An end line with a worker but no
``task_started`` line (a lost line) makes an attempt that started ``duration_s`` before it.
An attempt with no end line of its own is *open*: it was lost if a later attempt of the
same key exists or its worker went away, and then ends at its ``task_resources`` line,
else at its worker's removal, else at the next attempt's start; otherwise it is
unfinished, and ends where the run's record ends.

DuckDB groups the lines into one row per ``(key, attempt)`` in a temporary table, so a
run of a million events never becomes Python objects: only the attempts drawn (at most
the cap), the open ones and a per-worker aggregate leave SQL.
"""

from __future__ import annotations

import heapq
import uuid

from ... import semconv as sc
from ...rundir import RESOURCES, TASKS
from ..columns import query_files
from ..load import Run
from .common import epoch_us, epoch_us_sql, finite_sql, number, text

COMPLETED, FAILED, CANCELLED = sc.STATUS_COMPLETED, sc.STATUS_FAILED, sc.STATUS_CANCELLED
LOST = "lost"  # no end line: retried, or its worker went away
UNFINISHED = "unfinished"  # no end line yet: a run in progress or cut short
# Which attempts the timeline keeps first when it has to drop some.
KEEP_ORDER = {FAILED: 0, LOST: 1, CANCELLED: 2, UNFINISHED: 3, COMPLETED: 4}
END_STATUS = {sc.TASK_COMPLETED: COMPLETED, sc.TASK_FAILED: FAILED, sc.TASK_CANCELLED: CANCELLED}
UNKNOWN_TASK = "(unknown)"

FIELDS = ["timestamp", "event", "task", "key", "worker", "attempt", "duration_s", "queue_wait_s"]
FIELDS += ["args"]
_ENDS = ", ".join(f"'{event}'" for event in END_STATUS)
_LINE_EVENTS = f"'{sc.TASK_SUBMITTED}', '{sc.TASK_STARTED}', {_ENDS}"
_NO_TIME = 2**63 - 1  # sorts an end line without a time after every timed one
_LONGEST_S = 1e9  # 31 years: an end line's duration beyond it is read as none

# One row per (key, attempt) of tasks.jsonl; `ran` marks the rows that are attempts.
_TABLE = f"""
CREATE TEMP TABLE {{a}} AS
SELECT * EXCLUDE (end_line_us), greatest(coalesce(end_line_us, start_us), start_us) AS end_us
FROM (
WITH lines AS (
    SELECT event, nullif(task, '') AS task, key, nullif(worker, '') AS worker,
        coalesce(attempt, 1) AS attempt, {finite_sql("duration_s")} AS duration_s,
        {finite_sql("queue_wait_s")} AS queue_wait_s,
        CASE WHEN event <> '{sc.TASK_STARTED}' AND args::VARCHAR <> 'null'
            THEN args::VARCHAR END AS args,
        {epoch_us_sql()} AS us
    FROM {{t}}
    WHERE key IS NOT NULL AND event IN ({_LINE_EVENTS})
), groups AS (
    SELECT key, attempt,
        min(us) FILTER (WHERE event = '{sc.TASK_STARTED}') AS started_us,
        arg_min(struct_pack(task := task, worker := worker, queue := queue_wait_s), us)
            FILTER (WHERE event = '{sc.TASK_STARTED}') AS s,
        arg_min(
            struct_pack(event := event, task := task, worker := worker, us := us,
                duration := duration_s, queue := queue_wait_s),
            coalesce(us, {_NO_TIME})
        ) FILTER (WHERE event IN ({_ENDS})) AS e,
        -- a submitted line's arguments first, else an end line's
        arg_min(args, CASE WHEN event = '{sc.TASK_SUBMITTED}' THEN 0 ELSE 1 END)
            FILTER (WHERE args IS NOT NULL) AS args,
        min(us) AS first_us, max(us) AS last_us
    FROM lines GROUP BY key, attempt
)
SELECT key, attempt,
    coalesce(CASE WHEN started_us IS NOT NULL THEN s.task ELSE e.task END, '{UNKNOWN_TASK}')
        AS task,
    coalesce(s.worker, e.worker) AS worker,
    -- a duration beyond any task's (a damaged line) counts as none
    coalesce(started_us, e.us - CAST(round(
        CASE WHEN abs(e.duration) < {_LONGEST_S} THEN e.duration ELSE 0 END * 1e6
    ) AS BIGINT)) AS start_us,
    e.event AS end_event, e.us AS end_line_us,
    e.duration AS duration, coalesce(e.queue, s.queue) AS queue, args, first_us, last_us,
    coalesce(started_us IS NOT NULL OR (
        e.event <> '{sc.TASK_CANCELLED}' AND e.worker IS NOT NULL AND e.us IS NOT NULL
    ), false) AS ran
FROM groups
)
"""

_BAR = "key, attempt, task, worker, (start_us - $1) / 1e6, (end_us - $1) / 1e6"
_CLOSED = f"""
SELECT {_BAR}, end_event, duration, queue FROM {{a}}
WHERE ran AND end_event IS NOT NULL
ORDER BY CASE end_event WHEN '{sc.TASK_FAILED}' THEN 0 WHEN '{sc.TASK_CANCELLED}' THEN 2
    ELSE 4 END, end_us - start_us DESC, start_us, key, attempt
LIMIT $2
"""

# Open attempts, with what decides their end: the next attempt's start and the key's
# latest attempt (of those that ran, and of the end lines).
_OPEN = """
WITH open_keys AS (SELECT DISTINCT key FROM {a} WHERE ran AND end_event IS NULL),
ended AS (
    SELECT key, max(attempt) AS attempt FROM {a}
    WHERE end_event IS NOT NULL AND key IN (SELECT key FROM open_keys) GROUP BY key
),
near AS (
    SELECT *, lead(start_us) OVER (PARTITION BY key ORDER BY attempt) AS next_us,
        max(attempt) OVER (PARTITION BY key) AS last_attempt
    FROM {a} WHERE ran AND key IN (SELECT key FROM open_keys)
)
SELECT key, near.attempt, task, worker, (start_us - $1) / 1e6, (next_us - $1) / 1e6,
    greatest(last_attempt, coalesce(ended.attempt, 0)), queue
FROM near LEFT JOIN ended USING (key)
WHERE end_event IS NULL
"""

_ARGS = """
SELECT key, arg_min(args, attempt) FROM {a}
WHERE args IS NOT NULL AND key IN (SELECT unnest($1::VARCHAR[])) GROUP BY key
"""

# Average number of attempts running on each worker in each of $3 bins of $2 seconds.
# An attempt adds the part of its first and last bin it covers, and 1 to each bin in
# between: as a +1 after its first bin and a -1 at its last, summed up over the bins.
_BUSY = """
WITH spans AS (
    SELECT worker, greatest(s, 0) AS s, least(e, $2 * $3) AS e FROM (
        -- '' stands for no worker: NULL would match nothing in the join below
        SELECT coalesce(worker, '') AS worker, (start_us - $1) / 1e6 AS s,
            (end_us - $1) / 1e6 AS e
        FROM {a} WHERE ran AND end_event IS NOT NULL
        UNION ALL
        SELECT unnest($4::VARCHAR[]), unnest($5::DOUBLE[]), unnest($6::DOUBLE[])
    )
), bins AS (
    SELECT worker, s, e, least(CAST(floor(s / $2) AS BIGINT), $3 - 1) AS first,
        least(CAST(floor(e / $2) AS BIGINT), $3 - 1) AS last
    FROM spans WHERE e > s
), parts AS (
    SELECT worker, first AS b, (least(e, (first + 1) * $2) - s) / $2 AS part, 0 AS step
    FROM bins
    UNION ALL
    SELECT worker, last, (e - last * $2) / $2, 0 FROM bins WHERE last > first
    UNION ALL
    SELECT worker, first + 1, 0, 1 FROM bins WHERE last > first + 1
    UNION ALL
    SELECT worker, last, 0, -1 FROM bins WHERE last > first + 1
), summed AS (
    SELECT worker, b, sum(part) AS part, sum(step) AS step FROM parts GROUP BY worker, b
), grid AS (  -- every bin of every worker: a bin inside one long attempt has no part
    SELECT worker, b FROM (SELECT DISTINCT worker FROM bins), range($3) AS r(b)
)
SELECT * FROM (
    SELECT worker, b, coalesce(part, 0)
        + sum(coalesce(step, 0)) OVER (PARTITION BY worker ORDER BY b) AS level
    FROM grid LEFT JOIN summed USING (worker, b)
) WHERE level > 0
"""


class Attempts:
    """A run's task attempts, grouped once in DuckDB; close it (or use `with`) when done.

    >>> with Attempts(load_run(last=True)) as attempts:           # doctest: +SKIP
    ...     attempts.total
    """

    def __init__(self, run: Run):
        self.run = run
        self._name = f"html_attempts_{uuid.uuid4().hex}"
        source = run.file(TASKS, FIELDS)
        try:
            source.query(_TABLE.replace("{a}", self._name))
        finally:
            source.close()
        self.total, self.first_us, self.last_us = self._query(
            "SELECT count(*) FILTER (WHERE ran), min(first_us), max(last_us) FROM {a}"
        )[0]

    def _query(self, sql: str, params: list | tuple = ()) -> list[tuple]:
        return query_files(sql.replace("{a}", self._name), {}, params)

    def close(self) -> None:
        query_files(f"DROP TABLE IF EXISTS {self._name}", {})

    def __enter__(self) -> Attempts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def per_task(self) -> dict[str, int]:
        """The number of attempts of each task name."""
        return dict(self._query("SELECT task, count(*) FROM {a} WHERE ran GROUP BY task"))

    def workers(self) -> list[str | None]:
        """Every worker an attempt ran on (None for attempts with no worker recorded)."""
        return [w for (w,) in self._query("SELECT DISTINCT worker FROM {a} WHERE ran")]

    def timeline(
        self, t0_us: int, t_end: float, worker_gone: dict[str, float], max_bars: int
    ) -> tuple[list[dict], dict | None]:
        """The attempts to draw (at most `max_bars`, see `select`), and, when that is not
        all of them, how busy each worker was, from all of them: {"bins": count, "width":
        seconds, "levels": [(worker, bin, attempts running on average), ...]}, with ""
        as the worker of attempts that have none.

        Times are seconds since `t0_us`; `t_end` is where the run's record ends;
        `worker_gone` the time each worker went away.
        """
        closed = [_closed_bar(row) for row in self._query(_CLOSED, [t0_us, max_bars])]
        rows = self._query(_OPEN, [t0_us])
        measured = measured_ends(self.run, {row[0] for row in rows}, t0_us) if rows else {}
        opened = settle_open([_open_row(row) for row in rows], measured, worker_gone, t_end)
        drawn = select(closed + opened, max_bars)
        args = dict(self._query(_ARGS, [sorted({bar["key"] for bar in drawn})]))
        for bar in drawn:
            bar["args"] = args.get(bar["key"])
        busy = None
        if len(drawn) < self.total:
            busy = self._busy(t0_us, t_end, opened)
        return drawn, busy

    def _busy(self, t0_us: int, t_end: float, opened: list[dict]) -> dict:
        bins = busy_bin_count(len(self.workers()))
        width = max(t_end, 1e-3) / bins
        lists = ([a["worker"] or "" for a in opened], [a["start"] for a in opened])
        lists += ([a["end"] for a in opened],)
        rows = self._query(_BUSY, [t0_us, width, bins, *lists])
        levels = [(worker, int(b), float(level)) for worker, b, level in rows]
        return {"bins": bins, "width": width, "levels": levels}


BUSY_BINS = 600
BUSY_VALUES = 240_000  # bins x workers: keeps the page's data small for thousands of workers


def busy_bin_count(workers: int) -> int:
    """How many time bins the busy band of each worker has."""
    return max(60, min(BUSY_BINS, BUSY_VALUES // max(1, workers)))


def _closed_bar(row: tuple) -> dict:
    key, attempt, task, worker, start, end, event, duration, queue = row
    return {
        "key": key,
        "attempt": attempt,
        "task": task,
        "worker": worker,
        "start": round(start, 6),
        "end": round(end, 6),
        "status": END_STATUS[event],
        "duration": duration,
        "queue": queue,
    }


def _open_row(row: tuple) -> dict:
    key, attempt, task, worker, start, next_start, latest, queue = row
    return {
        "key": key,
        "attempt": attempt,
        "task": task,
        "worker": worker,
        "start": round(start, 6),
        "next_start": None if next_start is None else round(next_start, 6),
        "latest": latest,
        "queue": queue,
    }


def settle_open(
    rows: list[dict],
    measured: dict[tuple[str, str], list[tuple[float, float | None]]],
    worker_gone: dict[str, float],
    t_end: float,
) -> list[dict]:
    """Status and end of the attempts with no end line (see the module docstring).

    `rows` have key, attempt, worker, start, next_start (the next attempt's start) and
    latest (the key's highest attempt); `measured` holds the (time, wall_s) of each
    `task_resources` line of a key on a worker; `worker_gone` when each worker left.
    """
    settled = []
    for row in rows:
        key, worker, start = row["key"], row["worker"], row["start"]
        bar = {k: row[k] for k in ("key", "attempt", "task", "worker", "start", "queue")}
        bar["duration"] = None
        later = row["attempt"] < (row["latest"] or 0)
        ends = sorted(m for m in measured.get((key, worker), []) if m[0] >= start)
        resource_end = None
        if ends:  # the execution's end: its start plus wall_s, at most the line's time
            at, wall = ends[0]
            resource_end = at if wall is None else min(at, start + wall)
        gone = worker_gone.get(worker) if worker is not None else None
        gone = gone if gone is not None and gone >= start else None
        if later or gone is not None:
            bar["status"] = LOST
            candidates = [resource_end, gone, row["next_start"]]
            end = next((t for t in candidates if t is not None), t_end)
        else:
            bar["status"] = UNFINISHED
            end = t_end
        bar["end"] = max(start, end)
        settled.append(bar)
    return settled


def select(bars: list[dict], max_bars: int) -> list[dict]:
    """At most `max_bars` bars, by start: every attempt that did not complete first
    (failed, lost, cancelled, unfinished), then the longest completed ones."""
    if len(bars) > max_bars:
        bars = heapq.nsmallest(
            max_bars,
            bars,
            key=lambda b: (
                KEEP_ORDER[b["status"]],
                -(b["end"] - b["start"]),
                b["start"],
                b["key"],
                b["attempt"],
            ),
        )
    return sorted(bars, key=lambda b: (b["start"], b["key"], b["attempt"]))


def assign_lanes(bars: list[dict], threads: list[int | None]) -> list[int]:
    """Stack overlapping bars of one worker (`bar["w"]`) in lanes; the lane count per worker.

    A worker gets at most one lane per thread when its thread count is known: a bar ends
    when the scheduler recorded the end, a little after the worker moved on to its next
    task, and that lag must not look like a second thread.
    """
    lanes = [1] * len(threads)
    by_worker: dict[int, list[dict]] = {}
    for bar in bars:
        by_worker.setdefault(bar["w"], []).append(bar)
    for w, items in by_worker.items():
        limit = threads[w] or 0
        items.sort(key=lambda b: (b["start"], b["end"]))
        busy: list[tuple[float, int]] = []  # (end, lane) of the lanes in use
        free: list[int] = []
        count = 0
        for item in items:
            while busy and busy[0][0] <= item["start"]:
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                lane = heapq.heappop(free)
            elif limit and count >= limit:
                lane = heapq.heappop(busy)[1]  # the lane that frees first
            else:
                lane, count = count, count + 1
            item["lane"] = lane
            heapq.heappush(busy, (item["end"], lane))
        lanes[w] = max(1, count)
    return lanes


_MEASURED_FIELDS = ["timestamp", "event", "worker", "wall_s"]
_MEASURED_KEY = {"key": "VARCHAR"}  # not in the columnar copy
_MEASURED = f"""
SELECT key, worker, us, wall FROM (
    SELECT key, worker, {epoch_us_sql()} AS us, {finite_sql("wall_s")} AS wall
    FROM {{t}}
    WHERE event = '{sc.TASK_RESOURCES}' AND worker <> ''
        AND key IN (SELECT unnest($1::VARCHAR[]))
) WHERE us IS NOT NULL
"""


def measured_ends(
    run: Run, keys: set[str], t0_us: int
) -> dict[tuple[str, str], list[tuple[float, float | None]]]:
    """(time, wall_s) of each `task_resources` line of `keys`, by key and worker.

    Only runs with attempts that have no end line need these. They are read from the
    JSONL file (its columnar copy has no key column): by DuckDB, or line by line where
    DuckDB refuses the file.
    """
    import duckdb

    found: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    source = run.file(RESOURCES, _MEASURED_FIELDS, extra=_MEASURED_KEY)
    try:
        rows = source.query(_MEASURED, [sorted(keys)])
    except duckdb.Error:
        rows = []
        for line in run.iter_lines(RESOURCES, containing=sc.TASK_RESOURCES.encode()):
            if line is None or line.get("event") != sc.TASK_RESOURCES:
                continue
            key, worker = text(line.get("key")), text(line.get("worker"))
            us = epoch_us(line.get("timestamp"))
            if key in keys and worker and us is not None:
                rows.append((key, worker, us, number(line.get("wall_s"))))
    finally:
        source.close()
    for key, worker, us, wall in rows:
        found.setdefault((key, worker), []).append((round((us - t0_us) / 1e6, 6), wall))
    return found
