"""The run report: one run's figures as data, and as the tutorial's text.

The figures come from SQL over the run's files (`columns.RunFile`), not from
DataFrames of every field, so a report on a run of a million events takes about as
long as one DuckDB scan of its tasks.jsonl.
"""

from __future__ import annotations

import orjson

from .. import semconv as sc
from ..rundir import CACHE, TASKS, WORKERS, list_runs, parse_iso
from .cache_misses import FIELDS as MISS_FIELDS
from .cache_misses import REASON_SQL, format_miss_reasons, from_figures
from .columns import SKIPPED
from .energy import format_energy, run_energy
from .facts import final_count
from .groups import label as group_label
from .groups import run_groups
from .load import Run, read_meta, silent_since

RULE = "═" * 47

TASK_FIGURES = f"""
SELECT
    count(*) FILTER (WHERE event = '{sc.TASK_SUBMITTED}'),
    count(*) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
    count(*) FILTER (WHERE event = '{sc.TASK_FAILED}'),
    avg(duration_s) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
    max(duration_s) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
    -- one row's fields together (arg_max of a NULL field would take another row's)
    arg_max([task, key, args::VARCHAR], duration_s) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
    sum(duration_s) FILTER (WHERE event IN ('{sc.TASK_COMPLETED}', '{sc.TASK_FAILED}')),
    {{last_event}},
    {SKIPPED},
    count(*) FILTER (WHERE len(group_path) > 0)
FROM {{t}}
"""

# A lookup is a cache_lookup line; a hit is one whose result is `hit`.
_CACHE_COUNTS = f"""count(*) FILTER (WHERE event = '{sc.CACHE_LOOKUP}'),
       count(*) FILTER (WHERE event = '{sc.CACHE_LOOKUP}' AND result = 'hit'), {SKIPPED}"""
CACHE_FIGURES = f"SELECT {_CACHE_COUNTS} FROM {{t}}"
# ... and why the others missed, in the same scan (`cache_misses`)
CACHE_AND_MISS_FIGURES = f"SELECT {_CACHE_COUNTS}, {REASON_SQL} FROM {{t}}"


def _text(value) -> str | None:
    """A field that must be text, else None (a line of the wrong type reads as missing)."""
    return value if isinstance(value, str) else None


def _worker_id(line: dict) -> str | None:
    return _text(line.get("span_id")) or _text(line.get("worker"))


def worker_figures(workers: list[dict], run_end: float | None) -> dict:
    """Peak workers connected at once, their capacity (the sum over workers of uptime ×
    threads, in seconds: the denominator of the tutorial's efficiency), and how many
    crashed."""
    deltas = {sc.WORKER_ADDED: 1, sc.WORKER_REMOVED: -1, sc.WORKER_CRASHED: -1}
    timeline = sorted(
        (parse_iso(w.get("timestamp")) or 0.0, deltas.get(_text(w.get("event")), 0))
        for w in workers
    )
    level = peak = 0
    for _, delta in timeline:
        level += delta
        peak = max(peak, level)
    ends = {
        _worker_id(w): parse_iso(w.get("timestamp"))
        for w in workers
        if w.get("event") in (sc.WORKER_REMOVED, sc.WORKER_CRASHED)
    }
    capacity = 0.0
    for w in workers:
        if w.get("event") != sc.WORKER_ADDED:
            continue
        start = parse_iso(w.get("timestamp"))
        end = ends.get(_worker_id(w)) or run_end
        if start is None or end is None:
            continue
        threads = w.get("nthreads") if isinstance(w.get("nthreads"), int) else 1
        capacity += max(0.0, end - start) * threads
    crashed = sum(1 for w in workers if w.get("event") == sc.WORKER_CRASHED)
    return {"peak": peak, "capacity_s": capacity, "crashed": crashed}


def _had_prior_cache(run: Run) -> bool:
    """Whether an earlier run in the same runs directory stored cache entries (had misses)."""
    for path in list_runs(run.path.parent):
        if path.name == run.path.name:
            break
        other = Run(path, read_meta(path))
        misses = final_count(other.meta, other.status, "cache_misses")
        if misses is not None:
            if misses:
                return True
            continue
        if any(r.get("result") == "miss" for r in other.lines(CACHE)):
            return True
    return False


