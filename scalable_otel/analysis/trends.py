"""History over the runs of a runs directory: one row of figures per run, and a regression
check per task name.

Per run, in start order: status, duration, tasks completed and failed, the median and
p90 duration of completed tasks (of one task name when `task` is given), worker
utilization and cache hit rate.

- Durations are `duration_s` of `task_completed` lines, leaving out tasks served from
  the cache (`facts.served_from_cache`: a `cache_lookup` hit and no miss on the task's
  span): their duration is a
  lookup, not the task's work, and would make any later uncached run look like a
  regression. The cache column shows them instead.
- Utilization and the task counts are those of `scalable report`: busy time (durations
  of completed and failed tasks) over worker capacity (the sum over workers of uptime ×
  threads, uptime from `worker_added` to `worker_removed`/`worker_crashed`, or the run's
  end); counts from run.json when they are final, else counted in tasks.jsonl (the rule
  of `facts`, the same for every reader).
- Cache hit rate: hits / lookups in cache.jsonl (as `scalable report` counts them), None
  without lookups.
- Energy and CO2e: `scalable report`'s (`energy.run_energy`: measured by RAPL where every
  host was, else estimated by the Green Algorithms method).
- A run whose run.json is missing or corrupt is `unknown`; a `running` run whose process
  is gone is `crashed`. Both are shown with what their files hold.

Regression check, per task name, over the runs that have durations of it (n runs):

- Fewer than 3 runs: too little history, nothing is flagged.
- The recent window is the last k = min(3, n - 2) runs; the baseline is every run
  before it (at least 2).
- Baseline figures: the median of the per-run medians (m), their spread as the scaled
  median absolute deviation (MAD × 1.4826), and the 75th percentile of all baseline
  durations pooled (p75).
- A recent run is slow when its median is above m + max(3 × MAD, 10% of m) AND more
  than half of its durations are above p75 (a shift of the whole run, not a few
  stragglers; without a change a quarter would be).
- A regression is reported when the latest run is slow. It started in the first run of
  the streak of slow runs that ends with the latest one; its figure is the median of
  those runs' medians, against m. A slowdown that has since recovered is not reported.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import semconv as sc
from ..errors import RunNotFound, ScalableError, shown
from ..rundir import CACHE, TASKS, WORKERS, list_runs, parse_iso, parse_run_name
from ..rundir import runs_dir as default_runs_dir
from .columns import SKIPPED, RunFile, query_files
from .energy import format_carbon, format_kwh, run_energy
from .facts import finite_number, served_from_cache
from .load import Run, read_meta
from .markdown import cell, table
from .report import CACHE_FIGURES, seconds, worker_figures

__all__ = [
    "RunTrend",
    "TaskTrend",
    "Trends",
    "UnknownTask",
    "format_trends",
    "format_trends_markdown",
    "regression_line",
    "trends",
]

MIN_RUNS = 3
RECENT_RUNS = 3
MAD_FACTOR = 3.0
MIN_CHANGE = 0.10
MAD_SCALE = 1.4826  # MAD of a normal sample × this estimates its standard deviation

OK = "ok"
REGRESSION = "regression"
TOO_LITTLE_HISTORY = "too little history"


class UnknownTask(ScalableError):
    """The task name asked for is in none of the runs."""


@dataclass
class RunTrend:
    """The figures of one run."""

    run_id: str
    start_time: str | None
    status: str
    duration_s: float | None
    tasks_completed: int
    tasks_failed: int
    durations: int  # completed task durations behind median_s and p90_s
    median_s: float | None
    p90_s: float | None
    utilization: float | None
    cache_lookups: int
    cache_hit_rate: float | None
    skipped_lines: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    energy_kwh: float | None = None  # `energy.run_energy`: measured or estimated
    carbon_g: float | None = None
    energy_method: str | None = None


@dataclass
class TaskTrend:
    """The regression check of one task name (see the module docstring)."""

    task: str
    verdict: str  # "regression", "ok" or "too little history"
    runs: int  # runs with durations of the task
    baseline_runs: int = 0
    baseline_median_s: float | None = None
    baseline_low_s: float | None = None  # lowest and highest per-run median of the baseline
    baseline_high_s: float | None = None
    threshold_s: float | None = None  # a recent run's median above this is slow
    recent_median_s: float | None = None  # the regressed runs, else the latest run
    change_pct: float | None = None
    since_run: str | None = None  # the first run of the regression
    flagged_runs: list[str] = field(default_factory=list)


@dataclass
class Trends:
    """Runs in start order and the regression check of each task name."""

    runs_root: str
    task: str | None
    runs: list[RunTrend]
    tasks: list[TaskTrend]
    group: list[str] | None = None  # durations of this distributed.span block's tasks only

    @property
    def regressions(self) -> list[TaskTrend]:
        return [t for t in self.tasks if t.verdict == REGRESSION]

    def to_dict(self) -> dict:
        """Plain data (JSON-ready), regressions listed apart as well."""
        data = asdict(self)
        data["regressions"] = [asdict(t) for t in self.regressions]
        return data


# --- statistics ---------------------------------------------------------------------------


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default) of sorted values."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _median(values: list[float]) -> float:
    return _quantile(sorted(values), 0.5)


# --- one run ------------------------------------------------------------------------------


@dataclass
class _RunData:
    trend: RunTrend
    durations: dict[str, array]  # sorted, per task name; tasks served from the cache left out
    names: set[str]  # every task name in tasks.jsonl


def _start_from_name(path: Path) -> str | None:
    parsed = parse_run_name(path.name)
    if not parsed:
        return None
    s = parsed[0]
    return f"{s[0:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}Z"


# Durations of completed tasks per task name, leaving out tasks served from the cache
# (`facts.served_from_cache`), each list sorted.
_DURATIONS = f"""
WITH cached AS ({served_from_cache("{c}")})
SELECT task, list(duration_s ORDER BY duration_s)
FROM {{t}}
WHERE event = '{sc.TASK_COMPLETED}' AND task IS NOT NULL AND duration_s IS NOT NULL
  AND isfinite(duration_s) AND (span_id IS NULL OR span_id NOT IN (SELECT span_id FROM cached))
  AND (?::VARCHAR[] IS NULL OR group_path[1:len(?::VARCHAR[])] = ?::VARCHAR[])
