"""What the HTML report shows, as plain data (no HTML here).

`figures(run)` reads the run through DuckDB, aggregating before anything becomes a
Python object (`attempts`, `durations`, `resources`, `failures`), and returns every
number, bar and row the page shows; `payload(fig)` is the part the page's script draws.
The header's counts are the run report's (`analysis.report.report`), so the page and
`scalable report` cannot disagree about a run.

>>> fig = figures(load_run(last=True))                             # doctest: +SKIP
>>> fig["counts"]["completed"], len(fig["drawn"]), fig["total_attempts"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import re

import orjson

from ... import semconv as sc
from ...rundir import CACHE, WORKERS
from ..columns import query_files
from ..fine_metrics import fine_metrics
from ..groups import group_task_names
from ..load import Run, load_run
from ..report import report
from .attempts import FAILED, Attempts, assign_lanes
from .common import cut, epoch_us, finite_sql, integer, number, seconds, text, utc
from .critical import critical_figure, path_bars
from .durations import task_stats
from .failures import failures
from .resources import series, time_bounds

MAX_BARS = 20_000
MAX_TASK_NAMES = 60
MAX_ARGS_CHARS = 200
NO_WORKER = "\0no worker"  # the row of attempts with no worker recorded

_CACHE = f"""
SELECT coalesce(nullif(function, ''), '(unknown)'), count(*),
    count(*) FILTER (WHERE result = 'hit'), count(*) FILTER (WHERE result = 'miss'),
    coalesce(sum({finite_sql("saved_s")}), 0), avg({finite_sql("lookup_s")})
