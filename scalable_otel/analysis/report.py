"""The run report: one run's figures as data, and as the tutorial's text."""

from __future__ import annotations

import pandas as pd

from .. import semconv as sc
from ..rundir import list_runs, read_lines
from .load import Run

RULE = "═" * 47
LOCAL_RATE_PER_CPU_HOUR = 0.0


def _events(frame: pd.DataFrame, event: str) -> pd.DataFrame:
    if frame.empty or "event" not in frame:
        return frame.iloc[0:0]
    return frame[frame["event"] == event]


def _peak_workers(workers: pd.DataFrame) -> int:
    """Most workers connected at once, from the added/removed/crashed sweep."""
    if workers.empty or "event" not in workers:
        return 0
    deltas = (
        workers["event"]
        .map({sc.WORKER_ADDED: 1, sc.WORKER_REMOVED: -1, sc.WORKER_CRASHED: -1})
        .fillna(0)
    )
    order = workers.assign(_d=deltas).sort_values(["timestamp", "_d"], ascending=[True, True])
    return int(max(0, order["_d"].cumsum().max()))


def _worker_capacity_s(workers: pd.DataFrame, run_end: pd.Timestamp | None) -> float:
    """Sum over workers of uptime x threads: the task-seconds the workers could have done."""
    if workers.empty or "event" not in workers:
        return 0.0
    total = 0.0
    added = _events(workers, sc.WORKER_ADDED)
    ends = workers[workers["event"].isin([sc.WORKER_REMOVED, sc.WORKER_CRASHED])]
    end_by_span = dict(zip(ends.get("span_id", []), ends["timestamp"]))
    for _, row in added.iterrows():
        end = end_by_span.get(row.get("span_id"), run_end)
        if end is None or pd.isna(end):
            continue
        uptime = max(0.0, (end - row["timestamp"]).total_seconds())
        total += uptime * float(row.get("nthreads") or 1)
    return total


def _had_prior_cache(run: Run) -> bool:
    """Whether any earlier run in the same runs directory stored cache entries."""
    for other in list_runs(run.path.parent):
        if other.name == run.path.name:
            break
        records, _ = read_lines(other / "cache.jsonl")
        if any(r.get("result") == "miss" for r in records):
            return True
    return False


def report(run: Run) -> dict:
    """The figures of the run report as a dict (the CLI formats it; notebooks use it as is)."""
    meta = run.meta
    completed = _events(run.tasks, sc.TASK_COMPLETED)
    failed = _events(run.tasks, sc.TASK_FAILED)
    submitted = _events(run.tasks, sc.TASK_SUBMITTED)
    durations = completed["duration_s"].dropna() if "duration_s" in completed else pd.Series()
    slowest = None
    if len(durations):
        row = completed.loc[durations.idxmax()]
        args = row.get("args") if isinstance(row.get("args"), dict) else {}
        slowest = {
            "task": row.get("task"),
            "key": row.get("key"),
            "duration_s": float(row["duration_s"]),
            "args": args,
        }
    run_end = pd.to_datetime(meta.get("end_time"), utc=True) if meta.get("end_time") else None
    if run_end is None and not run.tasks.empty and "timestamp" in run.tasks:
        run_end = run.tasks["timestamp"].max()
    capacity = _worker_capacity_s(run.workers, run_end)
    busy = float(durations.sum()) if len(durations) else 0.0
    lookups = len(run.cache)
    hits = int((run.cache["result"] == "hit").sum()) if lookups and "result" in run.cache else 0
    provider = meta.get("provider") or "local"
    return {
        "run_id": run.run_id,
        "target": meta.get("target"),
        "provider": provider,
        "duration_s": meta.get("duration_s"),
        "status": run.status,
        "tasks": {
            "submitted": int(meta.get("tasks_submitted") or len(submitted)),
            "completed": int(meta.get("tasks_completed") or len(completed)),
            "failed": int(meta.get("tasks_failed") or len(failed)),
            "avg_duration_s": float(durations.mean()) if len(durations) else None,
            "max_duration": slowest,
        },
        "workers": {
            "peak": _peak_workers(run.workers),
            "utilization": (busy / capacity) if capacity > 0 else None,
        },
        "cache": {
            "lookups": lookups,
            "hits": hits,
            "misses": lookups - hits,
            "first_run": hits == 0 and not _had_prior_cache(run),
        },
        "cost": {"usd": 0.0 if provider == "local" else None, "provider": provider},
        "skipped_lines": dict(run.skipped_lines),
    }


def _seconds(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.1f}s" if value >= 1 else f"{value:.3f}s"


def format_report(summary: dict) -> str:
    """The report as the tutorial prints it."""
    tasks, workers, cache = summary["tasks"], summary["workers"], summary["cache"]
    slowest = tasks["max_duration"]
    max_line = "n/a"
    if slowest:
        detail = [slowest["task"] or "?"]
        detail += [f"{k}={v}" for k, v in (slowest.get("args") or {}).items()]
        max_line = f"{_seconds(slowest['duration_s'])} ({', '.join(detail)})"
    utilization = workers["utilization"]
    hit_pct = (100.0 * cache["hits"] / cache["lookups"]) if cache["lookups"] else 0.0
    hits = f"{cache['hits']} ({hit_pct:.0f}%)"
    if cache["hits"] == 0 and cache["first_run"] and cache["lookups"]:
        hits += " — first run, no prior cache"
    cost = summary["cost"]
    cost_line = (
        f"${cost['usd']:.2f} ({cost['provider']} provider)"
        if cost["usd"] is not None
        else f"unknown ({cost['provider']} provider: no rate set)"
    )
    lines = [
        RULE,
        f"Run Report: {summary['run_id']}",
        RULE,
        f"Target:    {summary['target']} (provider: {summary['provider']})",
        f"Duration:  {_seconds(summary['duration_s'])}",
        f"Status:    {summary['status']}",
        "",
        "Tasks:",
        f"  Submitted:     {tasks['submitted']}",
        f"  Completed:     {tasks['completed']}",
        f"  Failed:        {tasks['failed']}",
        f"  Avg duration:  {_seconds(tasks['avg_duration_s'])}",
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
        f"Estimated Cost: {cost_line}",
    ]
    skipped = summary.get("skipped_lines") or {}
    if skipped:
        parts = ", ".join(f"{n} in {f}" for f, n in sorted(skipped.items()))
        lines += ["", f"Note: skipped unreadable lines ({parts})"]
    return "\n".join(lines)
