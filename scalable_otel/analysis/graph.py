"""The graph a run executed: every attempt of every key, with its times, worker and
dependencies, as the critical path and the what-if replay read it.

Built from tasks.jsonl alone (and workers.jsonl for each worker's threads):

- `task_submitted` starts a life of a key: its time and its `dependencies`.
- `task_started` is one attempt: its start (on the scheduler's clock), worker, and
  `queue_wait_s`, so its ready time is `start - queue_wait_s`.
- `task_completed`, `task_failed` and `task_cancelled` end the attempt they name; an
  attempt with no such line was lost (its worker died, or it was put back).

An attempt's end is its start plus its `duration_s` (Dask's compute interval), not the
final line's timestamp, which is the later of that end and the moment the scheduler
recorded it. A lost attempt has no measured end: it ends when the next attempt of its
key became ready (or is left open when there is none).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import semconv as sc
from ..rundir import TASKS, WORKERS, parse_iso
from .load import Run

_FINAL = {
    sc.TASK_COMPLETED: "completed",
    sc.TASK_FAILED: "failed",
    sc.TASK_CANCELLED: "cancelled",
}

_LINES = f"""
SELECT event, key, task, attempt, worker, timestamp, duration_s, queue_wait_s, dependencies
FROM {{t}}
WHERE event IN ('{sc.TASK_SUBMITTED}', '{sc.TASK_STARTED}', '{sc.TASK_COMPLETED}',
                '{sc.TASK_FAILED}', '{sc.TASK_CANCELLED}')
  AND key IS NOT NULL
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


@dataclass
class _Attempt:
    key: str
    task: str | None
    attempt: int
    submitted: float | None
    dependencies: tuple[str, ...]
    worker: str | None = None
    start: float | None = None
    ready: float | None = None
    status: str = "lost"
    duration_s: float | None = None


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def run_graph(run: Run) -> RunGraph:
    """The executed graph of `run` (see the module's docstring)."""
    rows = run.file(
        TASKS,
        ["event", "key", "task", "attempt", "worker", "timestamp", "duration_s", "queue_wait_s"],
        extra={"dependencies": "VARCHAR[]"},
    ).query(_LINES)
    lives: dict[str, tuple[float | None, tuple[str, ...]]] = {}
    attempts: dict[tuple[str, int], _Attempt] = {}

    def attempt_of(key, task, number) -> _Attempt:
        found = attempts.get((key, number))
        if found is None:
            submitted, deps = lives.get(key, (None, ()))
            found = attempts[(key, number)] = _Attempt(key, task, number, submitted, deps)
        return found

    for event, key, task, number, worker, stamp, duration, wait, deps in rows:
        when = parse_iso(stamp)
        if event == sc.TASK_SUBMITTED:
            lives[key] = (when, tuple(d for d in deps or () if isinstance(d, str)))
            continue
        if number is None:
            continue
        attempt = attempt_of(key, task, int(number))
        attempt.worker = worker or attempt.worker
        if event == sc.TASK_STARTED:
            attempt.start = when
            if when is not None and _number(wait) is not None:
                attempt.ready = when - wait
            continue
        attempt.status = _FINAL[event]
        attempt.duration_s = _number(duration)
        if attempt.start is None and when is not None and attempt.duration_s is not None:
            if attempt.worker:  # ran, but its start line is missing: from its end back
                attempt.start = when - attempt.duration_s
        if attempt.ready is None and attempt.start is not None and _number(wait) is not None:
            attempt.ready = attempt.start - wait

    executions = [_execution(a, attempts) for a in attempts.values()]
    executions.sort(key=lambda e: (e.start is None, e.start or 0.0, e.key, e.attempt))
    meta = run.meta
    return RunGraph(
        executions,
        threads=_threads(run),
        run_start=parse_iso(meta.get("start_time")),
        run_end=parse_iso(meta.get("end_time")),
    )


def _execution(attempt: _Attempt, attempts: dict[tuple[str, int], _Attempt]) -> Execution:
    end = None
    if attempt.start is not None and attempt.duration_s is not None:
        end = attempt.start + attempt.duration_s
    elif attempt.status == "lost":
        later = attempts.get((attempt.key, attempt.attempt + 1))
        end = later.ready if later is not None else None
    return Execution(
        key=attempt.key,
        task=attempt.task,
        attempt=attempt.attempt,
        worker=attempt.worker,
        status=attempt.status,
        submitted=attempt.submitted,
        ready=attempt.ready,
        start=attempt.start,
        end=end,
        duration_s=attempt.duration_s,
        dependencies=attempt.dependencies,
    )


def _threads(run: Run) -> dict[str, int]:
    threads: dict[str, int] = {}
    for line in run.lines(WORKERS):
        worker, n = line.get("worker"), line.get("nthreads")
        if line.get("event") == sc.WORKER_ADDED and isinstance(worker, str):
            threads[worker] = n if isinstance(n, int) and n > 0 else 1
    return threads
