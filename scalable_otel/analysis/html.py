"""A self-contained HTML report of one run: timeline, worker resources, durations, failures, cache.

The page is one file that opens offline. It loads nothing: no external script, font,
stylesheet or image. The run's figures are embedded as JSON in a
``<script type="application/json">`` block and drawn as SVG by inline JavaScript; the
tables (header, per-task figures, failures, cache) are plain HTML, readable without
JavaScript. A Content-Security-Policy in the page allows no network access at all and only
the page's own script (by its SHA-256 hash), so even text that got into the page unescaped
could not run or load anything.

Everything taken from the run (task names, keys, argument summaries, error messages,
worker names) is user data. It reaches HTML only through :func:`html.escape`, the JSON
block escapes ``<``, ``>`` and ``&`` (so no ``</script>`` can end it), and the script
sets text only with ``textContent`` and ``setAttribute``.

What the page shows:

- **Header**: run id, status, project, target and provider, start, end, duration, and
  counts (tasks submitted, completed, failed, cancelled, attempts, workers, cache hits).
- **Timeline**: one bar per task attempt, on the row of its worker, from its
  ``task_started`` line to the ``task_completed``, ``task_failed`` or ``task_cancelled``
  line with the same ``key`` and ``attempt``, coloured by task name. Failed attempts have a
  red outline and a red mark. An attempt with no end line of its own was lost (a later
  attempt of the same key exists, or its worker went away); it ends at its
  ``task_resources`` line, else at its worker's removal, else at the next attempt's start,
  and is drawn dashed. An attempt with no end at all (a run in progress or cut short) is
  drawn faded up to the last time the run recorded. A completed or failed line with a worker
  but no ``task_started`` line (a lost line) gets a bar from ``timestamp - duration_s``.
  Attempts that overlap on a worker (several threads) are stacked in lanes. Each bar is an
  SVG ``rect`` with ``class="task-bar"`` (plus ``failed``, ``lost``, ``cancelled`` or
  ``unfinished``), ``data-key`` and ``data-attempt``, and a ``<title>`` with task, key,
  worker, attempt, times, duration, queue wait, arguments and error. When drawn, the
  timeline element gets ``data-drawn-tasks="<number of bars>"``.
- **Worker CPU and memory**: ``cpu_percent`` and ``memory_bytes`` of the
  ``resource_sample`` lines, one line per worker, on the same time axis as the timeline.
  Drag across any time chart to zoom all of them; double-click to zoom out.
- **Task durations**: per task name, a box plot of ``duration_s`` of the attempts that
  ran (completed or raised): whiskers at min and max, box at the quartiles, a line at the
  median, and the values as dots; a log scale when they span more than two decades. A table
  below it gives attempts, completed, failed, cancelled, total, mean, median, p95 and max.
- **Failures**: task, key, error type, message, worker, attempt and time of each failed
  task (from ``failures.jsonl``, else from ``task_failed`` lines), with the traceback.
- **Cache**: lookups, hits, misses, hit rate and time saved, in total and per function.

Limits, so that very large runs keep a usable file and page:

- **Timeline**: at most ``MAX_BARS`` (20,000) attempts are drawn. If a run has more, every
  attempt that did not complete (failed, lost, cancelled, unfinished; at most the cap) is
  kept, and the longest completed attempts fill the rest. The page says how many of how many
  attempts it draws. Durations, counts and tables still use every attempt.
- **Resource lines**: a worker's CPU or memory series longer than ``MAX_RESOURCE_POINTS``
  (2,000) is cut to that many points by keeping the lowest and the highest sample of each
  run of consecutive samples, so spikes stay visible.
- **Durations**: the box plots use every value; at most ``MAX_DURATION_DOTS`` (300) dots
  per task name are drawn (evenly spaced quantiles). At most ``MAX_TASK_NAMES`` (60) task
  names, those with the most total time, are shown in the chart and table.
- **Text**: argument summaries are cut to 200 characters in the page, error messages in
  hover titles to 500, tracebacks to their last 8,000; at most ``MAX_FAILURE_ROWS`` (1,000)
  failures are listed (the earliest).

>>> from scalable_otel.analysis import load_run                       # doctest: +SKIP
>>> from scalable_otel.analysis.html import write_html_report          # doctest: +SKIP
>>> write_html_report(load_run(last=True), "report.html")              # doctest: +SKIP
PosixPath('report.html')
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import html
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import semconv as sc
from ..rundir import make_private_dirs, replaced_atomically
from .facts import finite_number

__all__ = ["html_report", "write_html_report", "MAX_BARS"]

MAX_BARS = 20_000
MAX_RESOURCE_POINTS = 2_000
MAX_DURATION_DOTS = 300
MAX_TASK_NAMES = 60
MAX_FAILURE_ROWS = 1_000
MAX_ARGS_CHARS = 200
MAX_ERROR_CHARS = 500
MAX_TRACEBACK_CHARS = 8_000

_FINAL_EVENTS = ("task_completed", "task_failed", "task_cancelled")
_STATUS_CLASSES = {*sc.RUN_ENDED, sc.RUN_RUNNING, sc.RUN_CRASHED}
# Which attempts the timeline keeps first when it has to drop some.
_KEEP_ORDER = {"failed": 0, "lost": 1, "cancelled": 2, "unfinished": 3, "completed": 4}


# --- small helpers ----------------------------------------------------------------------


def _clean(value):
    """A JSON-safe Python value: None for NaN/NaT/NA, Python scalars for numpy ones."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _int(value, default: int | None = None) -> int | None:
    number = finite_number(value)
    return default if number is None else int(number)


def _text(value) -> str | None:
    value = _clean(value)
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _cut(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _events(frame: pd.DataFrame, *names: str) -> pd.DataFrame:
    if frame is None or frame.empty or "event" not in frame:
        return pd.DataFrame()
    return frame[frame["event"].isin(names)]


def _column(frame: pd.DataFrame, name: str) -> list:
    """A column as a list of plain Python values, None where missing (fast for long runs)."""
    if name not in frame:
        return [None] * len(frame)
    series = frame[name]
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series):
        return [_clean(v) for v in series.tolist()]
    missing = series.isna().tolist()
    values = series.astype(object).tolist()  # Python scalars, not numpy ones
    return [None if m else v for v, m in zip(values, missing)]


def _records(
    frame: pd.DataFrame, columns: tuple[str, ...] | None = None, t0: pd.Timestamp | None = None
) -> list[dict]:
    """The rows of `frame` as dicts of `columns` (all by default); with `t0`, each row also
    has "t": its timestamp in seconds since t0 (None if it has none)."""
    if frame is None or frame.empty:
        return []
    names = list(frame.columns) if columns is None else list(columns)
    data = {name: _column(frame, name) for name in names}
    if t0 is not None:
        stamps = (_timestamps(frame) - t0).dt.total_seconds()
        data["t"] = [None if m else v for v, m in zip(stamps.tolist(), stamps.isna().tolist())]
    keys = list(data)
    return [dict(zip(keys, values)) for values in zip(*data.values())]


def _timestamps(frame: pd.DataFrame) -> pd.Series:
    if frame is None or frame.empty or "timestamp" not in frame:
        return pd.Series([], dtype="datetime64[ns, UTC]")
    stamps = frame["timestamp"]
    if not isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = pd.to_datetime(stamps, utc=True, errors="coerce", format="ISO8601")
    return stamps


def _stamp(value) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0 s"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 60:
        return f"{value:.2f} s"
    minutes, seconds = divmod(value, 60)
    if minutes < 60:
        return f"{int(minutes)} min {seconds:04.1f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes):02d} min"