FROM {{t}} WHERE event = '{sc.CACHE_LOOKUP}'
GROUP BY 1 ORDER BY 2 DESC, 1
"""


def header_counts(run) -> dict:
    """The header's task and cache counts: those of the run report (`report(run)`).

    `run` is what `load_run` returns, or what it takes (a run id or directory).

    >>> header_counts(load_run(last=True))                          # doctest: +SKIP
    {'submitted': 3, 'completed': 3, 'failed': 0, 'cache_hits': 0}
    """
    if not hasattr(run, "meta"):
        run = load_run(run)
    return _counts(report(run))


def _counts(summary: dict) -> dict:
    tasks = summary["tasks"]
    return {
        "submitted": tasks["submitted"],
        "completed": tasks["completed"],
        "failed": tasks["failed"],
        "cache_hits": summary["cache"]["hits"],
    }


def figures(run, max_bars: int = MAX_BARS, *, summary: dict | None = None) -> dict:
    """Everything the page shows, as plain Python values (see the package docstring).

    `run` is what `load_run` returns; `summary` its run report (`report(run)`) when the
    caller has made it already, so that the run's files are not read twice for it.

    Times are seconds since `start_us` (epoch microseconds: the run's start, else its
    first line), up to `t_end` (its end, else its last line). The keys: `counts` (the
    header's, from the run report), `total_attempts`, `drawn` (the timeline's bars: key,
    attempt, task, w (worker row), lane, start, end, status, duration, queue, args,
    error), `busy` (per worker row, busy threads per time bin, when not every attempt is
    drawn), `workers` (the timeline's rows), `stats` (per task name), `resources` (CPU
    and memory series per worker row), `failures` (the earliest rows) and
    `failures_total`, `cache`, `energy` (the run report's: `energy.run_energy`),
    `skipped_lines`, `critical_path` (`html.critical`), `fine_metrics`
    (`analysis.fine_metrics`).
    """
    if not hasattr(run, "meta"):
        run = load_run(run)
    summary = report(run) if summary is None else summary
    with _one_thread():
        fig = _figures(run, max_bars, summary)
    fig["critical_path"] = critical_figure(run, summary, fig["total_attempts"])
    fig["groups"] = summary.get("groups") or []
    fig["legend_groups"] = group_task_names(run) if fig["groups"] else []
    fig["fine_metrics"] = summary.get("fine_metrics") or fine_metrics(run)
    return fig


@contextlib.contextmanager
def _one_thread():
    """DuckDB on one thread while the figures are made: what it needs to group a million
    lines grows with each thread, and its speed hardly does on a shared machine."""
    (threads,) = query_files("SELECT current_setting('threads')", {})[0]
    query_files("SET threads = 1", {})
    try:
        yield
    finally:
        query_files(f"SET threads = {int(threads)}", {})


def _figures(run: Run, max_bars: int, summary: dict) -> dict:
    worker_lines = run.lines(WORKERS)
    with Attempts(run) as attempts:
        first, last = time_bounds(run)
        stamps = [epoch_us(line.get("timestamp")) for line in worker_lines]
        firsts, lasts = [attempts.first_us, first, *stamps], [attempts.last_us, last, *stamps]
        start_us, end_us = _origin(run.meta, firsts, lasts)
        drawn, busy, total = [], None, 0
        if start_us is not None:
            t_end = seconds(end_us, start_us)
            gone = _worker_gone(worker_lines, start_us)
            drawn, busy = attempts.timeline(start_us, t_end, gone, max(0, int(max_bars)))
            total = attempts.total
        per_task = attempts.per_task()
        seen = attempts.workers()
    samples = series(run, start_us) if start_us is not None else {}
    workers, index = _worker_rows(worker_lines, [*seen, *samples], start_us)
    for bar in drawn:
        bar["w"] = index[bar["worker"] if bar["worker"] is not None else NO_WORKER]
        bar["args"] = _args_text(bar["args"])
    lanes = assign_lanes(drawn, [w.get("nthreads") for w in workers])
    for row, count in zip(workers, lanes):
        row["lanes"] = count
    wanted = {(b["key"], b["attempt"]) for b in drawn if b["status"] == FAILED}
    failure_rows, failures_total, errors, bad = failures(run, start_us, wanted)
    for bar in drawn:
        bar["error"] = errors.get((bar["key"], bar["attempt"]))
    skipped = dict(summary["skipped_lines"])
    if bad:
        skipped["failures.jsonl"] = bad
    return {
        "start_us": start_us,
        "end_us": end_us,
        "t_end": seconds(end_us, start_us) if start_us is not None else 0.0,
        "counts": _counts(summary),
        "total_attempts": total,
        "drawn": drawn,
        "busy": _busy(busy, index),
        "workers": workers,
        "stats": task_stats(run, per_task),
        "resources": [
            {"w": index[worker], **points}
            for worker, points in sorted(samples.items(), key=lambda item: index[item[0]])
        ],
        "failures": failure_rows,
        "failures_total": failures_total,
        "cache": _cache(run, summary["cache"]),
        "energy": summary.get("energy"),
        "skipped_lines": skipped,
    }


def _origin(meta: dict, firsts: list, lasts: list) -> tuple[int | None, int | None]:
    """The time axis in epoch microseconds: from run.json's start (or the first line, if
    earlier) to its end (or the last line, if later)."""
    start = min(
        (t for t in [epoch_us(meta.get("start_time")), *firsts] if t is not None), default=None
    )
    if start is None:
        return None, None
    end = max((t for t in [epoch_us(meta.get("end_time")), *lasts] if t is not None), default=None)
    return start, start if end is None or end < start else end


def _worker_gone(lines: list[dict], t0_us: int) -> dict[str, float]:
    """When each worker was first removed or crashed, in seconds since `t0_us`."""
    gone: dict[str, float] = {}
    for line in lines:
        if line.get("event") not in (sc.WORKER_REMOVED, sc.WORKER_CRASHED):
            continue
        worker, at = text(line.get("worker")), epoch_us(line.get("timestamp"))
        if worker is not None and at is not None:
            at = seconds(at, t0_us)
            gone[worker] = min(at, gone.get(worker, at))
    return gone


def _natural(value: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", value)]


def _worker_rows(
    lines: list[dict], addresses: list[str | None], t0_us: int | None
) -> tuple[list[dict], dict[str, int]]:
    """One row per worker address, ordered by worker name, with its lifetime; and each
    address's row number. Attempts with no worker get a last row of their own."""
    info: dict[str, dict] = {}
    for line in lines:
        address = text(line.get("worker"))
        if not address:
            continue
        entry = info.setdefault(address, {"address": address})
        if text(line.get("worker_name")) is not None:
            entry["name"] = text(line.get("worker_name"))
        if integer(line.get("nthreads")) is not None:
            entry["nthreads"] = integer(line.get("nthreads"))
        event, at = line.get("event"), epoch_us(line.get("timestamp"))
        if event == sc.WORKER_ADDED:
            entry["added_us"] = at
        elif event in (sc.WORKER_REMOVED, sc.WORKER_CRASHED):
            entry["ended_us"] = at
            entry["end"] = "crashed" if event == sc.WORKER_CRASHED else "removed"
            entry["reason"] = text(line.get("reason"))
    for address in addresses:
        if address:
            info.setdefault(address, {"address": address})
    rows = sorted(
        info.values(),
        key=lambda w: (w.get("name") is None, _natural(w.get("name") or ""), w["address"]),
    )
    for row in rows:
        for field, name in (("added_us", "added"), ("ended_us", "ended")):
            at = row.pop(field, None)
            if at is not None and t0_us is not None:
                row[name] = seconds(at, t0_us)
    index = {w["address"]: i for i, w in enumerate(rows)}
    if None in addresses or "" in addresses:
        index[NO_WORKER] = len(rows)
        rows.append({"address": "", "name": "(no worker recorded)"})
    return rows, index


