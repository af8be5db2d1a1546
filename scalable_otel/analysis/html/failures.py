"""The failures table, and the error each failed attempt shows on the timeline.

From failures.jsonl (which adds the traceback and the failed dependency), else from the
`task_failed` lines of tasks.jsonl. Read line by line, keeping only the earliest
`MAX_FAILURE_ROWS`, so a run with many failures costs no more memory than a few.
"""

from __future__ import annotations

import heapq
import itertools

from ... import semconv as sc
from ...rundir import FAILURES, TASKS
from ..load import Run
from .common import cut, epoch_us, integer, seconds, text

MAX_FAILURE_ROWS = 1_000
MAX_ERROR_CHARS = 500
MAX_TRACEBACK_CHARS = 8_000


def _lines(run: Run, name: str, skipped: list[int]):
    """The failure lines of failures.jsonl (an event-less line is one) or of tasks.jsonl
    (the lines holding `task_failed`: a big file with few of them is read at the speed of
    the disk)."""
    own = name == FAILURES
    for line in run.iter_lines(name, containing=None if own else sc.TASK_FAILED.encode()):
        if line is None:
            skipped[0] += own
        elif line.get("event", sc.TASK_FAILED if own else None) == sc.TASK_FAILED:
            yield line


def _row(line: dict, at_us: int | None, t0_us: int | None) -> dict:
    caused = line.get("caused_by") if isinstance(line.get("caused_by"), dict) else None
    traceback = text(line.get("traceback")) or ""
    if len(traceback) > MAX_TRACEBACK_CHARS:
        traceback = "…" + traceback[-(MAX_TRACEBACK_CHARS - 1) :]
    return {
        "at": None if at_us is None or t0_us is None else seconds(at_us, t0_us),
        "task": text(line.get("task")),
        "key": text(line.get("key")),
        "error_type": text(line.get("error_type")),
        "error_message": text(line.get("error_message")),
        "worker": text(line.get("worker")),
        "attempt": integer(line.get("attempt")),
        "caused_by": caused,
        "traceback": traceback,
    }


def failures(
    run: Run, t0_us: int | None, wanted: set[tuple[str, int]]
) -> tuple[list[dict], int, dict[tuple[str, int], str], int]:
    """The earliest failures as table rows, how many there are, the error text of each
    (key, attempt) in `wanted`, and how many lines of failures.jsonl did not parse."""
    earliest: list[tuple] = []  # the earliest rows, latest on top: (-time, -order, time, line)
    errors: dict[tuple[str, int], str] = {}
    total, skipped, order = 0, [0], itertools.count()
    for name in (FAILURES, TASKS):
        for line in _lines(run, name, skipped):
            total += 1
            at = epoch_us(line.get("timestamp"))
            item = (-(at if at is not None else 2**63), -next(order), at, line)
            if len(earliest) < MAX_FAILURE_ROWS:
                heapq.heappush(earliest, item)
            elif item > earliest[0]:
                heapq.heapreplace(earliest, item)
            key = (text(line.get("key")), integer(line.get("attempt"), 1))
            if key in wanted and key not in errors:
                parts = (text(line.get("error_type")), text(line.get("error_message")))
                errors[key] = cut(": ".join(p for p in parts if p), MAX_ERROR_CHARS)
        if total:
            break
    rows = [_row(line, at, t0_us) for *_, at, line in sorted(earliest, reverse=True)]
    return rows, total, errors, skipped[0]