def _slowest(task: str | None, key: str | None, args: str | None, duration) -> dict | None:
    if duration is None:
        return None
    try:
        args = orjson.loads(args) if args else {}
    except orjson.JSONDecodeError:
        args = {}
    return {
        "task": task,
        "key": key,
        "duration_s": duration,
        "args": args if isinstance(args, dict) else {},
    }


def run_cost(run: Run, workers: list[dict], run_end: float | None) -> dict:
    """Estimated cost of the run at its target's rates (see `cost.estimate_run_cost`)."""
    from .beta import FORMAT
    from .cost import CostError, estimate_run_cost

    if run.meta.get("format") == FORMAT:  # no worker records to bill
        provider = run.meta.get("provider") or "local"
        return {"usd": None, "provider": provider, "error": "no worker records in this run"}
    try:
        return estimate_run_cost(run.meta, workers, run.manifest, last_seen=run_end)
    except CostError as exc:  # a bad rate in the manifest costs the figure, not the report
        return {"usd": None, "provider": run.meta.get("provider") or "local", "error": str(exc)}


_UNREAD = object()
LAST_TASK_EVENT = "SELECT max(timestamp) FROM {t}"


def run_times(run: Run, last_event=_UNREAD) -> tuple[float | None, float | None, float | None]:
    """The run's start, end and duration in seconds, as every answer shows them: run.json's
    once the run has ended; for a live or crashed run (no `end_time`), up to its last task
    event. `last_event` is the timestamp of that event when the caller read it already."""
    meta = run.meta
    if meta.get("end_time"):
        last_event = None
    elif last_event is _UNREAD:
        (last_event,) = run.file(TASKS, ["timestamp"]).query(LAST_TASK_EVENT)[0]
    end = parse_iso(meta.get("end_time")) or parse_iso(last_event)
    start = parse_iso(meta.get("start_time"))
    duration = meta.get("duration_s")
    if duration is None and end is not None and start is not None:
        duration = end - start  # a live or crashed run: up to its last event
    return start, end, duration


def report(run: Run, energy_options: dict | None = None) -> dict:
    """The figures of the run report as a dict (the CLI formats it; notebooks use it as is).

    `energy_options`: the energy constants the command line gives (`energy.run_energy`).

    >>> summary = report(load_run(last=True))                       # doctest: +SKIP
    >>> summary["tasks"]["avg_duration_s"], summary["workers"]["utilization"]  # doctest: +SKIP
    """
    meta = run.meta
    skipped: dict[str, int] = {}
    # The last event's time is needed only where run.json has no end (and costs a column).
    need_end = not meta.get("end_time")
    fields = ["event", "task", "key", "args", "duration_s", "group_path"]
    fields += ["timestamp"] if need_end else []
    tasks = run.file(TASKS, fields)
    sql = TASK_FIGURES.replace("{last_event}", "max(timestamp)" if need_end else "NULL")
    figures = tasks.query(sql)[0]
    events = dict(zip((sc.TASK_SUBMITTED, sc.TASK_COMPLETED, sc.TASK_FAILED), figures[:3]))
    avg, longest = figures[3:5]
    slowest = _slowest(*(figures[5] or (None, None, None)), longest)
    busy, last_event, bad, grouped = figures[6:]
    if bad + tasks.skipped_before:
        skipped[TASKS] = bad + tasks.skipped_before
    cache = run.file(CACHE, ["event", "result", *MISS_FIELDS])
    lookups, hits, bad, *reasons = cache.query(CACHE_AND_MISS_FIGURES)[0]
    if bad + cache.skipped_before:
        skipped[CACHE] = bad + cache.skipped_before
    why = from_figures(lookups - hits, reasons)
    workers = run.lines(WORKERS)
    if run.skipped_lines.get(WORKERS):
        skipped[WORKERS] = run.skipped_lines[WORKERS]

    status = run.status
    counts = run.task_counts(events)
    _, run_end, duration = run_times(run, last_event)

    figures = worker_figures(workers, run_end)
    busy = float(busy or 0.0)
    provider = meta.get("provider") or "local"
    return {
        "run_id": run.run_id,
        "target": meta.get("target"),
        "provider": provider,
        "start_time": meta.get("start_time"),
        "duration_s": duration,
        "status": status,
        # a run of another host that stopped its heartbeat: its last sign of life
        "silent_since": silent_since(meta) if status == sc.RUN_CRASHED else None,
        "tasks": {
            "submitted": counts["submitted"],
            "completed": counts["completed"],
            "failed": counts["failed"],
            "avg_duration_s": avg,
            "max_duration": slowest,
            "busy_s": busy,
        },
        "workers": {
            "peak": figures["peak"],
            "capacity_s": figures["capacity_s"],
            "crashed": figures["crashed"],
            "utilization": busy / figures["capacity_s"] if figures["capacity_s"] > 0 else None,
        },
        "cache": {
            "lookups": lookups,
            "hits": hits,
            "misses": lookups - hits,
            "hit_rate": hits / lookups if lookups else None,
            "first_run": hits == 0 and not _had_prior_cache(run),
            "miss_reasons": why["reasons"],
            "miss_arguments": why["arguments"],
        },
        "cost": run_cost(run, workers, run_end),
        "energy": run_energy(run, workers, run_end, energy_options),
        "skipped_lines": skipped,
        "notes": _notes(run),
        # by `distributed.span` block (`groups.run_groups`); [] for a run without blocks
        "groups": run_groups(run) if grouped else [],
    }