def _args_text(value: str | None) -> str | None:
    """A task's arguments (JSON text) as the page shows them: short, readable JSON."""
    if value is None:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        try:
            parsed = json.loads(value)  # integers past 64 bits, which orjson refuses
        except ValueError:
            return cut(value, MAX_ARGS_CHARS)
    if parsed is None:
        return None
    if isinstance(parsed, str):
        return cut(parsed, MAX_ARGS_CHARS)
    try:
        shown = json.dumps(parsed, ensure_ascii=False, default=str, separators=(", ", ": "))
    except (TypeError, ValueError):
        shown = str(parsed)
    return cut(shown, MAX_ARGS_CHARS)


def _busy(busy: dict | None, index: dict[str, int]) -> dict | None:
    """Per worker row, its busy threads in each time bin (when not every attempt is drawn)."""
    if busy is None:
        return None
    rows: dict[int, list[float]] = {}
    for worker, b, level in busy["levels"]:
        rows.setdefault(index[worker or NO_WORKER], [0.0] * busy["bins"])[b] = round(level, 3)
    return {"width": busy["width"], "rows": [{"w": w, "v": v} for w, v in sorted(rows.items())]}


def _cache(run: Run, totals: dict) -> dict:
    """Lookups, hits, misses (and why they missed) and time saved in total (the run
    report's counts) and per function."""
    source = run.file(CACHE, ["event", "function", "result", "saved_s", "lookup_s"])
    try:
        rows = source.query(_CACHE)
    finally:
        source.close()
    functions = [
        {
            "function": name,
            "lookups": lookups,
            "hits": hits,
            "misses": misses,
            "saved_s": saved,
            "lookup_s": number(lookup),
        }
        for name, lookups, hits, misses, saved, lookup in rows
    ]
    return {
        "lookups": totals["lookups"],
        "hits": totals["hits"],
        "misses": totals["misses"],
        "saved_s": sum(f["saved_s"] for f in functions),
        "functions": functions,
        "miss_reasons": totals.get("miss_reasons") or {},
        "miss_arguments": totals.get("miss_arguments") or {},
    }


def payload(fig: dict, max_task_names: int = MAX_TASK_NAMES) -> dict:
    """The JSON the page's script draws from (columns, to keep the file small)."""
    stats = fig["stats"]
    names = [s["task"] for s in stats]
    name_index = {name: i for i, name in enumerate(names)}
    drawn = fig["drawn"]
    columns = {
        "key": [b["key"] for b in drawn],
        "attempt": [b["attempt"] for b in drawn],
        "task": [name_index[b["task"]] for b in drawn],
        "w": [b["w"] for b in drawn],
        "lane": [b["lane"] for b in drawn],
        "start": [b["start"] for b in drawn],
        "end": [b["end"] for b in drawn],
        "status": [b["status"] for b in drawn],
        "duration": [_round(b["duration"]) for b in drawn],
        "queue": [_round(b["queue"]) for b in drawn],
        "args": [b["args"] for b in drawn],
        "error": [b["error"] for b in drawn],
    }
    shown = [s for s in stats[:max_task_names] if s["n"]]
    keys = ("task", "n", "min", "q1", "median", "q3", "max", "p95", "dots")
    start = utc(fig["start_us"])
    return {
        "start": start.isoformat() if start is not None else None,
        "t_end": fig["t_end"],
        "tasks": names,
        "workers": fig["workers"],
        "bars": columns,
        "bars_total": fig["total_attempts"],
        "busy": fig["busy"],
        "durations": [
            {k: s.get(k) for k in keys} | {"color": name_index[s["task"]]} for s in shown
        ],
        "durations_hidden": max(0, len([s for s in stats if s["n"]]) - len(shown)),
        "resources": fig["resources"],
        "critical": path_bars(fig.get("critical_path")),
        "groups": [
            {"label": g["label"], "tasks": [name_index[t] for t in g["tasks"] if t in name_index]}
            for g in fig.get("legend_groups", ())
        ],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
