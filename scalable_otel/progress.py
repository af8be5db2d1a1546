"""A run followed while it is written: its progress so far, from its files alone.

`RunProgress` reads only what was appended to the run's JSONL files since its last
`poll()` (`rundir.JsonlTail`), so a refresh costs what the run wrote meanwhile, not the
size of its files, and it works from any process that can read the run directory (another
host on a shared filesystem too). `scalable watch` and a session's progress bar
(`ScalableSession(progress=True)`) both draw from its `snapshot()`.

Counts follow the report's rule for a run whose counts are not final yet
(`analysis.facts`): a task's `submitted`, `completed`, `failed` and `cancelled` are the
lines of that event in tasks.jsonl, one per life of a key, so the totals shown live are
those `scalable report` gives once the run has ended (unless lines were dropped, which
run.json's `telemetry_lines_dropped` says). A life is open from its `task_submitted` line
to its final line (they share the task span's `span_id`); it is *running* once a
`task_started` line names it (`parent_span_id`), else *queued*.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

from . import semconv as sc
from .rundir import CACHE, FAILURES, RESOURCES, TASKS, WORKERS, JsonlTail, parse_iso

#: Seconds of finished tasks the throughput is taken over.
RATE_WINDOW_S = 30.0
#: How many of the last failures a snapshot holds.
LAST_FAILURES = 5
_FINAL = {sc.TASK_COMPLETED: "completed", sc.TASK_FAILED: "failed", sc.TASK_CANCELLED: "cancelled"}
_WORKER_ENDS = (sc.WORKER_REMOVED, sc.WORKER_CRASHED)


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value) -> float | int | None:
    """A number as it is, anything else (a damaged line's text, a boolean, NaN) None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return value


def _life(line: dict, field: str) -> str | None:
    """The task span a line belongs to (`field`: `span_id`, or `parent_span_id` for an
    attempt), else its key (files without span ids)."""
    return _text(line.get(field)) or _text(line.get("key"))


class RunProgress:
    """What a run's files say so far; `poll()` reads what was appended, `snapshot()` says it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._tails = {name: JsonlTail(self.path / name) for name in (TASKS, WORKERS, FAILURES)}
        self._tails[RESOURCES] = JsonlTail(self.path / RESOURCES)
        self._tails[CACHE] = JsonlTail(self.path / CACHE)
        self.counts: dict[str, dict[str, int]] = {}  # task name -> submitted/completed/...
        self._open: dict[str, list] = {}  # life -> [task name, started]
        self._ended_first: set[str] = set()  # final lines read before their submission
        self._finishes: deque[float] = deque()  # timestamps of final lines, recent ones
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.workers: dict[str, dict] = {}  # address -> worker_added line, while connected
        self.samples: dict[str, dict] = {}  # address -> latest resource_sample
        self.failures: deque[dict] = deque(maxlen=LAST_FAILURES)
        self.lookups = 0
        self.hits = 0
        self.lines_read = 0

    # --- reading --------------------------------------------------------------------------
    def poll(self, final: bool = False) -> int:
        """Read what the files gained since the last poll (with `final`, a last line with no
        newline too: the run has ended). Returns how many lines were read."""
        handlers = {
            TASKS: self._task,
            WORKERS: self._worker,
            FAILURES: self._failure,
            RESOURCES: self._resource,
            CACHE: self._cache,
        }
        read = 0
        for name, tail in self._tails.items():
            handle = handlers[name]
            lines = tail.read(final)
            for line in lines:
                handle(line)
            read += len(lines)
        self.lines_read += read
        return read

    @property
    def bad_lines(self) -> dict[str, int]:
        """Lines that did not parse, by file (a torn last line counts once the run ended)."""
        return {name: tail.bad for name, tail in self._tails.items() if tail.bad}

    def _seen(self, stamp) -> float | None:
        at = parse_iso(stamp)
        if at is not None:
            self.first_time = at if self.first_time is None else min(self.first_time, at)
            self.last_time = at if self.last_time is None else max(self.last_time, at)
        return at

    def _task(self, line: dict) -> None:
        event = _text(line.get("event"))  # a damaged line's list or number is no event
        name = _text(line.get("task")) or "?"
        at = self._seen(line.get("timestamp"))
        if event == sc.TASK_SUBMITTED:
            self._count(name, "submitted")
            life = _life(line, "span_id")
            if life is not None and life not in self._ended_first:
                self._open[life] = [name, False]
            self._ended_first.discard(life)
        elif event == sc.TASK_STARTED:
            opened = self._open.get(_life(line, "parent_span_id"))
            if opened is not None:
                opened[1] = True
        elif event in _FINAL:
            self._count(name, _FINAL[event])
            life = _life(line, "span_id")
            if self._open.pop(life, None) is None and life is not None:
                self._ended_first.add(life)
            if at is not None:
                self._finishes.append(at)

    def _count(self, name: str, what: str) -> None:
        counts = self.counts.get(name)
        if counts is None:
            counts = self.counts[name] = dict.fromkeys(
                ("submitted", "completed", "failed", "cancelled"), 0
            )
        counts[what] += 1

    def _worker(self, line: dict) -> None:
        address = _text(line.get("worker"))
        if address is None:
            return
        event = _text(line.get("event"))
        if event == sc.WORKER_ADDED:
            self.workers[address] = line
        elif event in _WORKER_ENDS:
            self.workers.pop(address, None)
            self.samples.pop(address, None)

    def _resource(self, line: dict) -> None:
        address = _text(line.get("worker"))
        if line.get("event") == sc.RESOURCE_SAMPLE and address is not None:
            self.samples[address] = line

    def _failure(self, line: dict) -> None:
        self.failures.append(line)

    def _cache(self, line: dict) -> None:
        if line.get("event") == sc.CACHE_LOOKUP:
            self.lookups += 1
            self.hits += line.get("result") == "hit"

    # --- what it says ---------------------------------------------------------------------
    def rate(self, now: float | None = None) -> float | None:
        """Tasks finished per second over the last `RATE_WINDOW_S` (up to `now`, or the
        last line's time if later), or None before any finished."""
        end = max(time.time() if now is None else now, self.last_time or 0.0)
        while self._finishes and self._finishes[0] <= end - RATE_WINDOW_S:
            self._finishes.popleft()
        if not self._finishes or self.first_time is None:
            return None
        span = min(RATE_WINDOW_S, end - self.first_time)
        return len(self._finishes) / span if span > 0 else None

    def snapshot(self, now: float | None = None) -> dict:
        """The run so far as plain data: per task name and in total `submitted`,
        `completed`, `failed`, `cancelled`, `running`, `queued`; `rate_per_s` and
        `eta_s` (None: unknown); connected `workers` with their latest sample; the last
        `failures`; `cache` lookups and hits."""
        open_by_name: dict[str, list[int]] = {}
        for name, started in self._open.values():
            running_queued = open_by_name.setdefault(name, [0, 0])
            running_queued[0 if started else 1] += 1
        tasks = {}
        for name in sorted(self.counts):
            running, queued = open_by_name.get(name, (0, 0))
            tasks[name] = {**self.counts[name], "running": running, "queued": queued}
        total = {
            key: sum(row[key] for row in tasks.values())
            for key in ("submitted", "completed", "failed", "cancelled", "running", "queued")
        }
        rate = self.rate(now)
        remaining = total["submitted"] - total["completed"] - total["failed"] - total["cancelled"]
        workers = []
        for address in sorted(self.workers):
            sample = self.samples.get(address) or {}
            added = self.workers[address]
            name = added.get("worker_name")
            workers.append(
                {
                    "worker": address,
                    "worker_name": name if isinstance(name, str) else None,
                    "nthreads": _number(added.get("nthreads")),
                    "cpu_percent": _number(sample.get("cpu_percent")),
                    "memory_bytes": _number(sample.get("memory_bytes")),
                    "memory_percent": _number(sample.get("memory_percent")),
                    "sampled_at": sample.get("timestamp"),
                }
            )
        failures = [
            {
                "timestamp": _text(f.get("timestamp")),
                "task": _text(f.get("task")),
                "key": _text(f.get("key")),
                "worker": _text(f.get("worker")),
                "error_type": _text(f.get("error_type")),
                "error_message": _text(f.get("error_message")) or "",
            }
            for f in self.failures
        ]
        return {
            "tasks": tasks,
            "total": total,
            "remaining": max(0, remaining),
            "rate_per_s": rate,
            "eta_s": remaining / rate if rate and remaining > 0 else (0.0 if rate else None),
            "workers": workers,
            "failures": failures,
            "cache": {"lookups": self.lookups, "hits": self.hits},
            "first_time": self.first_time,
            "last_time": self.last_time,
            "lines_read": self.lines_read,
            "skipped_lines": self.bad_lines,
        }