def _notes(run: Run) -> list[str]:
    from .beta import FORMAT, LIMITS

    return [LIMITS] if run.meta.get("format") == FORMAT else []


def seconds(value) -> str:
    """A duration as the report prints it: 45.2s, 0.027s, 350µs, or n/a."""
    if value is None:
        return "n/a"
    if abs(value) >= 1:
        return f"{value:.1f}s"
    return f"{value:.3f}s" if abs(value) >= 0.001 or value == 0 else f"{value * 1e6:.0f}µs"


def format_cost(cost: dict) -> str:
    if cost.get("error"):
        return f"unknown ({cost['error']})"
    if cost.get("usd") is None:
        return f"unknown ({cost['provider']} provider: no rate set)"
    return f"${cost['usd']:.2f} ({cost['provider']} provider)"


def _reasons(cache: dict) -> str:
    """` (first 8, arguments 3: years)` after the misses, when they say more than the
    hits line (a first run's misses are all `first`) and more than `unknown`."""
    reasons = dict(cache.get("miss_reasons") or {})
    if set(reasons) <= {sc.CACHE_MISS_UNKNOWN} or (
        set(reasons) == {sc.CACHE_MISS_FIRST} and cache.get("first_run")
    ):
        return ""
    return f" ({format_miss_reasons(reasons, cache.get('miss_arguments') or {})})"


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
    if status == sc.RUN_CRASHED and summary.get("silent_since"):
        status += (
            f" (no sign of life since {summary['silent_since']}: figures are what it "
            "recorded before)"
        )
    elif status == sc.RUN_CRASHED:
        status += " (the run's process died: figures are what it recorded before)"
    elif status == sc.RUN_RUNNING:
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
        *([f"  Crashed:          {workers['crashed']}"] if workers.get("crashed") else []),
        "",
        "Cache:",
        f"  Lookups:  {cache['lookups']}",
        f"  Hits:     {hits}",
        f"  Misses:   {cache['misses']}" + _reasons(cache),
        "",
        f"Estimated Cost: {format_cost(summary['cost'])}",
        f"Energy:         {format_energy(summary['energy'])}",
    ]
    if summary.get("groups"):
        lines += [""] + format_groups(summary["groups"])
    skipped = summary.get("skipped_lines") or {}
    notes = list(summary.get("notes") or [])
    if skipped:
        parts = ", ".join(f"{n} in {f}" for f, n in sorted(skipped.items()))
        notes.append(f"skipped unreadable lines ({parts})")
    if notes:
        lines += [""] + [f"Note: {note}" for note in notes]
    return "\n".join(lines)


def format_groups(groups: list[dict]) -> list[str]:
    """The report's "Groups:" section: a row per group, nested ones indented."""
    names = [
        "  " * max(g["depth"], 1) + (g["path"][-1] if g["path"] else group_label([]))
        for g in groups
    ]
    width = max(len(n) for n in names + ["Groups:"]) + 2
    header = ("Tasks", "Failed", "Busy", "Share", "Median", "Wall")
    lines = ["Groups:".ljust(width) + "".join(h.rjust(9) for h in header)]
    for name, g in zip(names, groups):
        share = "n/a" if g["share"] is None else f"{100 * g['share']:.0f}%"
        cells = (
            str(g["submitted"]),
            str(g["failed"]),
            seconds(g["busy_s"]),
            share,
            seconds(g["median_duration_s"]),
            seconds(g["wall_s"]),
        )
        lines.append(name.ljust(width) + "".join(c.rjust(9) for c in cells))
    return lines
