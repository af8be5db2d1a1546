"""The graph a run executed: every attempt of every key, with its times, worker and
dependencies, as the critical path and the what-if replay read it.

Built from tasks.jsonl alone (and workers.jsonl for each worker's threads):

- `task_submitted` starts a life of a key: its time and its `dependencies`.
- `task_started` is one attempt: its start (on the scheduler's clock), worker, and
  `queue_wait_s`, so its ready time is `start - queue_wait_s`.
- `task_completed`, `task_failed` and `task_cancelled` end the attempt they name; an
  attempt with no such line was lost (its worker died, or it was put back).

An attempt that ended starts at Dask's compute start: its `task_started` time moved by
the final line's `queue_wait_s` less its own (both count from the attempt's ready time;
the start line can hold the worker plugin's earlier start). Its end is that start plus
its `duration_s` (Dask's compute interval), not the final line's timestamp, which is
the later of that end and the moment the scheduler recorded it. A lost attempt has no
measured end: it ends when the next attempt of its key became ready (or is left open
when there is none).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from .. import semconv as sc
from ..rundir import TASKS, WORKERS, parse_iso
from .load import Run

_FINAL = {
    sc.TASK_COMPLETED: "completed",
    sc.TASK_FAILED: "failed",
    sc.TASK_CANCELLED: "cancelled",
}

_FINAL_EVENTS = "', '".join(_FINAL)

# One row per attempt (key and attempt number), with the life it belongs to: the key's
# last `task_submitted` line before the attempt's first line, in file order.
_ATTEMPTS = f"""
WITH lines AS MATERIALIZED (
    SELECT row_number() OVER () AS n, event, key, task, attempt, worker,
           epoch(try_cast(timestamp AS TIMESTAMPTZ)) AS moment, duration_s, queue_wait_s,
           dependencies
    FROM {{t}}
    WHERE event IN ('{sc.TASK_SUBMITTED}', '{sc.TASK_STARTED}', '{_FINAL_EVENTS}')
      AND key IS NOT NULL
),
lives AS (
    SELECT key, n, moment, dependencies FROM lines WHERE event = '{sc.TASK_SUBMITTED}'
),
attempts AS (
    SELECT key, attempt, min(n) AS first_n, arg_min(task, n) AS task,
           arg_max(worker, n) FILTER (WHERE worker IS NOT NULL) AS worker,
           arg_max(moment, n) FILTER (WHERE event = '{sc.TASK_STARTED}') AS started_at,
           arg_max(queue_wait_s, n) FILTER (WHERE event = '{sc.TASK_STARTED}') AS started_wait,
           arg_max(event, n) FILTER (WHERE event IN ('{_FINAL_EVENTS}')) AS final_event,
           arg_max(moment, n) FILTER (WHERE event IN ('{_FINAL_EVENTS}')) AS final_at,
           arg_max(duration_s, n) FILTER (WHERE event IN ('{_FINAL_EVENTS}')) AS duration_s,
           arg_max(queue_wait_s, n) FILTER (WHERE event IN ('{_FINAL_EVENTS}')) AS final_wait
    FROM lines
    WHERE event <> '{sc.TASK_SUBMITTED}' AND attempt IS NOT NULL
    GROUP BY key, attempt
),
placed AS (
    SELECT a.key, a.attempt, max(l.n) AS life
    FROM attempts a JOIN lives l ON a.key = l.key AND l.n <= a.first_n
    GROUP BY a.key, a.attempt
)
SELECT a.key, a.task, a.attempt, a.worker, a.started_at, a.started_wait, a.final_event,
       a.final_at, a.duration_s, a.final_wait, l.moment, l.dependencies
FROM attempts a
LEFT JOIN placed p ON a.key = p.key AND a.attempt = p.attempt
LEFT JOIN lives l ON l.n = p.life
"""


@dataclass(frozen=True, slots=True)
class Execution:
    """One attempt of one key: `status` is completed, failed, cancelled or lost; times
    are seconds since the epoch on the scheduler's clock, None where not recorded."""

    key: str
    task: str | None
    attempt: int
    worker: str | None
    status: str
    submitted: float | None
    ready: float | None
    start: float | None
    end: float | None
    duration_s: float | None
    dependencies: tuple[str, ...]

    @property
    def ran(self) -> bool:
        """Whether the attempt ran on a worker (it has a start and an end)."""
        return self.start is not None and self.end is not None


