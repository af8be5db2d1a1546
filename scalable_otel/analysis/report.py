"""The run report: one run's figures as data, and as the tutorial's text.

The figures come from typed columns (`columns.read_columns`), not from DataFrames of
every field, so a report on a run of a million events takes about a second.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .. import semconv as sc
from ..rundir import CACHE, TASKS, WORKERS, list_runs, parse_iso, read_lines
from .columns import find_line, read_columns
from .load import Run, read_meta

RULE = "═" * 47


def _events(table: pa.Table, *events: str) -> pa.Table:
    mask = pc.is_in(table["event"], value_set=pa.array(events, pa.string()))
    return table.filter(pc.fill_null(mask, False))


def task_durations(run_path, skipped: dict | None = None) -> pa.Table:
    """task, duration_s of each completed task of a run (the basis of durations everywhere)."""
    tasks, bad = read_columns(run_path, TASKS, ["event", "task", "duration_s"])
    if bad and skipped is not None:
        skipped[TASKS] = bad
    return tasks


def worker_figures(workers: list[dict], run_end: float | None) -> dict:
    """Peak workers connected at once, and their capacity: the sum over workers of
    uptime × threads, in seconds (the denominator of the tutorial's efficiency)."""
    deltas = {sc.WORKER_ADDED: 1, sc.WORKER_REMOVED: -1, sc.WORKER_CRASHED: -1}
    timeline = sorted(
        (parse_iso(w.get("timestamp")) or 0.0, deltas.get(w.get("event"), 0)) for w in workers
    )
    level = peak = 0
    for _, delta in timeline:
        level += delta
        peak = max(peak, level)
    ends = {
        w.get("span_id") or w.get("worker"): parse_iso(w.get("timestamp"))
        for w in workers
        if w.get("event") in (sc.WORKER_REMOVED, sc.WORKER_CRASHED)
    }
    capacity = 0.0
    for w in workers:
        if w.get("event") != sc.WORKER_ADDED:
            continue
        start = parse_iso(w.get("timestamp"))
        end = ends.get(w.get("span_id") or w.get("worker")) or run_end
        if start is None or end is None:
            continue
        threads = w.get("nthreads") if isinstance(w.get("nthreads"), int) else 1
        capacity += max(0.0, end - start) * threads
    return {"peak": peak, "capacity_s": capacity}


def _had_prior_cache(run: Run) -> bool:
    """Whether an earlier run in the same runs directory stored cache entries (had misses)."""
    for other in list_runs(run.path.parent):
        if other.name == run.path.name:
            break
        misses = read_meta(other).get("cache_misses")
        if isinstance(misses, int):
            if misses:
                return True
            continue
        records, _ = read_lines(other / CACHE)
        if any(r.get("result") == "miss" for r in records):
            return True
    return False


def _slowest(run: Run, completed: pa.Table) -> dict | None:
    if completed.num_rows == 0:
        return None
    durations = completed["duration_s"]
    at = pc.index(durations, pc.max(durations)).as_py()
    if at < 0:
        return None
    row = completed.slice(at, 1).to_pylist()[0]
    line = find_line(
        run.path,
        TASKS,
        {"event": sc.TASK_COMPLETED, "task": row["task"], "duration_s": row["duration_s"]},
    )
    args = line.get("args") if line and isinstance(line.get("args"), dict) else {}
    return {
        "task": row["task"],
        "key": line.get("key") if line else None,
        "duration_s": row["duration_s"],
        "args": args,
    }


def run_cost(run: Run, workers: list[dict]) -> dict:
    """Estimated cost of the run at its provider's rates."""
    provider = run.meta.get("provider") or "local"
    return {"usd": 0.0 if provider == "local" else None, "provider": provider}


def _count(table: pa.Table, value: str, column: str = "event") -> int:
    return int(pc.sum(pc.equal(table[column], value)).as_py() or 0)


def report(run: Run) -> dict:
    """The figures of the run report as a dict (the CLI formats it; notebooks use it as is).

    >>> summary = report(load_run(last=True))                       # doctest: +SKIP
    >>> summary["tasks"]["avg_duration_s"], summary["workers"]["utilization"]  # doctest: +SKIP
    """
    meta = run.meta
    skipped: dict[str, int] = {}
    tasks = task_durations(run.path, skipped)
    finished = _events(tasks, sc.TASK_COMPLETED, sc.TASK_FAILED).drop_null()
    completed = _events(tasks, sc.TASK_COMPLETED).drop_null()
    workers, bad = read_lines(run.path / WORKERS)
    if bad:
        skipped[WORKERS] = bad
    cache, bad = read_columns(run.path, CACHE, ["result"])
    if bad:
        skipped[CACHE] = bad

    status = run.status
    final = status not in ("running", "crashed", "unknown")
    run_end = parse_iso(meta.get("end_time"))
    if run_end is None and tasks.num_rows:
        stamps, _ = read_columns(run.path, TASKS, ["timestamp"])
        last = pc.max(stamps["timestamp"]).as_py()
        run_end = last.timestamp() if last else None
    duration = meta.get("duration_s")
    started = parse_iso(meta.get("start_time"))
    if duration is None and run_end is not None and started is not None:
        duration = run_end - started  # a live or crashed run: up to its last event

    def counted(field: str, event: str) -> int:
        value = meta.get(field)
        return int(value) if final and isinstance(value, int) else _count(tasks, event)

    lookups = cache.num_rows
    hits = _count(cache, "hit", "result")
    figures = worker_figures(workers, run_end)
    busy = float(pc.sum(finished["duration_s"]).as_py() or 0.0)
    provider = meta.get("provider") or "local"
    return {
        "run_id": run.run_id,
        "target": meta.get("target"),
        "provider": provider,
        "start_time": meta.get("start_time"),
        "duration_s": duration,
        "status": status,
        "tasks": {
            "submitted": counted("tasks_submitted", sc.TASK_SUBMITTED),
            "completed": counted("tasks_completed", sc.TASK_COMPLETED),
            "failed": counted("tasks_failed", sc.TASK_FAILED),
            "avg_duration_s": pc.mean(completed["duration_s"]).as_py(),
            "max_duration": _slowest(run, completed),
            "busy_s": busy,
        },
        "workers": {
            "peak": figures["peak"],
            "capacity_s": figures["capacity_s"],
            "utilization": busy / figures["capacity_s"] if figures["capacity_s"] > 0 else None,
        },
        "cache": {
            "lookups": lookups,
            "hits": hits,
            "misses": lookups - hits,
            "hit_rate": hits / lookups if lookups else None,
            "first_run": hits == 0 and not _had_prior_cache(run),
        },
        "cost": run_cost(run, workers),
        "skipped_lines": skipped,
    }


def seconds(value) -> str:
    """A duration as the report prints it: 45.2s, 0.027s, 350µs, or n/a."""
    if value is None:
        return "n/a"
    if abs(value) >= 1:
        return f"{value:.1f}s"
    return f"{value:.3f}s" if abs(value) >= 0.001 or value == 0 else f"{value * 1e6:.0f}µs"


def format_cost(cost: dict) -> str:
    if cost.get("usd") is None:
        return f"unknown ({cost['provider']} provider: no rate set)"
    return f"${cost['usd']:.2f} ({cost['provider']} provider)"


def format_report(summary: dict) -> str:
    """The report as the tutorial prints it."""
    tasks, workers, cache = summary["tasks"], summary["workers"], summary["cache"]
    slowest = tasks["max_duration"]
    max_line = "n/a"
    if slowest:
        detail = [slowest["task"] or "?"]
        detail += [f"{k}={v}" for k, v in (slowest.get("args") or {}).items()]
        max_line = f"{seconds(slowest['duration_s'])} ({', '.join(detail)})"
    utilization = workers["utilization"]
    hit_pct = 100.0 * (cache["hit_rate"] or 0.0)
    hits = f"{cache['hits']} ({hit_pct:.0f}%)"
    if cache["hits"] == 0 and cache["first_run"] and cache["lookups"]:
        hits += " — first run, no prior cache"
    status = summary["status"]
    if status == "crashed":
        status += " (the run's process died: figures are what it recorded before)"
    elif status == "running":
        status += " (figures so far)"
    lines = [
        RULE,
        f"Run Report: {summary['run_id']}",
        RULE,
        f"Target:    {summary['target']} (provider: {summary['provider']})",
        f"Duration:  {seconds(summary['duration_s'])}",
        f"Status:    {status}",
        "",
        "Tasks:",
        f"  Submitted:     {tasks['submitted']}",
        f"  Completed:     {tasks['completed']}",
        f"  Failed:        {tasks['failed']}",
        f"  Avg duration:  {seconds(tasks['avg_duration_s'])}",
        f"  Max duration:  {max_line}",
        "",
        "Workers:",
        f"  Peak:             {workers['peak']}",
        "  Avg utilization:  " + ("n/a" if utilization is None else f"{100 * utilization:.0f}%"),
        "",
        "Cache:",
        f"  Lookups:  {cache['lookups']}",
        f"  Hits:     {hits}",
        f"  Misses:   {cache['misses']}",
        "",
        f"Estimated Cost: {format_cost(summary['cost'])}",
    ]
    skipped = summary.get("skipped_lines") or {}
    if skipped:
        parts = ", ".join(f"{n} in {f}" for f, n in sorted(skipped.items()))
        lines += ["", f"Note: skipped unreadable lines ({parts})"]
    return "\n".join(lines)