GROUP BY task
"""

_TASK_FIGURES = f"""
SELECT count(*) FILTER (WHERE event = '{sc.TASK_COMPLETED}'),
       count(*) FILTER (WHERE event = '{sc.TASK_FAILED}'),
       coalesce(sum(duration_s) FILTER (WHERE event IN
           ('{sc.TASK_COMPLETED}', '{sc.TASK_FAILED}') AND isfinite(duration_s)), 0),
       max(timestamp),
       list(DISTINCT task) FILTER (WHERE task IS NOT NULL),
       {SKIPPED}
FROM {{t}}
"""


def _read_run(
    path: Path,
    task: str | None,
    energy_options: dict | None = None,
    group: list[str] | None = None,
) -> _RunData:
    run = Run(path, read_meta(path))
    meta, status = run.meta, run.status
    skipped: dict[str, int] = {}

    def count_skipped(name: str, source: RunFile, bad: int) -> None:
        if bad + source.skipped_before:
            skipped[name] = bad + source.skipped_before

    tasks = run.file(TASKS, ["timestamp", "event", "task", "span_id", "duration_s", "group_path"])
    cache = run.file(CACHE, ["event", "span_id", "result", "saved_s"])
    completed, failed, busy, last_stamp, names, bad = tasks.query(_TASK_FIGURES)[0]
    count_skipped(TASKS, tasks, bad)
    lookups, hits, bad = cache.query(CACHE_FIGURES)[0]
    count_skipped(CACHE, cache, bad)
    durations = {
        name: array("d", values)
        for name, values in query_files(_DURATIONS, {"t": tasks, "c": cache}, [group] * 3)
    }
    names = set(names or ())
    counts = run.task_counts({sc.TASK_COMPLETED: completed, sc.TASK_FAILED: failed})
    last_event = parse_iso(last_stamp)
    workers = run.lines(WORKERS)
    if run.skipped_lines.get(WORKERS):
        skipped[WORKERS] = run.skipped_lines[WORKERS]

    start = meta.get("start_time") if isinstance(meta.get("start_time"), str) else None
    start = start or _start_from_name(path)
    run_end = parse_iso(meta.get("end_time"))
    if run_end is None:
        stamps = [parse_iso(w.get("timestamp")) for w in workers]
        run_end = max([s for s in stamps if s is not None] + [last_event or 0.0]) or None
    duration = finite_number(meta.get("duration_s"))
    started = parse_iso(start)
    if duration is None and run_end is not None and started is not None:
        duration = max(0.0, run_end - started)  # a live or crashed run: up to its last event
    capacity = worker_figures(workers, run_end)["capacity_s"]
    energy = run_energy(run, workers, run_end, energy_options)

    if task is None:
        chosen = [d for values in durations.values() for d in values]
    else:
        chosen = list(durations.get(task, []))
    chosen.sort()
    trend = RunTrend(
        run_id=run.run_id,
        start_time=start,
        status=status,
        duration_s=duration,
        tasks_completed=counts["completed"],
        tasks_failed=counts["failed"],
        durations=len(chosen),
        median_s=_quantile(chosen, 0.5) if chosen else None,
        p90_s=_quantile(chosen, 0.9) if chosen else None,
        utilization=busy / capacity if capacity > 0 else None,
        cache_lookups=lookups,
        cache_hit_rate=hits / lookups if lookups else None,
        skipped_lines=skipped,
        cache_hits=hits,
        energy_kwh=energy["kwh"],
        carbon_g=energy["carbon_g"],
        energy_method=energy["method"],
    )
    return _RunData(trend, durations, names)


# --- regressions --------------------------------------------------------------------------


def _check(name: str, history: list[tuple[str, list[float]]]) -> TaskTrend:
    """The regression check of one task from (run id, durations) in start order."""
    n = len(history)
    if n < MIN_RUNS:
        return TaskTrend(name, TOO_LITTLE_HISTORY, n)
    k = min(RECENT_RUNS, n - 2)
    baseline, recent = history[: n - k], history[n - k :]
    medians = [_median(d) for _, d in baseline]
    center = _median(medians)
    mad = MAD_SCALE * _median([abs(m - center) for m in medians])
    threshold = center + max(MAD_FACTOR * mad, MIN_CHANGE * center)
    p75 = _quantile(sorted(d for _, values in baseline for d in values), 0.75)

    def slow(values: list[float]) -> bool:
        above = sum(1 for v in values if v > p75)
        return _median(values) > threshold and above > len(values) / 2

    streak: list[tuple[str, list[float]]] = []
    for run_id, values in reversed(recent):
        if not slow(values):
            break
        streak.insert(0, (run_id, values))
    result = TaskTrend(
        name,
        REGRESSION if streak else OK,
        n,
        baseline_runs=len(baseline),
        baseline_median_s=center,
        baseline_low_s=min(medians),
        baseline_high_s=max(medians),
        threshold_s=threshold,
        since_run=streak[0][0] if streak else None,
        flagged_runs=[run_id for run_id, _ in streak],
    )
    compared = streak or recent[-1:]
    result.recent_median_s = _median([_median(values) for _, values in compared])
    if center > 0:
        result.change_pct = 100.0 * (result.recent_median_s - center) / center
    return result


def trends(
    runs_root: str | os.PathLike | None = None,
    task: str | None = None,
    last: int | None = None,
    energy_options: dict | None = None,
    group: list[str] | None = None,
) -> Trends:
    """The figures of each run under `runs_root` (default: the runs directory) in start
    order, the last `last` of them when given, and a regression check per task name (only
    `task` when given). `energy_options`: the command line's energy constants. `group` (a
    path of `distributed.span` names) keeps the durations, and so the medians and the
    checks, to the tasks of that group (its nested blocks' included).

    >>> history = trends(task="run_simulation", last=10)            # doctest: +SKIP
    >>> [(r.run_id, r.median_s) for r in history.runs]              # doctest: +SKIP
    [('run-20261128T175430Z-quickstart-47de67d0', 0.0412), ...]
    >>> history.regressions[0].since_run                            # doctest: +SKIP
    'run-20261128T180210Z-quickstart-9c1d2e3f'
    """
    root = default_runs_dir(runs_root)
    if last is not None and last < 1:
        raise ScalableError(f"last must be at least 1, not {last}")
    paths = list_runs(root)
    if not paths:
        raise RunNotFound(f"no runs in {root}: run a workflow first (or pass --runs-dir)")
    if last is not None:
        paths = paths[-last:]
    group = list(group) if group else None
    data = [_read_run(path, task, energy_options, group) for path in paths]
    known = set().union(*(d.names for d in data))
    if task is not None and task not in known:
        listed = ", ".join(sorted(map(shown, known))) or "none"
        raise UnknownTask(
            f"no task {task!r} in the {len(paths)} run(s) under {root}; known tasks: {listed}"
        )
    names = [task] if task is not None else sorted({n for d in data for n in d.durations})
    checks = []
    for name in names:
        history = [(d.trend.run_id, d.durations[name]) for d in data if d.durations.get(name)]
        checks.append(_check(name, history))
    order = {REGRESSION: 0, OK: 1, TOO_LITTLE_HISTORY: 2}
    checks.sort(key=lambda t: (order[t.verdict], -(t.change_pct or 0.0), t.task))
    return Trends(str(root), task, [d.trend for d in data], checks, group)


# --- text ---------------------------------------------------------------------------------

_COLUMNS = (  # header, right-aligned
    ("Run", False),
    ("Start (UTC)", False),
    ("Status", False),
    ("Duration", True),
    ("Done", True),
    ("Failed", True),
    ("Median", True),
    ("P90", True),
    ("Util", True),
    ("Cache hit", True),
    ("Energy", True),
    ("CO2e", True),
)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _start(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def _span(low: float, high: float) -> str:
    """`3.9–4.5s`: the unit once, as `seconds` prints both ends."""
    left, right = seconds(low), seconds(high)
    if left.endswith("s") and not left.endswith("µs") and right.endswith("s"):
        left = left[:-1]
    return f"{left}–{right}"


def regression_line(t: TaskTrend) -> str:
    """One regression in a line: `Regression: sim median 4.0s → 6.0s (+50%) since ...`."""
    return (
        f"Regression: {t.task} median {seconds(t.baseline_median_s)} → "
        f"{seconds(t.recent_median_s)} ({t.change_pct:+.0f}%) since {t.since_run}; "
        f"baseline spread {_span(t.baseline_low_s, t.baseline_high_s)} "
        f"over {t.baseline_runs} runs"
    )


def _cells(r: RunTrend) -> list[str]:
    return [
        r.run_id,
        _start(r.start_time),
        r.status,
        "-" if r.duration_s is None else seconds(r.duration_s),
        str(r.tasks_completed),
        str(r.tasks_failed),
        "-" if r.median_s is None else seconds(r.median_s),
        "-" if r.p90_s is None else seconds(r.p90_s),
        _pct(r.utilization),
        _pct(r.cache_hit_rate),
        "-" if r.energy_kwh is None else format_kwh(r.energy_kwh),
        "-" if r.carbon_g is None else format_carbon(r.carbon_g, ""),
    ]


def _verdict_lines(history: Trends) -> list[str]:
    """The regressions, else why there are none, and the tasks with too little history."""
    lines = [regression_line(t) for t in history.regressions]
    fine = [t.task for t in history.tasks if t.verdict == OK]
    short = [t for t in history.tasks if t.verdict == TOO_LITTLE_HISTORY]
    if not lines:
        if fine:
            noun = "task within its" if len(fine) == 1 else "tasks within their"
            lines.append(f"No regressions: {len(fine)} {noun} baseline spread ({', '.join(fine)})")
        else:
            lines.append("No regressions: too little history to check any task")
    if short:
        named = ", ".join(f"{t.task} ({t.runs} run{'s' if t.runs != 1 else ''})" for t in short)
        lines.append(f"Too little history: {named}; {MIN_RUNS} runs with a task are needed")
    return lines


def _scope(history: Trends) -> str:
    scope = f"task {history.task}" if history.task else "all tasks"
    if history.group:
        scope += " of group " + " / ".join(history.group)
    return scope


def format_trends(history: Trends) -> str:
    """The runs as a fixed-width table, then the regression verdicts.

    >>> print(format_trends(trends(last=5)))                        # doctest: +SKIP
    Run                                       Start (UTC)          Status     Duration ...
    run-20261128T175430Z-quickstart-47de67d0  2026-11-28 17:54:30  completed      3.7s ...
    <BLANKLINE>
    No regressions: 4 tasks within their baseline spread (mean_chunk, random, ...)
    """
    scope = _scope(history)
    rows = [_cells(r) for r in history.runs]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _) in enumerate(_COLUMNS)]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, (_, right) in zip(cells, widths, _COLUMNS)
        ]
        return "  ".join(parts).rstrip()

    runs = len(history.runs)
    lines = [
        f"Trends: {runs} run{'s' if runs != 1 else ''} in {history.runs_root} "
        f"(task durations: {scope})",
        "",
        line([h for h, _ in _COLUMNS]),
        *(line(row) for row in rows),
        "",
    ]
    lines += _verdict_lines(history)
    return "\n".join(lines)


def format_trends_markdown(history: Trends) -> str:
    """The verdicts, then the runs and the regression check of each task as GitHub-flavoured
    markdown tables, for a pull-request comment or `$GITHUB_STEP_SUMMARY`."""
    scope = _scope(history)
    found = len(history.regressions)
    title = f"{found} regression{'s' if found != 1 else ''}" if found else "no regressions"
    lines = [f"### Trends: {title} over {len(history.runs)} runs ({cell(scope)})", ""]
    lines += [f"- {cell(line)}" for line in _verdict_lines(history)]
    lines.append("")
    lines += table([h for h, _ in _COLUMNS], [r for _, r in _COLUMNS], map(_cells, history.runs))
    checks = [
        [
            t.task,
            t.verdict,
            t.runs,
            "-" if t.baseline_median_s is None else seconds(t.baseline_median_s),
            "-" if t.recent_median_s is None else seconds(t.recent_median_s),
            "-" if t.change_pct is None else f"{t.change_pct:+.0f}%",
            t.since_run or "-",
        ]
        for t in history.tasks
    ]
    headers = ["Task", "Verdict", "Runs", "Baseline median", "Recent median", "Change", "Since"]
    lines += ["", *table(headers, [False, False, True, True, True, True, False], checks)]
    return "\n".join(lines)