def _fmt_time(stamp: pd.Timestamp | None) -> str:
    return "–" if stamp is None else stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _natural(text: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _e(value) -> str:
    """Escape for HTML text and quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


# --- the figures --------------------------------------------------------------------------


def _origin(run, frames) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The time axis: from run.json's start (else the first line) to the last thing seen."""
    firsts, lasts = [], []
    for frame in frames:
        stamps = _timestamps(frame).dropna()
        if len(stamps):
            firsts.append(stamps.min())
            lasts.append(stamps.max())
    start = _stamp(run.meta.get("start_time"))
    end = _stamp(run.meta.get("end_time"))
    if start is None and firsts:
        start = min(firsts)
    if firsts and start is not None:
        start = min([start, *firsts])
    if lasts:
        end = max([end, *lasts]) if end is not None else max(lasts)
    return start, end


def _workers(run, addresses_seen: list[str]) -> tuple[list[dict], dict[str, int]]:
    """One row per worker address, ordered by worker name, with its lifetime."""
    info: dict[str, dict] = {}
    for row in _records(run.workers):
        address = _text(row.get("worker"))
        if not address:
            continue
        entry = info.setdefault(address, {"address": address})
        if row.get("worker_name") is not None:
            entry["name"] = _text(row.get("worker_name"))
        if row.get("nthreads") is not None:
            entry["nthreads"] = _int(row.get("nthreads"))
        event = row.get("event")
        stamp = row.get("timestamp")
        if event == "worker_added":
            entry["added_at"] = stamp
        elif event in ("worker_removed", "worker_crashed"):
            entry["ended_at"] = stamp
            entry["end"] = "crashed" if event == "worker_crashed" else "removed"
            entry["reason"] = _text(row.get("reason"))
    resources = run.resources
    if resources is not None and not resources.empty and "worker" in resources:
        columns = [c for c in ("worker", "worker_name") if c in resources]
        names = resources[columns]
        try:
            names = names.drop_duplicates()
        except TypeError:  # a list where a name belongs: compare them as text
            names = names.map(_text).drop_duplicates()
        for row in _records(names, ("worker", "worker_name")):
            address, name = _text(row["worker"]), _text(row["worker_name"])
            if not address:
                continue
            entry = info.setdefault(address, {"address": address})
            if name is not None:
                entry.setdefault("name", name)
    for address in addresses_seen:
        info.setdefault(address, {"address": address})
    rows = sorted(
        info.values(),
        key=lambda w: (w.get("name") is None, _natural(w.get("name") or ""), w["address"]),
    )
    return rows, {w["address"]: i for i, w in enumerate(rows)}


def _args_text(value) -> str | None:
    value = _clean(value)
    if value is None:
        return None
    if isinstance(value, str):
        return _cut(value, MAX_ARGS_CHARS)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = str(value)
    return _cut(text, MAX_ARGS_CHARS)


def _attempts(run, t0: pd.Timestamp, t_end: float) -> list[dict]:
    """One dict per task attempt that ran on a worker (see the module docstring)."""
    tasks = run.tasks
    started = _events(tasks, "task_started")
    finals = _events(tasks, *_FINAL_EVENTS)
    submitted = _events(tasks, "task_submitted")

    final_columns = (
        "event", "task", "key", "worker", "attempt", "duration_s", "queue_wait_s", "args",
        "error_type", "error_message",
    )  # fmt: skip
    finals = _records(finals, final_columns, t0)
    args_by_key: dict[str, str | None] = {}
    for row in _records(submitted, ("key", "args")) + finals:
        key = _text(row.get("key"))
        if key is not None and row.get("args") is not None:
            args_by_key.setdefault(key, _args_text(row.get("args")))

    end_by_attempt: dict[tuple[str, int], dict] = {}
    for row in finals:
        key = _text(row.get("key"))
        if key is not None:
            end_by_attempt.setdefault((key, _int(row.get("attempt"), 1)), row)

    # task_resources of an execution: (line time, wall_s) per key and worker
    ends_by_key_worker: dict[tuple[str, str], list[tuple[float, float | None]]] = {}
    resources = _events(run.resources, "task_resources")
    for row in _records(resources, ("key", "worker", "wall_s"), t0):
        key, worker, at = _text(row["key"]), _text(row["worker"]), row["t"]
        if key is not None and worker is not None and at is not None:
            ends_by_key_worker.setdefault((key, worker), []).append(
                (at, finite_number(row.get("wall_s")))
            )
    worker_gone: dict[str, float] = {}
    ended = _events(run.workers, "worker_removed", "worker_crashed")
    for row in _records(ended, ("worker",), t0):
        worker, at = _text(row["worker"]), row["t"]
        if worker is not None and at is not None:
            worker_gone[worker] = min(at, worker_gone.get(worker, at))

    attempts: list[dict] = []
    seen: set[tuple[str, int]] = set()
    started = _records(started, ("task", "key", "worker", "attempt", "queue_wait_s"), t0)
    for row in sorted(started, key=lambda r: r["t"] if r["t"] is not None else 0.0):
        key = _text(row.get("key"))
        start = row["t"]
        if key is None or start is None:
            continue
        attempt = _int(row.get("attempt"), 1)
        if (key, attempt) in seen:
            continue
        seen.add((key, attempt))
        attempts.append(
            {
                "key": key,
                "attempt": attempt,
                "task": _text(row.get("task")) or "(unknown)",
                "worker": _text(row.get("worker")),
                "start": start,
                "queue": finite_number(row.get("queue_wait_s")),
            }
        )
    # A final line that ran on a worker but whose task_started line is missing.
    for (key, attempt), row in end_by_attempt.items():
        if (key, attempt) in seen or row.get("event") == "task_cancelled":
            continue
        worker, at = _text(row.get("worker")), row["t"]
        if worker is None or at is None:
            continue
        duration = finite_number(row.get("duration_s")) or 0.0
        seen.add((key, attempt))
        attempts.append(
            {
                "key": key,
                "attempt": attempt,
                "task": _text(row.get("task")) or "(unknown)",
                "worker": worker,
                "start": at - duration,
                "queue": finite_number(row.get("queue_wait_s")),
                "inferred_start": True,
            }
        )

    next_start: dict[tuple[str, int], float] = {}
    by_key: dict[str, list[dict]] = {}
    for item in attempts:
        by_key.setdefault(item["key"], []).append(item)
    for items in by_key.values():
        items.sort(key=lambda a: a["attempt"])
        for a, b in zip(items, items[1:]):
            next_start[(a["key"], a["attempt"])] = b["start"]
    last_attempt = {key: items[-1]["attempt"] for key, items in by_key.items()}
    final_attempt = {}
    for key, attempt in end_by_attempt:
        final_attempt[key] = max(attempt, final_attempt.get(key, attempt))

    for item in attempts:
        key, attempt, start = item["key"], item["attempt"], item["start"]
        row = end_by_attempt.get((key, attempt))
        if row is not None:
            event = row.get("event")
            item["status"] = {"task_completed": "completed", "task_failed": "failed"}.get(
                event, "cancelled"
            )
            item["end"] = row["t"]
            item["duration"] = finite_number(row.get("duration_s"))
            if row.get("queue_wait_s") is not None:
                item["queue"] = finite_number(row.get("queue_wait_s"))
            if item["worker"] is None:
                item["worker"] = _text(row.get("worker"))
            if event == "task_failed":
                error = ": ".join(
                    t for t in (_text(row.get("error_type")), _text(row.get("error_message"))) if t
                )
                item["error"] = _cut(error, MAX_ERROR_CHARS)
        else:
            worker = item["worker"]
            later = attempt < max(last_attempt.get(key, 0), final_attempt.get(key, 0))
            measured = [
                m for m in sorted(ends_by_key_worker.get((key, worker), [])) if m[0] >= start
            ]
            resource_end = None
            if measured:  # the execution's end: its start plus wall_s, at most the line's time
                at, wall = measured[0]
                resource_end = at if wall is None else min(at, start + wall)
            gone = worker_gone.get(worker) if worker is not None else None
            gone = gone if gone is not None and gone >= start else None
            if later or gone is not None:
                item["status"] = "lost"
                candidates = [resource_end, gone, next_start.get((key, attempt))]
                item["end"] = next((t for t in candidates if t is not None), t_end)
            else:
                item["status"] = "unfinished"
                item["end"] = t_end
        if item.get("end") is None or item["end"] < start:
            item["end"] = max(start, item.get("end") or start)
        item["args"] = args_by_key.get(key)
    return attempts


def _assign_lanes(attempts: list[dict], workers: list[dict]) -> list[int]:
    """Stack overlapping attempts of one worker in lanes; returns the lane count per worker.

    A worker gets at most one lane per thread when its thread count is known: a bar ends
    when the scheduler recorded the end, a little after the worker moved on to its next
    task, and that lag must not look like a second thread.
    """
    lanes = [1] * len(workers)
    by_worker: dict[int, list[dict]] = {}
    for item in attempts:
        by_worker.setdefault(item["w"], []).append(item)
    for w, items in by_worker.items():
        threads = workers[w].get("nthreads") or 0
        items.sort(key=lambda a: (a["start"], a["end"]))
        busy: list[tuple[float, int]] = []  # (end, lane) of the lanes in use
        free: list[int] = []
        count = 0
        for item in items:
            while busy and busy[0][0] <= item["start"]:
                heapq.heappush(free, heapq.heappop(busy)[1])
            if free:
                lane = heapq.heappop(free)
            elif threads and count >= threads:
                lane = heapq.heappop(busy)[1]  # the lane that frees first
            else:
                lane, count = count, count + 1
            item["lane"] = lane
            heapq.heappush(busy, (item["end"], lane))
        lanes[w] = max(1, count)
    return lanes


def _downsample(times: list[float], values: list[float], limit: int) -> tuple[list, list]:
    """At most `limit` points: the lowest and highest of each run of consecutive samples."""
    n = len(times)
    if n <= limit:
        return times, values
    groups = max(1, limit // 2)
    keep: list[int] = []
    for g in range(groups):
        lo, hi = g * n // groups, (g + 1) * n // groups
        if lo >= hi:
            continue
        chunk = values[lo:hi]
        a = lo + int(np.argmin(chunk))
        b = lo + int(np.argmax(chunk))
        keep.extend(sorted({a, b}))
    return [times[i] for i in keep], [values[i] for i in keep]


def _resources(run, t0: pd.Timestamp, index: dict[str, int]) -> list[dict]:
    samples = _events(run.resources, "resource_sample")
    if samples.empty or "worker" not in samples:
        return []
    frame = pd.DataFrame(
        {
            "t": (_timestamps(samples) - t0).dt.total_seconds(),
            "worker": samples["worker"].map(_text),
            "cpu": pd.to_numeric(samples.get("cpu_percent"), errors="coerce")
            if "cpu_percent" in samples
            else np.nan,
            "mem": pd.to_numeric(samples.get("memory_bytes"), errors="coerce")
            if "memory_bytes" in samples
            else np.nan,
        }
    ).replace([np.inf, -np.inf], np.nan)
    frame = frame.dropna(subset=["t", "worker"])
    series = []
    for worker, group in frame.sort_values("t").groupby("worker", sort=False):
        if worker not in index:
            continue
        entry = {"w": index[worker]}
        for metric in ("cpu", "mem"):
            part = group.dropna(subset=[metric])
            times, values = _downsample(
                [round(float(t), 4) for t in part["t"]],
                [float(v) for v in part[metric]],
                MAX_RESOURCE_POINTS,
            )
            entry[metric] = [times, values]
        if entry["cpu"][0] or entry["mem"][0]:
            series.append(entry)
    series.sort(key=lambda s: s["w"])
    return series


def _task_stats(run, attempts: list[dict]) -> list[dict]:
    """Per task name: counts and the distribution of durations of the attempts that ran."""
    finals = _records(_events(run.tasks, *_FINAL_EVENTS), ("event", "task", "worker", "duration_s"))
    stats: dict[str, dict] = {}

    def entry(name: str) -> dict:
        return stats.setdefault(
            name,
            {"task": name, "attempts": 0, "completed": 0, "failed": 0, "cancelled": 0, "d": []},
        )

    for item in attempts:
        entry(item["task"])["attempts"] += 1
    for row in finals:
        name = _text(row.get("task")) or "(unknown)"
        event = row.get("event")
        item = entry(name)
        item[{"task_completed": "completed", "task_failed": "failed"}.get(event, "cancelled")] += 1
        duration = finite_number(row.get("duration_s"))
        if (
            event in ("task_completed", "task_failed")
            and row.get("worker")
            and duration is not None
        ):
            item["d"].append(max(0.0, duration))
    result = []
    for item in stats.values():
        values = np.sort(np.asarray(item.pop("d"), dtype=float))
        item["n"] = int(values.size)
        if values.size:
            q = np.quantile(values, [0.25, 0.5, 0.75, 0.95])
            item.update(
                total=float(values.sum()),
                min=float(values[0]),
                q1=float(q[0]),
                median=float(q[1]),
                q3=float(q[2]),
                p95=float(q[3]),
                max=float(values[-1]),
                mean=float(values.mean()),
            )
            if values.size > MAX_DURATION_DOTS:
                values = np.quantile(values, np.linspace(0, 1, MAX_DURATION_DOTS))
            item["dots"] = [round(float(v), 6) for v in values]
            for name in ("total", "min", "q1", "median", "q3", "p95", "max", "mean"):
                item[name] = round(item[name], 6)
        else:
            item.update(total=0.0, dots=[])
        result.append(item)
    result.sort(key=lambda s: (-s["total"], -s["attempts"], s["task"]))
    return result


def _cache_summary(run) -> dict:
    lookups = _events(run.cache, "cache_lookup")
    if lookups.empty and run.cache is not None and not run.cache.empty and "event" not in run.cache:
        lookups = run.cache
    if lookups.empty:
        return {"lookups": 0, "hits": 0, "misses": 0, "saved_s": 0.0, "functions": []}
    result = lookups["result"].map(_text) if "result" in lookups else pd.Series("", lookups.index)
    function = (
        lookups["function"].map(lambda v: _text(v) or "(unknown)")
        if "function" in lookups
        else pd.Series("(unknown)", lookups.index)
    )
    saved = pd.to_numeric(lookups["saved_s"], errors="coerce") if "saved_s" in lookups else None
    lookup_s = (
        pd.to_numeric(lookups["lookup_s"], errors="coerce") if "lookup_s" in lookups else None
    )
    frame = pd.DataFrame(
        {
            "function": function,
            "hit": result == "hit",
            "miss": result == "miss",
            "saved": saved if saved is not None else np.nan,
            "lookup": lookup_s if lookup_s is not None else np.nan,
        }
    )
    functions = []
    for name, group in frame.groupby("function", sort=False):
        functions.append(
            {
                "function": name,
                "lookups": int(len(group)),
                "hits": int(group["hit"].sum()),
                "misses": int(group["miss"].sum()),
                "saved_s": float(group["saved"].fillna(0).sum()),
                "lookup_s": finite_number(group["lookup"].mean()),
            }
        )
    functions.sort(key=lambda f: (-f["lookups"], f["function"]))
    return {
        "lookups": int(len(frame)),
        "hits": int(frame["hit"].sum()),
        "misses": int(frame["miss"].sum()),
        "saved_s": float(frame["saved"].fillna(0).sum()),
        "functions": functions,
    }


def _failures(run, t0: pd.Timestamp | None) -> tuple[list[dict], int]:
    rows = _records(_events(run.failures, "task_failed"))
    if not rows and run.failures is not None and not run.failures.empty:
        rows = _records(run.failures)
    if not rows:
        rows = _records(_events(run.tasks, "task_failed"))
    rows.sort(key=lambda r: _stamp(r.get("timestamp")) or pd.Timestamp.max.tz_localize("UTC"))
    total = len(rows)
    out = []
    for row in rows[:MAX_FAILURE_ROWS]:
        stamp = _stamp(row.get("timestamp"))
        caused = row.get("caused_by") if isinstance(row.get("caused_by"), dict) else None
        traceback = _text(row.get("traceback")) or ""
        if len(traceback) > MAX_TRACEBACK_CHARS:
            traceback = "…" + traceback[-(MAX_TRACEBACK_CHARS - 1) :]
        out.append(
            {
                "at": None if stamp is None or t0 is None else (stamp - t0).total_seconds(),
                "task": _text(row.get("task")),
                "key": _text(row.get("key")),
                "error_type": _text(row.get("error_type")),
                "error_message": _text(row.get("error_message")),
                "worker": _text(row.get("worker")),
                "attempt": _int(row.get("attempt")),
                "caused_by": caused,
                "traceback": traceback,
            }
        )
    return out, total


def _figures(run, max_bars: int) -> dict:
    """Everything the page shows, as plain Python values."""
    frames = (run.tasks, run.resources, run.workers, run.failures)
    start, end = _origin(run, frames)
    t0 = start
    t_end = (end - start).total_seconds() if start is not None and end is not None else 0.0
    attempts = _attempts(run, t0, t_end) if t0 is not None else []
    seen_workers = []
    for item in attempts:
        if item["worker"] is not None and item["worker"] not in seen_workers:
            seen_workers.append(item["worker"])
    unknown = any(item["worker"] is None for item in attempts)
    workers, index = _workers(run, seen_workers)
    if unknown:
        index["\0unknown"] = len(workers)
        workers.append({"address": "", "name": "(no worker recorded)"})
    for item in attempts:
        item["w"] = index[item["worker"] if item["worker"] is not None else "\0unknown"]
    lanes = _assign_lanes(attempts, workers)
    for w, row in zip(workers, lanes):
        w["lanes"] = row
    total = len(attempts)
    drawn = attempts
    if total > max_bars:
        order = sorted(
            range(total),
            key=lambda i: (
                _KEEP_ORDER.get(attempts[i]["status"], 5),
                -(attempts[i]["end"] - attempts[i]["start"]),
                i,
            ),
        )
        keep = sorted(order[:max_bars])
        drawn = [attempts[i] for i in keep]
    for w in workers:
        for name in ("added_at", "ended_at"):
            stamp = _stamp(w.pop(name, None))
            if stamp is not None and t0 is not None:
                w[name[:-3]] = round((stamp - t0).total_seconds(), 6)
    stats = _task_stats(run, attempts)
    failures, failures_total = _failures(run, t0)
    return {
        "start": start,
        "end": end,
        "t_end": t_end,
        "attempts": attempts,
        "drawn": drawn,
        "workers": workers,
        "stats": stats,
        "resources": _resources(run, t0, index) if t0 is not None else [],
        "failures": failures,
        "failures_total": failures_total,
        "cache": _cache_summary(run),
    }


def _payload(fig: dict) -> dict:
    """The JSON the page's script draws from (columns, to keep the file small)."""
    stats = fig["stats"]
    names = [s["task"] for s in stats]
    name_index = {name: i for i, name in enumerate(names)}
    drawn = fig["drawn"]
    columns = {
        "key": [a["key"] for a in drawn],
        "attempt": [a["attempt"] for a in drawn],
        "task": [name_index[a["task"]] for a in drawn],
        "w": [a["w"] for a in drawn],
        "lane": [a["lane"] for a in drawn],
        "start": [_round(a["start"]) for a in drawn],
        "end": [_round(a["end"]) for a in drawn],
        "status": [a["status"] for a in drawn],
        "duration": [_round(a.get("duration")) for a in drawn],
        "queue": [_round(a.get("queue")) for a in drawn],
        "args": [a.get("args") for a in drawn],
        "error": [a.get("error") for a in drawn],
    }
    shown = stats[:MAX_TASK_NAMES]
    return {
        "start": fig["start"].isoformat() if fig["start"] is not None else None,
        "t_end": _round(fig["t_end"]),
        "tasks": names,
        "workers": fig["workers"],
        "bars": columns,
        "bars_total": len(fig["attempts"]),
        "durations": [
            {k: s.get(k) for k in ("task", "n", "min", "q1", "median", "q3", "max", "p95", "dots")}
            | {"color": name_index[s["task"]]}
            for s in shown
            if s["n"]
        ],
        "durations_hidden": max(0, len([s for s in stats if s["n"]]) - len(shown)),
        "resources": fig["resources"],
    }


def _json_for_script(value) -> str:
    """JSON text that is safe inside a <script> element: no <, > or & at all."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


# --- the page -----------------------------------------------------------------------------


def _header(run, fig: dict) -> str:
    meta = run.meta or {}
    status = run.status or sc.RUN_UNKNOWN
    status_class = status if status in _STATUS_CLASSES else sc.RUN_UNKNOWN
    counts = run.task_counts()

    duration = finite_number(meta.get("duration_s"))
    if duration is not None:
        duration_text = _fmt_seconds(duration)
    elif fig["start"] is not None and fig["end"] is not None:
        duration_text = f"{_fmt_seconds(fig['t_end'])} recorded (no end in run.json)"
    else:
        duration_text = "–"
    cache = fig["cache"]
    hit_rate = f"{100 * cache['hits'] / cache['lookups']:.0f}%" if cache["lookups"] else "–"
    n_workers = len([w for w in fig["workers"] if w.get("address")])
    cards = [
        ("Submitted", counts["submitted"], ""),
        ("Completed", counts["completed"], "ok"),
        ("Failed", counts["failed"], "bad"),
        ("Cancelled", counts["cancelled"], ""),
        ("Attempts", len(fig["attempts"]), ""),
        ("Workers", n_workers, ""),
        ("Cache hit rate", hit_rate, ""),
    ]
    facts = [
        ("Project", meta.get("project")),
        ("Target", meta.get("target")),
        ("Provider", meta.get("provider")),
        ("Start", _fmt_time(_stamp(meta.get("start_time")) or fig["start"])),
        ("End", _fmt_time(_stamp(meta.get("end_time")))),
        ("Duration", duration_text),
    ]
    notes = []
    if status == sc.RUN_RUNNING:
        notes.append(
            "run.json has no end: the run is still in progress, or its process was killed "
            "before it could finish. The page shows what was recorded up to now."
        )
    if status == sc.RUN_CRASHED:
        notes.append(
            "The run's process ended without finishing the run: the page shows what was "
            "recorded before it stopped."
        )
    if meta.get("telemetry_lost"):
        notes.append("The session's telemetry process ended early: figures are incomplete.")
    dropped = _int(meta.get("telemetry_lines_dropped"), 0)
    if dropped:
        notes.append(f"{dropped} telemetry lines could not be written.")
    skipped = getattr(run, "skipped_lines", None) or {}
    if skipped:
        parts = ", ".join(f"{n} in {f}" for f, n in sorted(skipped.items()))
        notes.append(f"Skipped unreadable lines ({parts}).")
    out = [
        '<header class="page-header">',
        '<div class="title-row"><h1>Run report</h1>',
        f'<span class="status status-{status_class}" id="run-status">{_e(status)}</span></div>',
        f'<p class="run-id" id="run-id">{_e(run.run_id)}</p>',
        '<dl class="facts">',
    ]
    for label, value in facts:
        out.append(
            f"<div><dt>{_e(label)}</dt><dd>{_e(value if value is not None else '–')}</dd></div>"
        )
    out.append("</dl>")
    out.append('<div class="cards">')
    for label, value, tone in cards:
        cls = f"card {tone}".strip() if value not in (0, "–") else "card"
        out.append(f'<div class="{cls}"><span class="n">{_e(value)}</span>{_e(label)}</div>')
    out.append("</div>")
    for note in notes:
        out.append(f'<p class="note">{_e(note)}</p>')
    out.append("</header>")
    return "\n".join(out)


def _task_table(fig: dict) -> str:
    stats = fig["stats"]
    if not stats:
        return ""
    out = [
        '<table class="data" id="task-table"><thead><tr><th>Task</th><th>Attempts</th>'
        "<th>Completed</th><th>Failed</th><th>Cancelled</th><th>Total</th><th>Mean</th>"
        "<th>Median</th><th>p95</th><th>Max</th></tr></thead><tbody>"
    ]
    for s in stats[:MAX_TASK_NAMES]:
        cells = [
            s["attempts"],
            s["completed"],
            s["failed"],
            s["cancelled"],
            _fmt_seconds(s["total"]) if s["n"] else "–",
            _fmt_seconds(s.get("mean")),
            _fmt_seconds(s.get("median")),
            _fmt_seconds(s.get("p95")),
            _fmt_seconds(s.get("max")),
        ]
        failed = ' class="bad"' if s["failed"] else ""
        out.append(
            f'<tr><td class="name">{_e(s["task"])}</td>'
            + "".join(f"<td{failed if i == 2 else ''}>{_e(c)}</td>" for i, c in enumerate(cells))
            + "</tr>"
        )
    out.append("</tbody></table>")
    hidden = len(stats) - MAX_TASK_NAMES
    if hidden > 0:
        out.append(
            f'<p class="note">{hidden} more task names with less total time are not shown.</p>'
        )
    return "\n".join(out)


def _worker_label(fig: dict, address: str | None) -> str:
    if not address:
        return "–"
    for w in fig["workers"]:
        if w.get("address") == address and w.get("name") is not None:
            return f"{w['name']} ({address})"
    return address


def _failures_section(fig: dict) -> str:
    rows, total = fig["failures"], fig["failures_total"]
    out = [f'<section id="failures-section"><h2>Failures <small>({total})</small></h2>']
    if not rows:
        out.append('<p class="empty">No task failed.</p></section>')
        return "\n".join(out)
    out.append(
        '<table class="data" id="failures-table"><thead><tr><th>Time</th><th>Task</th>'
        "<th>Key</th><th>Error</th><th>Message</th><th>Worker</th><th>Attempt</th>"
        "</tr></thead><tbody>"
    )
    for row in rows:
        message = _e(row["error_message"] or "")
        caused = row.get("caused_by")
        if caused:
            message += (
                f'<div class="cause">caused by {_e(caused.get("task"))} '
                f"<code>{_e(caused.get('key'))}</code></div>"
            )
        if row["traceback"]:
            message += (
                f"<details><summary>traceback</summary><pre>{_e(row['traceback'])}</pre></details>"
            )
        at = "–" if row["at"] is None else f"+{row['at']:.3f} s"
        worker = _worker_label(fig, row["worker"]) if row["worker"] else "– (never ran)"
        out.append(
            f'<tr class="failure"><td class="num">{_e(at)}</td><td>{_e(row["task"])}</td>'
            f'<td><code>{_e(row["key"])}</code></td><td class="bad">{_e(row["error_type"])}</td>'
            f"<td>{message}</td><td>{_e(worker)}</td><td>{_e(row['attempt'])}</td></tr>"
        )
    out.append("</tbody></table>")
    if total > len(rows):
        out.append(f'<p class="note">Showing the first {len(rows)} of {total} failures.</p>')
    out.append("</section>")
    return "\n".join(out)


def _cache_section(fig: dict) -> str:
    cache = fig["cache"]
    out = ['<section id="cache-section"><h2>Cache</h2>']
    if not cache["lookups"]:
        out.append('<p class="empty">No cache lookups in this run.</p></section>')
        return "\n".join(out)
    rate = 100 * cache["hits"] / cache["lookups"]
    out.append(
        '<div class="cards" id="cache-summary">'
        f'<div class="card"><span class="n">{cache["lookups"]}</span>Lookups</div>'
        f'<div class="card ok"><span class="n">{cache["hits"]}</span>Hits</div>'
        f'<div class="card"><span class="n">{cache["misses"]}</span>Misses</div>'
        f'<div class="card"><span class="n">{rate:.0f}%</span>Hit rate</div>'
        f'<div class="card"><span class="n">{_e(_fmt_seconds(cache["saved_s"]))}</span>'
        "Compute time saved</div></div>"
    )
    out.append(
        '<table class="data" id="cache-table"><thead><tr><th>Function</th><th>Lookups</th>'
        "<th>Hits</th><th>Misses</th><th>Hit rate</th><th>Time saved</th>"
        "<th>Mean lookup</th></tr></thead><tbody>"
    )
    for f in cache["functions"]:
        f_rate = 100 * f["hits"] / f["lookups"] if f["lookups"] else 0.0
        out.append(
            f'<tr><td class="name">{_e(f["function"])}</td><td>{f["lookups"]}</td>'
            f"<td>{f['hits']}</td><td>{f['misses']}</td>"
            f'<td><span class="meter"><span style="width:{f_rate:.1f}%"></span></span>'
            f"{f_rate:.0f}%</td><td>{_e(_fmt_seconds(f['saved_s']))}</td>"
            f"<td>{_e(_fmt_seconds(f['lookup_s']))}</td></tr>"
        )
    out.append("</tbody></table></section>")
    return "\n".join(out)


def html_report(run, *, max_bars: int = MAX_BARS) -> str:
    """The HTML report of one run, as one self-contained page (see the module docstring).

    `run` is what `load_run` returns (a run id, a unique prefix of one or a run directory
    path is loaded with `load_run` first). Files that are empty or missing columns, as in a
    run still in progress, a crashed run or a run without cache use, leave their section
    empty. `max_bars` caps the attempts drawn on the timeline.

    >>> from scalable_otel.analysis import load_run                   # doctest: +SKIP
    >>> page = html_report(load_run(last=True))                        # doctest: +SKIP
    >>> page.startswith("<!DOCTYPE html>")                             # doctest: +SKIP
    True
    """
    if not hasattr(run, "tasks"):
        from .load import load_run

        run = load_run(run)
    fig = _figures(run, max(0, int(max_bars)))
    payload = _payload(fig)
    script = _SCRIPT
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )
    total, drawn = payload["bars_total"], len(fig["drawn"])
    cap_note = ""
    if drawn < total:
        cap_note = (
            f'<p class="note" id="timeline-cap">This run has {total:,} attempts: the timeline '
            f"draws {drawn:,} of them (every attempt that did not complete, then the longest). "
            "Durations and tables use all of them.</p>"
        )
    origin = _fmt_time(fig["start"])
    from .. import __version__

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{_e(run.run_id)} · scalable-otel run report</title>",
        f"<style>{_STYLE}</style></head><body>",
        _header(run, fig),
        '<nav><a href="#timeline-section">Timeline</a><a href="#resources-section">'
        'CPU &amp; memory</a><a href="#durations-section">Durations</a>'
        '<a href="#failures-section">Failures</a><a href="#cache-section">Cache</a></nav>',
        '<noscript><p class="note">The charts need JavaScript; the tables below do not.'
        "</p></noscript>",
        '<section id="timeline-section"><div class="section-head"><h2>Timeline</h2>'
        '<button type="button" class="reset-zoom" hidden>Reset zoom</button></div>',
        f'<p class="hint">One bar per task attempt, on its worker\'s row, coloured by task. '
        f"Time is seconds since the run started ({_e(origin)}). Hover a bar for details; "
        "drag across a chart to zoom, double-click to zoom out.</p>",
        cap_note,
        '<div id="legend" class="legend"></div>',
        '<div id="timeline" class="chart"></div></section>',
        '<section id="resources-section"><div class="section-head">'
        '<h2>Worker CPU and memory</h2><button type="button" class="reset-zoom" hidden>'
        "Reset zoom</button></div>",
        '<p class="hint">From each worker\'s resource samples. CPU is in percent of one core.</p>',
        '<div id="resources" class="chart"></div></section>',
        '<section id="durations-section"><h2>Task durations</h2>',
        '<p class="hint">Execution time on the worker of each attempt that ran (completed or '
        "raised): whiskers at min and max, box at the quartiles, line at the median.</p>",
        '<div id="durations" class="chart"></div>',
        _task_table(fig),
        "</section>",
        _failures_section(fig),
        _cache_section(fig),
        f"<footer>scalable-otel {_e(__version__)} · {_e(run.path)}</footer>",
        f'<script type="application/json" id="run-data">{_json_for_script(payload)}</script>',
        f"<script>{script}</script>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def write_html_report(run, path: str | os.PathLike, *, max_bars: int = MAX_BARS) -> Path:
    """Write `html_report(run)` to `path` (a directory gets `<run id>.html`); returns the file.

    >>> from scalable_otel.analysis import load_run                   # doctest: +SKIP
    >>> write_html_report(load_run(last=True), "report.html")          # doctest: +SKIP
    PosixPath('report.html')
    """
    if not hasattr(run, "tasks"):
        from .load import load_run

        run = load_run(run)
    target = Path(path)
    if target.is_dir():
        target = target / f"{run.run_id}.html"
    make_private_dirs(target.parent)
    page = html_report(run, max_bars=max_bars)
    with replaced_atomically(target) as tmp:  # owner-only, like the run it shows
        tmp.write_text(page, encoding="utf-8")
    return target


_STYLE = """
:root{--fg:#1f2328;--muted:#656d76;--line:#d0d7de;--bg:#fff;--panel:#f6f8fa;--bad:#cf222e;
--ok:#1a7f37;--warn:#9a6700;--accent:#0969da}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1400px;padding:20px 28px 40px;color:var(--fg);background:var(--bg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
h1{font-size:22px;margin:0}h2{font-size:17px;margin:0 0 6px}h2 small{color:var(--muted);
font-weight:normal}
.title-row{display:flex;align-items:center;gap:12px}
.run-id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:var(--muted);
margin:4px 0 10px;word-break:break-all}
.status{padding:2px 10px;border-radius:12px;font-weight:600;font-size:13px;color:#fff;
background:#6e7781}
.status-completed{background:var(--ok)}.status-failed{background:var(--bad)}
.status-interrupted{background:#bc4c00}.status-crashed{background:#82071e}.status-running{background:var(--accent)}
.facts{display:flex;flex-wrap:wrap;gap:6px 28px;margin:0 0 12px}
.facts div{display:flex;gap:6px}.facts dt{color:var(--muted)}.facts dd{margin:0;font-weight:500}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.card{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:6px 14px;
min-width:104px;color:var(--muted);font-size:12px}
.card .n{display:block;font-size:20px;font-weight:600;color:var(--fg)}
.card.ok .n{color:var(--ok)}.card.bad .n{color:var(--bad)}
.note{background:#fff8c5;border:1px solid #d4a72c66;border-radius:6px;padding:6px 10px;
margin:8px 0}
nav{position:sticky;top:0;background:var(--bg);border-bottom:1px solid var(--line);
padding:8px 0;margin-bottom:8px;z-index:2}
nav a{margin-right:18px;color:var(--accent);text-decoration:none}
section{margin:22px 0}
.section-head{display:flex;align-items:center;gap:12px}
.hint{color:var(--muted);margin:0 0 8px}.empty{color:var(--muted)}
.chart{width:100%;overflow-x:auto;position:relative}
.chart svg{display:block;font-size:11px;user-select:none}
.chart text{fill:var(--fg)}.chart .muted{fill:var(--muted)}
.axis line,.axis path{stroke:#8c959f}.grid line{stroke:#eaeef2}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0 8px;font-size:12px}
.legend span.item{display:inline-flex;align-items:center;gap:5px}
.legend .swatch{display:inline-block;width:12px;height:12px;border-radius:2px}
.task-bar{shape-rendering:crispEdges}
.task-bar.failed{stroke:var(--bad);stroke-width:2}
.task-bar.lost{fill-opacity:.45;stroke:#57606a;stroke-dasharray:3 2}
.task-bar.cancelled{fill-opacity:.35;stroke:#57606a}
.task-bar.unfinished{fill-opacity:.35;stroke:var(--accent);stroke-dasharray:4 2}
.task-bar:hover{stroke:#000;stroke-width:1.5}
.fail-mark{fill:var(--bad)}
.resource-line{fill:none;stroke-width:1.6}
.zoom-rect{fill:#0969da22;stroke:#0969da}
.reset-zoom{font:inherit;font-size:12px;padding:2px 10px;border:1px solid var(--line);
border-radius:6px;background:var(--panel);cursor:pointer}
table.data{border-collapse:collapse;margin:10px 0;font-size:13px;width:100%}
table.data th,table.data td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;
vertical-align:top}
table.data th{background:var(--panel);font-weight:600}
table.data td.name{font-weight:500}td.bad{color:var(--bad)}td.num{white-space:nowrap}
table.data code{font-size:12px;word-break:break-all}
.cause{color:var(--muted);font-size:12px}
details pre{white-space:pre-wrap;font-size:12px;background:var(--panel);padding:6px;
max-height:300px;overflow:auto}
.meter{display:inline-block;width:60px;height:8px;background:#eaeef2;border-radius:4px;
margin-right:6px;vertical-align:middle;overflow:hidden}
.meter span{display:block;height:100%;background:var(--ok)}
footer{color:var(--muted);font-size:12px;margin-top:30px;word-break:break-all}
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var data = JSON.parse(document.getElementById("run-data").textContent);
  var PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f",
    "#ff9da7", "#bab0ac", "#86bcb6", "#8cd17d", "#f1ce63", "#a0cbe8", "#ffbe7d", "#d4a6c8",
    "#499894", "#79706e", "#d37295", "#b6992d", "#fabfd2"];
  var WORKER_PALETTE = ["#0969da", "#bc4c00", "#1a7f37", "#8250df", "#bf3989", "#0a7b83",
    "#9a6700", "#57606a", "#cf222e", "#4d2d00"];
  var full = {x0: 0, x1: Math.max(data.t_end || 0, 1e-3)};
  var view = {x0: full.x0, x1: full.x1};

  function color(i, palette) {
    palette = palette || PALETTE;
    if (i < palette.length) { return palette[i]; }
    return "hsl(" + ((i * 137.508) % 360).toFixed(1) + ",55%,55%)";
  }
  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, k)) { node.setAttribute(k, attrs[k]); }
    }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function text(parent, x, y, content, attrs) {
    var node = el("text", attrs || {}, parent);
    node.setAttribute("x", x);
    node.setAttribute("y", y);
    node.textContent = content;
    return node;
  }
  function short(s, n) { return s.length > n ? s.slice(0, n - 1) + "…" : s; }
  function tip(node, content) { el("title", {}, node).textContent = content; }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function message(box, content) {
    var p = document.createElement("p");
    p.className = "empty";
    p.textContent = content;
    box.appendChild(p);
  }
  function fmtDur(s) {
    if (s === null || s === undefined || !isFinite(s)) { return "–"; }
    if (s === 0) { return "0 s"; }
    if (s < 1e-3) { return (s * 1e6).toFixed(0) + " µs"; }
    if (s < 1) { return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms"; }
    if (s < 60) { return s.toFixed(s < 10 ? 3 : 2) + " s"; }
    var m = Math.floor(s / 60);
    if (m < 60) { return m + " min " + (s - 60 * m).toFixed(1) + " s"; }
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtClock(t, step) {
    var span = view.x1 - view.x0;
    if (view.x1 < 60 || step < 1) {
      var digits = step >= 1 ? 0 : Math.min(3, Math.ceil(-Math.log10(step) - 1e-9));
      return t.toFixed(digits) + " s";
    }
    var s = Math.round(t);
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (view.x1 < 3600 && span < 3600) { return m + ":" + pad(sec); }
    return h + ":" + pad(m) + ":" + pad(sec);
  }
  function fmtBytes(b) {
    if (!isFinite(b)) { return "–"; }
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 || b >= 100 ? b.toFixed(0) : b.toFixed(1)) + " " + units[i];
  }
  var STEPS = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5,
    10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  function timeTicks(x0, x1, count) {
    var span = Math.max(x1 - x0, 1e-9), step = STEPS[STEPS.length - 1];
    for (var i = 0; i < STEPS.length; i++) {
      if (span / STEPS[i] <= count) { step = STEPS[i]; break; }
    }
    var ticks = [];
    for (var t = Math.ceil(x0 / step - 1e-9) * step; t <= x1 + 1e-9; t += step) {
      ticks.push(Math.abs(t) < 1e-12 ? 0 : t);
    }
    return {ticks: ticks, step: step};
  }
  function niceStep(max, count) {
    var raw = max / Math.max(count, 1), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
  }
  function chartWidth(box) { return Math.max(560, Math.floor(box.clientWidth || 960)); }
  var clipSeq = 0;
  function clip(svg, x, y, w, h) {
    var id = "clip-" + (++clipSeq);
    var path = el("clipPath", {id: id}, el("defs", {}, svg));
    el("rect", {x: x, y: y, width: w, height: h}, path);
    return "url(#" + id + ")";
  }
  function timeAxis(svg, left, width, top, bottom, tickY, above) {
    var t = timeTicks(view.x0, view.x1, Math.max(2, Math.floor(width / 90)));
    var grid = el("g", {"class": "grid"}, svg), axis = el("g", {"class": "axis"}, svg);
    t.ticks.forEach(function (v) {
      var x = left + (v - view.x0) / (view.x1 - view.x0) * width;
      el("line", {x1: x, x2: x, y1: top, y2: bottom}, grid);
      text(axis, x, above ? tickY - 4 : tickY + 12, fmtClock(v, t.step),
        {"text-anchor": "middle", "class": "muted"});
    });
    el("line", {x1: left, x2: left + width, y1: tickY, y2: tickY}, axis);
  }
  function resetButtons() {
    var zoomed = view.x0 !== full.x0 || view.x1 !== full.x1;
    var buttons = document.querySelectorAll(".reset-zoom");
    for (var i = 0; i < buttons.length; i++) { buttons[i].hidden = !zoomed; }
  }
  // One drag at a time, across every time chart: {svg, left, width, start, rect}.
  var drag = null;
  function dragX(ev) {
    var r = drag.svg.getBoundingClientRect();
    return Math.max(drag.left, Math.min(drag.left + drag.width, ev.clientX - r.left));
  }
  window.addEventListener("mousemove", function (ev) {
    if (!drag) { return; }
    var x = dragX(ev);
    drag.rect.setAttribute("x", Math.min(drag.start, x));
    drag.rect.setAttribute("width", Math.abs(x - drag.start));
  });
  window.addEventListener("mouseup", function (ev) {
    if (!drag) { return; }
    var x = dragX(ev), a = Math.min(drag.start, x), b = Math.max(drag.start, x);
    var left = drag.left, width = drag.width;
    if (drag.rect.parentNode) { drag.rect.parentNode.removeChild(drag.rect); }
    drag = null;
    if (b - a < 5) { return; }
    var span = view.x1 - view.x0;
    var x0 = view.x0 + (a - left) / width * span, x1 = view.x0 + (b - left) / width * span;
    view = {x0: x0, x1: Math.max(x1, x0 + 1e-6)};
    drawTimeCharts();
  });
  function zoomable(svg, left, width, top, bottom) {
    svg.addEventListener("mousedown", function (ev) {
      if (ev.button !== 0) { return; }
      drag = {svg: svg, left: left, width: width};
      drag.start = dragX(ev);
      drag.rect = el("rect", {"class": "zoom-rect", x: drag.start, y: top, width: 0,
        height: bottom - top}, svg);
      ev.preventDefault();
    });
    svg.addEventListener("dblclick", function () {
      view = {x0: full.x0, x1: full.x1};
      drawTimeCharts();
    });
  }

  function drawLegend() {
    var box = document.getElementById("legend");
    clear(box);
    var used = {}, statuses = {}, bars = data.bars;
    for (var i = 0; i < bars.task.length; i++) {
      used[bars.task[i]] = true;
      statuses[bars.status[i]] = true;
    }
    var shown = 0;
    data.tasks.forEach(function (name, i) {
      if (!used[i]) { return; }
      if (shown++ >= 40) { return; }
      var item = document.createElement("span");
      item.className = "item";
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = color(i);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(name));
      box.appendChild(item);
    });
    if (shown > 40) {
      var more = document.createElement("span");
      more.textContent = "… and " + (shown - 40) + " more task names";
      box.appendChild(more);
    }
    [["failed", "failed", "2px solid #cf222e", "#fff"],
      ["lost", "lost (retried or worker gone)", "1px dashed #57606a", "#eee"],
      ["cancelled", "cancelled", "1px solid #57606a", "#eee"],
      ["unfinished", "no end recorded", "1px dashed #0969da", "#eef"]]
      .forEach(function (m) {
        if (!statuses[m[0]]) { return; }
        m = m.slice(1);
        var item = document.createElement("span");
        item.className = "item";
        var sw = document.createElement("span");
      sw.className = "swatch";
        sw.style.border = m[1];
        sw.style.background = m[2];
        item.appendChild(sw);
        item.appendChild(document.createTextNode(m[0]));
        box.appendChild(item);
      });
  }

  function workerLabel(w) {
    if (w.name !== undefined && w.name !== null) {
      return w.address ? "worker " + w.name : w.name;
    }
    return w.address || "?";
  }

  function drawTimeline() {
    var box = document.getElementById("timeline");
    clear(box);
    var bars = data.bars, n = bars.key.length, workers = data.workers;
    if (!n || !workers.length) {
      message(box, "No task attempt was recorded on a worker.");
      box.setAttribute("data-drawn-tasks", "0");
      return;
    }
    var width = chartWidth(box), left = 170, right = 18, top = 26, bottom = 26;
    var plotW = width - left - right;
    var lanes = 0;
    workers.forEach(function (w) { lanes += Math.max(1, w.lanes || 1); });
    var laneH = Math.max(2, Math.min(16, Math.floor(1600 / lanes)));
    var gap = lanes > 150 ? 2 : 8;
    var rowY = [], y = top;
    workers.forEach(function (w) {
      rowY.push(y);
      y += Math.max(1, w.lanes || 1) * laneH + gap;
    });
    var height = y + bottom;
    var svg = el("svg", {width: width, height: height, "class": "timeline-svg",
      role: "img", "aria-label": "Timeline of task attempts per worker"}, box);
    var span = view.x1 - view.x0;
    function sx(t) { return left + (t - view.x0) / span * plotW; }
    var clipRef = clip(svg, left, 0, plotW, height);
    var rows = el("g", {"class": "rows"}, svg);
    workers.forEach(function (w, i) {
      var h = Math.max(1, w.lanes || 1) * laneH;
      el("rect", {x: left, y: rowY[i] - gap / 2, width: plotW, height: h + gap,
        fill: i % 2 ? "#ffffff" : "#f6f8fa"}, rows);
      if (w.added !== undefined || w.ended !== undefined) {
        var a = sx(w.added !== undefined ? w.added : full.x0);
        var b = sx(w.ended !== undefined ? w.ended : full.x1);
        a = Math.max(left, a);
        b = Math.min(left + plotW, b);
        if (b > a) {
          el("rect", {x: a, y: rowY[i] - 1, width: b - a, height: h + 2, fill: "#ddf4ff",
            "fill-opacity": 0.5}, rows);
        }
      }
      var label = text(rows, left - 8, rowY[i] + Math.min(h, 24) / 2 + 4,
        short(workerLabel(w), 24), {"text-anchor": "end"});
      tip(label, (w.name !== undefined ? "worker " + w.name + "\n" : "") + (w.address || "") +
        (w.nthreads ? "\n" + w.nthreads + " thread(s)" : "") +
        (w.end ? "\n" + w.end + (w.reason ? ": " + w.reason : "") : ""));
      if (w.end === "crashed" && w.ended !== undefined) {
        var cx = sx(w.ended);
        if (cx >= left && cx <= left + plotW) {
          var mark = text(rows, cx, rowY[i] + Math.min(h, 24) / 2 + 4, "✕",
            {"text-anchor": "middle", fill: "#cf222e", "font-weight": "bold"});
          tip(mark, "worker crashed" + (w.reason ? ": " + w.reason : ""));
        }
      }
    });
    timeAxis(svg, left, plotW, top - 4, height - bottom + 4, height - bottom + 4, false);
    timeAxis(svg, left, plotW, top - 4, top - 4, top - 4, true);
    var g = el("g", {"class": "bars", "clip-path": clipRef}, svg);
    var marks = el("g", {"class": "marks", "clip-path": clipRef}, svg);
    var drawn = 0;
    for (var i = 0; i < n; i++) {
      var w = bars.w[i], status = bars.status[i];
      var x0 = sx(bars.start[i]), x1 = sx(bars.end[i]);
      var yy = rowY[w] + bars.lane[i] * laneH;
      var cls = "task-bar " + status;
      var rect = el("rect", {
        "class": cls, x: x0.toFixed(2), y: yy + (laneH > 4 ? 1 : 0),
        width: Math.max(1, x1 - x0).toFixed(2), height: Math.max(1, laneH - (laneH > 4 ? 2 : 0)),
        fill: color(bars.task[i]), "data-key": bars.key[i], "data-attempt": bars.attempt[i],
        "data-task": data.tasks[bars.task[i]], "data-status": status}, g);
      var wk = data.workers[w];
      var lines = [data.tasks[bars.task[i]], bars.key[i],
        "worker: " + workerLabel(wk) + (wk.address && wk.name !== undefined ?
          " (" + wk.address + ")" : ""),
        "attempt " + bars.attempt[i] + " · " + status,
        "start +" + bars.start[i].toFixed(3) + " s, end +" + bars.end[i].toFixed(3) + " s",
        "duration " + fmtDur(bars.duration[i] !== null ? bars.duration[i] :
          bars.end[i] - bars.start[i]) + (bars.queue[i] !== null ?
          " · queue wait " + fmtDur(bars.queue[i]) : "")];
      if (bars.args[i] !== null) { lines.push("args: " + bars.args[i]); }
      if (bars.error[i] !== null) { lines.push("error: " + bars.error[i]); }
      tip(rect, lines.join("\n"));
      if (status === "failed") {
        var mx = Math.max(x1, x0 + 1);
        el("path", {"class": "fail-mark", d: "M" + (mx - 4).toFixed(1) + "," + yy + "h8l-4,5z"},
          marks);
      }
      drawn++;
    }
    box.setAttribute("data-drawn-tasks", String(drawn));
    zoomable(svg, left, plotW, top - 4, height - bottom + 4);
  }

  function drawResources() {
    var box = document.getElementById("resources");
    clear(box);
    var series = data.resources;
    if (!series.length) {
      message(box, "No resource samples were recorded.");
      box.setAttribute("data-drawn-workers", "0");
      return;
    }
    var legend = document.createElement("div");
    legend.className = "legend";
    series.forEach(function (s) {
      var wk = data.workers[s.w];
      var item = document.createElement("span");
      item.className = "item";
      var sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = color(s.w, WORKER_PALETTE);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(workerLabel(wk) +
        (wk.address && wk.name !== undefined ? " · " + wk.address : "")));
      legend.appendChild(item);
    });
    box.appendChild(legend);
    var drawnWorkers = {};
    [["cpu", "CPU %", function (v) { return v.toFixed(0) + "%"; }],
      ["mem", "Memory (RSS)", fmtBytes]].forEach(function (m) {
      var metric = m[0];
      var width = chartWidth(box), left = 170, right = 18, top = 12, bottom = 24, h = 170;
      var plotW = width - left - right, height = top + h + bottom;
      var max = 0, points = 0;
      series.forEach(function (s) {
        points += s[metric][1].length;
        s[metric][1].forEach(function (v) { if (v > max) { max = v; } });
      });
      if (!points) {
        message(box, "No " + m[1] + " samples were recorded.");
        return;
      }
      if (metric === "cpu") { max = Math.max(max, 100); }
      if (max <= 0) { max = 1; }
      var step;
      if (metric === "mem") {
        var unit = 1;
        while (unit < Math.pow(1024, 4) && max >= unit * 1024) { unit *= 1024; }
        step = Math.max(1, niceStep(max / unit, 4) * unit);
      } else {
        step = niceStep(max, 4);
      }
      var top_ = Math.ceil(max / step - 1e-9) * step;
      var svg = el("svg", {width: width, height: height, "class": "resource-chart " + metric,
        role: "img", "aria-label": m[1] + " per worker"}, box);
      function sy(v) { return top + h - v / top_ * h; }
      var span = view.x1 - view.x0;
      function sx(t) { return left + (t - view.x0) / span * plotW; }
      var axis = el("g", {"class": "axis"}, svg), grid = el("g", {"class": "grid"}, svg);
      for (var v = 0; v <= top_ + 1e-9; v += step) {
        el("line", {x1: left, x2: left + plotW, y1: sy(v), y2: sy(v)}, grid);
        text(axis, left - 6, sy(v) + 4, m[2](v), {"text-anchor": "end", "class": "muted"});
      }
      text(axis, 8, top + h / 2, m[1], {"class": "muted"});
      timeAxis(svg, left, plotW, top, top + h, top + h, false);
      var g = el("g", {"clip-path": clip(svg, left, 0, plotW, height)}, svg);
      series.forEach(function (s) {
        var t = s[metric][0], vals = s[metric][1];
        if (!t.length) { return; }
        var pts = [];
        for (var i = 0; i < t.length; i++) {
          pts.push(sx(t[i]).toFixed(1) + "," + sy(vals[i]).toFixed(1));
        }
        var c = color(s.w, WORKER_PALETTE), wk = data.workers[s.w];
        var line = el("polyline", {"class": "resource-line " + metric, points: pts.join(" "),
          stroke: c, "data-worker": wk.address || "", "data-points": t.length}, g);
        var peak = Math.max.apply(null, vals);
        tip(line, workerLabel(wk) + " " + (wk.address || "") + "\n" + m[1] + ": " +
          t.length + " samples, peak " + m[2](peak));
        if (t.length <= 60) {
          for (var j = 0; j < t.length; j++) {
            var dot = el("circle", {cx: sx(t[j]).toFixed(1), cy: sy(vals[j]).toFixed(1), r: 2.5,
              fill: c}, g);
            tip(dot, workerLabel(wk) + " at +" + t[j].toFixed(1) + " s: " + m[2](vals[j]));
          }
        }
        drawnWorkers[s.w] = true;
      });
      zoomable(svg, left, plotW, top, top + h);
    });
    box.setAttribute("data-drawn-workers", String(Object.keys(drawnWorkers).length));
  }

  function drawDurations() {
    var box = document.getElementById("durations");
    clear(box);
    var rows = data.durations;
    if (!rows.length) {
      message(box, "No task ran to completion or raised, so there are no durations yet.");
      box.setAttribute("data-drawn-task-names", "0");
      return;
    }
    var width = chartWidth(box), left = 220, right = 40, top = 8, rowH = 30, bottom = 30;
    var plotW = width - left - right, height = top + rows.length * rowH + bottom;
    var lo = Infinity, hi = 0;
    rows.forEach(function (r) {
      if (r.max > hi) { hi = r.max; }
      r.dots.forEach(function (v) { if (v > 0 && v < lo) { lo = v; } });
    });
    if (!isFinite(lo)) { lo = hi || 1e-3; }
    if (hi <= 0) { hi = 1e-3; }
    var log = hi / lo > 100;
    var d0, d1, sx;
    if (log) {
      d0 = Math.floor(Math.log10(lo));
      d1 = Math.ceil(Math.log10(hi));
      if (d1 === d0) { d1 += 1; }
      sx = function (v) {
        return left + (Math.log10(Math.max(v, Math.pow(10, d0))) - d0) / (d1 - d0) * plotW;
      };
    } else {
      var st = niceStep(hi, 6);
      d0 = 0;
      d1 = Math.ceil(hi / st - 1e-9) * st;
      sx = function (v) { return left + v / d1 * plotW; };
    }
    var svg = el("svg", {width: width, height: height, "class": "durations-svg", role: "img",
      "aria-label": "Distribution of task durations per task name"}, box);
    var grid = el("g", {"class": "grid"}, svg), axis = el("g", {"class": "axis"}, svg);
    var ticks = [];
    if (log) {
      for (var e = d0; e <= d1; e++) { ticks.push(Math.pow(10, e)); }
    } else {
      var st2 = niceStep(hi, 6);
      for (var v = 0; v <= d1 + 1e-12; v += st2) { ticks.push(v); }
    }
    var axisY = top + rows.length * rowH;
    ticks.forEach(function (v) {
      el("line", {x1: sx(v), x2: sx(v), y1: top, y2: axisY}, grid);
      text(axis, sx(v), axisY + 14, fmtDur(v), {"text-anchor": "middle", "class": "muted"});
    });
    el("line", {x1: left, x2: left + plotW, y1: axisY, y2: axisY}, axis);
    text(axis, left + plotW, axisY + 27, log ? "duration (log scale)" : "duration",
      {"text-anchor": "end", "class": "muted"});
    rows.forEach(function (r, i) {
      var g = el("g", {"class": "duration-row", "data-task": r.task, "data-count": r.n}, svg);
      var cy = top + i * rowH + rowH / 2, c = color(r.color);
      var label = text(g, left - 8, cy + 4, short(r.task, 30) + " (" + r.n + ")",
        {"text-anchor": "end"});
      tip(label, r.task);
      el("line", {x1: sx(r.min), x2: sx(r.max), y1: cy, y2: cy, stroke: "#57606a"}, g);
      [r.min, r.max].forEach(function (v) {
        el("line", {x1: sx(v), x2: sx(v), y1: cy - 6, y2: cy + 6, stroke: "#57606a"}, g);
      });
      var boxEl = el("rect", {"class": "duration-box", x: sx(r.q1), y: cy - 9,
        width: Math.max(1, sx(r.q3) - sx(r.q1)), height: 18, fill: c, "fill-opacity": 0.35,
        stroke: c}, g);
      el("line", {x1: sx(r.median), x2: sx(r.median), y1: cy - 9, y2: cy + 9, stroke: "#1f2328",
        "stroke-width": 2}, g);
      r.dots.forEach(function (v, j) {
        var jitter = ((j * 7919) % 13 - 6) * 0.9;
        el("circle", {"class": "duration-dot", cx: sx(v).toFixed(1), cy: (cy + jitter).toFixed(1),
          r: 1.8, fill: c, "fill-opacity": 0.8}, g);
      });
      tip(boxEl, r.task + "\n" + r.n + " attempts\nmin " + fmtDur(r.min) + " · median " +
        fmtDur(r.median) + " · p95 " + fmtDur(r.p95) + " · max " + fmtDur(r.max));
    });
    if (data.durations_hidden) {
      message(box, data.durations_hidden + " more task names with less total time are not drawn.");
    }
    box.setAttribute("data-drawn-task-names", String(rows.length));
  }

  function drawTimeCharts() {
    drawTimeline();
    drawResources();
    resetButtons();
  }
  function drawAll() {
    drawLegend();
    drawTimeCharts();
    drawDurations();
  }
  var buttons = document.querySelectorAll(".reset-zoom");
  for (var b = 0; b < buttons.length; b++) {
    buttons[b].addEventListener("click", function () {
      view = {x0: full.x0, x1: full.x1};
      drawTimeCharts();
    });
  }
  var resizeTimer = null, lastWidth = document.body.clientWidth;
  window.addEventListener("resize", function () {
    if (document.body.clientWidth === lastWidth) { return; }
    lastWidth = document.body.clientWidth;
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { drawTimeCharts(); drawDurations(); }, 150);
  });
  drawAll();
})();
"""