@dataclass
class RunGraph:
    """A run's executions (in start order; those that never started last), each
    worker's threads, and the run's start and end."""

    executions: list[Execution]
    threads: dict[str, int] = field(default_factory=dict)
    run_start: float | None = None
    run_end: float | None = None

    def final(self) -> dict[str, Execution]:
        """Per key, its last completed execution (the one whose result was used)."""
        done: dict[str, Execution] = {}
        for execution in self.executions:
            if execution.status == "completed":
                previous = done.get(execution.key)
                if previous is None or execution.attempt > previous.attempt:
                    done[execution.key] = execution
        return done

    def by_worker(self) -> dict[str, list[Execution]]:
        """Each worker's executions that ran there, in start order."""
        ran: dict[str, list[Execution]] = {}
        for execution in self.executions:
            if execution.ran and execution.worker:
                ran.setdefault(execution.worker, []).append(execution)
        return ran

    @property
    def slots(self) -> int:
        """Threads of every worker the run had (each worker counted once)."""
        return sum(self.threads.values())


# run -> its graph, for as long as the loaded run lives
_READ: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def run_graph(run: Run) -> RunGraph:
    """The executed graph of `run` (see the module's docstring), read once per loaded
    run: the critical path and the what-if replays of one report share it."""
    graph = _READ.get(run)
    if graph is None:
        graph = _READ[run] = _read_graph(run)
    return graph


def _read_graph(run: Run) -> RunGraph:
    rows = run.file(
        TASKS,
        ["event", "key", "task", "attempt", "worker", "timestamp", "duration_s", "queue_wait_s"],
        extra={"dependencies": "VARCHAR[]"},
    ).query(_ATTEMPTS)
    attempts: dict[tuple[str, int], list] = {}
    for row in rows:
        key, task, number, worker, started, started_wait, final, final_at, duration = row[:9]
        final_wait, submitted, deps = row[9:]
        start, ready, wait = started, None, final_wait
        if start is None and worker and final_at is not None and duration is not None:
            start = final_at - duration  # ran, but its start line is missing: from its end back
        elif start is not None and started_wait is not None and final_wait is not None:
            # The start line can hold the worker plugin's start, taken before Dask's compute
            # start (by far more than a few ms on a loaded host); both lines measure their
            # start from the same ready time, so the final line's wait moves it there.
            start += final_wait - started_wait
        elif final_wait is None:
            wait = started_wait
        if start is not None and wait is not None:
            ready = start - wait
        attempts[(key, number)] = [
            key,
            task,
            number,
            worker,
            _FINAL.get(final, "lost"),
            submitted,
            ready,
            start,
            None if start is None or duration is None else start + duration,
            duration,
            tuple(d for d in deps or () if isinstance(d, str)),
        ]
    for (key, number), fields in attempts.items():
        if fields[4] == "lost" and fields[8] is None:  # it ended when the next became ready
            later = attempts.get((key, number + 1))
            fields[8] = later[6] if later is not None else None
    executions = [Execution(*fields) for fields in attempts.values()]
    executions.sort(key=lambda e: (e.start is None, e.start or 0.0, e.key, e.attempt))
    meta = run.meta
    return RunGraph(
        executions,
        threads=_threads(run),
        run_start=parse_iso(meta.get("start_time")),
        run_end=parse_iso(meta.get("end_time")),
    )


def _threads(run: Run) -> dict[str, int]:
    threads: dict[str, int] = {}
    for line in run.lines(WORKERS):
        worker, n = line.get("worker"), line.get("nthreads")
        if line.get("event") == sc.WORKER_ADDED and isinstance(worker, str):
            threads[worker] = n if isinstance(n, int) and n > 0 else 1
    return threads
