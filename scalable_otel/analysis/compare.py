"""Two runs side by side: every report figure with its change, per-task duration changes,
and a verdict on whether the second run is faster that looks at the spread of task
durations, not at one number.

The verdict, per task name present in both runs: a Mann-Whitney U test of the two
samples of executions' durations (completed tasks not served from the cache; two-sided,
normal approximation with tie correction). A task is `faster` or `slower` when p < 0.01
and its median moved by at least 5%; with fewer than 5 executions on either side there
are too few samples to say. The run verdict weighs each task by its share of execution
time in run A: B is faster when tasks holding at least half of it got faster and those
that got slower hold under a tenth of it (and the reverse for slower); at least a tenth
moving each way is `mixed`; otherwise there is no clear difference, whatever the
wall-clock durations say.

Tasks served from the cache (`facts.served_from_cache`) are left out of those statistics:
their `duration_s` is a lookup, not an execution. Each task name and the run say how many
tasks each run's cache served and the task time their hits saved (`saved_s`). When the
executions show no clear difference but one run's cache saved more task time than the
other's, by at least 5% of A's task time (its durations plus what its cache saved), the
verdict is `faster from the cache` (B's cache saved more) or `slower from the cache`:
never `faster` or `slower`, which speak of the executions only.

The slowdown of the executions (`executions_change_pct`, what `--fail-if-slower` reads):
the change of each tested task's median execution time (both runs with at least 5
executions), averaged with weights of A's execution time of that task. `gate` fires when
the verdict is `slower` and that change is at least the percentage asked for.
"""

from __future__ import annotations

import math

from .. import semconv as sc
from ..rundir import CACHE, TASKS
from .columns import query_files
from .energy import format_carbon, format_kwh
from .facts import served_from_cache
from .groups import compare_groups
from .groups import label as group_label
from .load import Run
from .markdown import cell, table
from .report import report, seconds

MIN_SAMPLES = 5
ALPHA = 0.01
MIN_CHANGE = 0.05
MAJORITY = 0.5  # share of A's task time that must move one way for a verdict
MINOR = 0.1  # share moving the other way that still leaves the verdict standing

# Per task name: the executions' sample sizes, U of A (pairs in which A's duration is the
# longer, ties counting half), the tie term sum(t^3 - t) over groups of equal durations,
# quartiles of each side and A's execution time; then every completed task's count, median
# and time, and those served from the cache with the time they saved. U comes from counts
# per distinct duration and a running sum of B's counts below it: one sort, no ranking of
# every row.
TASK_STATS = f"""
WITH sa AS ({served_from_cache("{ca}")}),
sb AS ({served_from_cache("{cb}")}),
done AS (
    SELECT t.task, t.duration_s AS v, 0 AS side, s.span_id IS NOT NULL AS cached,
           coalesce(s.saved_s, 0.0) AS saved
    FROM {{a}} t LEFT JOIN sa s ON t.span_id = s.span_id
    WHERE t.event = '{sc.TASK_COMPLETED}' AND t.duration_s IS NOT NULL AND t.task IS NOT NULL
    UNION ALL
    SELECT t.task, t.duration_s, 1, s.span_id IS NOT NULL, coalesce(s.saved_s, 0.0)
    FROM {{b}} t LEFT JOIN sb s ON t.span_id = s.span_id
    WHERE t.event = '{sc.TASK_COMPLETED}' AND t.duration_s IS NOT NULL AND t.task IS NOT NULL
),
d AS (SELECT task, v, side FROM done WHERE NOT cached),
counts AS (
    SELECT task, v,
           count(*) FILTER (WHERE side = 0)::DOUBLE AS na,
           count(*) FILTER (WHERE side = 1)::DOUBLE AS nb
    FROM d GROUP BY task, v
),
pairs AS (
    SELECT task, na, nb,
           coalesce(sum(nb) OVER (PARTITION BY task ORDER BY v
                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS b_below
    FROM counts
),
u AS (
    SELECT task, sum(na * (b_below + nb / 2.0)) AS u_a,
           sum((na + nb) * (na + nb) * (na + nb) - (na + nb)) AS tie
    FROM pairs GROUP BY task
),
q AS (
    SELECT task,
           count(*) FILTER (WHERE side = 0 AND NOT cached) AS n_a,
           count(*) FILTER (WHERE side = 1 AND NOT cached) AS n_b,
           quantile_cont(v, [0.25, 0.5, 0.75]) FILTER (WHERE side = 0 AND NOT cached) AS q_a,
           quantile_cont(v, [0.25, 0.5, 0.75]) FILTER (WHERE side = 1 AND NOT cached) AS q_b,
           coalesce(sum(v) FILTER (WHERE side = 0 AND NOT cached), 0) AS exec_busy_a,
           count(*) FILTER (WHERE side = 0) AS completed_a,
           count(*) FILTER (WHERE side = 1) AS completed_b,
           count(*) FILTER (WHERE side = 0 AND cached) AS cached_a,
           count(*) FILTER (WHERE side = 1 AND cached) AS cached_b,
           coalesce(sum(saved) FILTER (WHERE side = 0), 0) AS saved_a,
           coalesce(sum(saved) FILTER (WHERE side = 1), 0) AS saved_b,
           quantile_cont(v, 0.5) FILTER (WHERE side = 0) AS median_all_a,
           quantile_cont(v, 0.5) FILTER (WHERE side = 1) AS median_all_b,
           coalesce(sum(v) FILTER (WHERE side = 0), 0) AS busy_a
    FROM done GROUP BY task
)
SELECT q.task, n_a, n_b, coalesce(u_a, 0), coalesce(tie, 0), q_a, q_b, exec_busy_a,
       completed_a, completed_b, cached_a, cached_b, saved_a, saved_b,
       median_all_a, median_all_b, busy_a
FROM q LEFT JOIN u USING (task)
ORDER BY q.task
"""

TESTED = ("faster", "slower", "no clear change")  # task verdicts of a Mann-Whitney test


def mann_whitney(n1: int, n2: int, u_a: float, ties: float) -> tuple[float, float]:
    """(two-sided p-value, probability that a value of B is below one of A) of a
    Mann-Whitney U test, from U of A (pairs in which A's value is the larger, ties
    counting half) and the tie term sum(t^3 - t) over groups of equal values (normal
    approximation with continuity correction)."""
    n = n1 + n2
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0, 0.5
    z = (abs(u_a - n1 * n2 / 2.0) - 0.5) / math.sqrt(variance)
    return math.erfc(max(z, 0.0) / math.sqrt(2.0)), u_a / (n1 * n2)


def _task_change(row: tuple) -> dict:
    (name, n_a, n_b, u_a, ties, q_a, q_b, exec_busy_a, completed_a, completed_b) = row[:10]
    cached_a, cached_b, saved_a, saved_b, all_a, all_b, busy_a = row[10:]
    q_a, q_b = q_a or [None] * 3, q_b or [None] * 3
    med_a, med_b = q_a[1], q_b[1]
    change = {
        "task": name,
        "n_a": n_a,  # executions: completed tasks not served from the cache
        "n_b": n_b,
        "median_a_s": med_a,
        "median_b_s": med_b,
        "p25_a_s": q_a[0],
        "p75_a_s": q_a[2],
        "p25_b_s": q_b[0],
        "p75_b_s": q_b[2],
        "change_s": None,
        "change_pct": None,
        "p_value": None,
        "prob_b_faster": None,
        "busy_a_s": float(busy_a),
        "exec_busy_a_s": float(exec_busy_a),
        "completed_a": completed_a,
        "completed_b": completed_b,
        "cached_a": cached_a,
        "cached_b": cached_b,
        "saved_a_s": float(saved_a),
        "saved_b_s": float(saved_b),
        "median_all_a_s": all_a,  # every completed task, cache lookups included
        "median_all_b_s": all_b,
        "change_all_pct": 100.0 * (all_b - all_a) / all_a if all_a and all_b is not None else None,
        "verdict": "only in A" if not completed_b else "only in B" if not completed_a else None,
    }
    if change["verdict"]:
        return change
    if n_a and n_b:
        change["change_s"] = med_b - med_a
        change["change_pct"] = 100.0 * (med_b - med_a) / med_a if med_a else None
    if n_a < MIN_SAMPLES or n_b < MIN_SAMPLES:
        change["verdict"] = "too few samples"
        return change
    p, prob = mann_whitney(n_a, n_b, u_a, ties)
    change["p_value"], change["prob_b_faster"] = p, prob
    moved = med_a > 0 and abs(med_b - med_a) / med_a >= MIN_CHANGE
    if p < ALPHA and moved:
        change["verdict"] = "faster" if med_b < med_a else "slower"
    else:
        change["verdict"] = "no clear change"
    return change


def _executions(shared: list[dict]) -> dict:
    """The verdict of the executions alone, weighted by A's execution time."""
    busy = sum(r["exec_busy_a_s"] for r in shared) or 1.0
    share = {
        v: sum(r["exec_busy_a_s"] for r in shared if r["verdict"] == v) / busy
        for v in ("faster", "slower")
    }
    names = {v: ", ".join(r["task"] for r in shared if r["verdict"] == v) for v in share}
    for way, other in (("faster", "slower"), ("slower", "faster")):
        if share[way] >= MAJORITY and share[other] < MINOR:
            text = (
                f"B is {way}: {names[way]} ({100 * share[way]:.0f}% of A's task time) "
                f"ran {way} beyond the spread of durations."
            )
            if names[other]:
                text += (
                    f" {names[other]} ran {other}, but holds only "
                    f"{100 * share[other]:.0f}% of A's task time."
                )
            return {"verdict": way, "text": text, "share": share}
    if share["faster"] >= MINOR and share["slower"] >= MINOR:
        text = (
            f"Mixed: {names['faster']} got faster ({100 * share['faster']:.0f}% of A's task "
            f"time), {names['slower']} got slower ({100 * share['slower']:.0f}%)."
        )
        return {"verdict": "mixed", "text": text, "share": share}
    return {
        "verdict": "no clear difference",
        "text": "No clear difference: the tasks holding most of A's task time changed "
        "within the spread of their durations (or too few tasks ran to tell).",
        "share": share,
    }


def executions_change_pct(rows: list[dict]) -> float | None:
    """The change of the tested tasks' median execution times, weighted by A's execution
    time of each (None when no task was tested): the slowdown `gate` compares."""
    tested = [r for r in rows if r["verdict"] in TESTED and r["change_pct"] is not None]
    weight = sum(r["exec_busy_a_s"] for r in tested)
    if not tested or weight <= 0:
        return None
    return sum(r["exec_busy_a_s"] * r["change_pct"] for r in tested) / weight


def _cache_figures(rows: list[dict]) -> dict:
    """Tasks each run's cache served, the time it saved, and which way that moved B."""
    served_a = sum(r["cached_a"] for r in rows)
    served_b = sum(r["cached_b"] for r in rows)
    saved_a = sum(r["saved_a_s"] for r in rows)
    saved_b = sum(r["saved_b_s"] for r in rows)
    work_a = sum(r["busy_a_s"] for r in rows) + saved_a  # A's tasks, had nothing been cached
    moved = saved_b - saved_a
    effect = None
    if moved and abs(moved) >= MIN_CHANGE * work_a:
        effect = "faster" if moved > 0 else "slower"
    return {
        "served_a": served_a,
        "served_b": served_b,
        "saved_a_s": saved_a,
        "saved_b_s": saved_b,
        "effect": effect,
    }


def _served(rows: list[dict], side: str, than: str) -> str:
    """`40 of 50 run_simulation, 3 of 3 post` for the tasks `side`'s cache served more of."""
    parts = [
        f"{r[f'cached_{side}']} of {r[f'completed_{side}']} {r['task']}"
        for r in rows
        if r[f"cached_{side}"] > r[f"cached_{than}"]
    ]
    return ", ".join(parts)


def _verdict(rows: list[dict]) -> dict:
    shared = [r for r in rows if r["completed_a"] and r["completed_b"]]
    cache = _cache_figures(rows)
    if not shared:
        return {
            "verdict": "not comparable",
            "text": "The runs have no task names in common.",
            "executions_verdict": "not comparable",
            "executions_change_pct": None,
            "cache": cache,
        }
    executions = _executions(shared)
    result = dict(executions)
    result["executions_verdict"] = executions["verdict"]
    result["executions_change_pct"] = executions_change_pct(shared)
    result["cache"] = cache
    effect = cache["effect"]
    if executions["verdict"] == "no clear difference" and effect:
        side, other = ("b", "a") if effect == "faster" else ("a", "b")
        tested = any(r["verdict"] in TESTED for r in shared)
        result["verdict"] = f"{effect} from the cache"
        result["text"] = (
            f"B is {effect}, from the cache: {_served(shared, side, other)} tasks came from "
            f"{side.upper()}'s cache (saved {seconds(cache[f'saved_{side}_s'])}); "
            + (
                "the executions show no clear change."
                if tested
                else "too few tasks were executed in both runs to compare the executions."
            )
        )
    elif cache["served_a"] or cache["served_b"]:
        result["text"] += (
            f" The cache served {cache['served_a']} of A's tasks (saved "
            f"{seconds(cache['saved_a_s'])}) and {cache['served_b']} of B's (saved "
            f"{seconds(cache['saved_b_s'])}); they are left out of the durations compared."
        )
    return result


def gate(result: dict, min_slowdown_pct: float) -> str | None:
    """Why a CI gate fails B against A, or None: the executions' verdict is `slower` and
    they slowed down by at least `min_slowdown_pct` percent (`executions_change_pct`).
    Cache hits alone, too few samples and changes within the noise never fail it.

    >>> gate(compare(load_run("run-abc123"), load_run("run-def456")), 10)  # doctest: +SKIP
    'B is slower by 98% (at least 10% fails): sleepy 0.051s -> 0.101s (+98%)'
    """
    verdict = result["verdict"]
    change = verdict.get("executions_change_pct")
    if verdict.get("executions_verdict") != "slower" or change is None:
        return None
    if change < min_slowdown_pct:
        return None
    slower = [
        f"{r['task']} {seconds(r['median_a_s'])} -> {seconds(r['median_b_s'])} "
        f"({r['change_pct']:+.0f}%)"
        for r in result["tasks"]
        if r["verdict"] == "slower"
    ]
    return f"B is slower by {change:.0f}% (at least {min_slowdown_pct:g}% fails): " + ", ".join(
        slower
    )


def _change(a, b) -> dict:
    if a is None or b is None:
        return {"a": a, "b": b, "change": None, "change_pct": None}
    change = b - a
    return {"a": a, "b": b, "change": change, "change_pct": 100.0 * change / a if a else None}


def compare(a: Run, b: Run, energy_options: dict | None = None) -> dict:
    """Run B against run A: figures with changes, per-task duration changes, a verdict.

    `energy_options`: the energy constants the command line gives (`energy.run_energy`).

    >>> result = compare(load_run("run-abc123"), load_run("run-def456"))  # doctest: +SKIP
    >>> result["verdict"]["verdict"]                                     # doctest: +SKIP
    'faster'
    """
    ra, rb = report(a, energy_options), report(b, energy_options)
    figures = {
        "duration_s": _change(ra["duration_s"], rb["duration_s"]),
        "tasks_submitted": _change(ra["tasks"]["submitted"], rb["tasks"]["submitted"]),
        "tasks_completed": _change(ra["tasks"]["completed"], rb["tasks"]["completed"]),
        "tasks_failed": _change(ra["tasks"]["failed"], rb["tasks"]["failed"]),
        "avg_duration_s": _change(ra["tasks"]["avg_duration_s"], rb["tasks"]["avg_duration_s"]),
        "workers_peak": _change(ra["workers"]["peak"], rb["workers"]["peak"]),
        "utilization": _change(ra["workers"]["utilization"], rb["workers"]["utilization"]),
        "cache_hit_rate": _change(ra["cache"]["hit_rate"], rb["cache"]["hit_rate"]),
        "cost_usd": _change(ra["cost"]["usd"], rb["cost"]["usd"]),
        "energy_kwh": _change(ra["energy"]["kwh"], rb["energy"]["kwh"]),
        "carbon_g": _change(ra["energy"]["carbon_g"], rb["energy"]["carbon_g"]),
    }
    fields = ["event", "task", "span_id", "duration_s"]
    lookups = ["event", "span_id", "result", "saved_s"]
    files = {"a": a.file(TASKS, fields), "b": b.file(TASKS, fields)}
    files |= {"ca": a.file(CACHE, lookups), "cb": b.file(CACHE, lookups)}
    rows = [_task_change(row) for row in query_files(TASK_STATS, files)]
    verdict = _verdict(rows)
    cache = verdict["cache"]
    figures["tasks_from_cache"] = _change(cache["served_a"], cache["served_b"])
    figures["cache_saved_s"] = _change(cache["saved_a_s"], cache["saved_b_s"])
    return {
        "a": ra,
        "b": rb,
        "figures": figures,
        "tasks": rows,
        "verdict": verdict,
        "groups": compare_groups(ra["groups"], rb["groups"]),  # [] without groups
    }


def _pct(value) -> str:
    return "" if value is None else f"({value:+.0f}%)"


def _fmt(kind: str, value) -> str:
    if value is None:
        return "n/a"
    if kind == "s":
        return seconds(value)
    if kind == "%":
        return f"{100 * value:.0f}%"
    if kind == "$":
        return f"${value:.2f}"
    if kind == "kWh":
        return format_kwh(value)
    if kind == "g":
        return format_carbon(value, "")
    return str(value)


def _fmt_change(kind: str, figure: dict) -> str:
    change = figure["change"]
    if change is None:
        return ""
    if kind == "%":
        return f"{100 * change:+.0f} pts"
    if kind == "s":
        sign = "+" if change >= 0 else "-"
        return f"{sign}{seconds(abs(change))} {_pct(figure['change_pct'])}".rstrip()
    if kind == "$":
        return f"{change:+.2f}"
    if kind in ("kWh", "g"):
        shown = format_kwh(abs(change)) if kind == "kWh" else format_carbon(abs(change), "")
        return f"{'+' if change >= 0 else '-'}{shown} {_pct(figure['change_pct'])}".rstrip()
    return f"{change:+d} {_pct(figure['change_pct'])}".rstrip()


ROWS = [
    ("Duration", "duration_s", "s"),
    ("Tasks submitted", "tasks_submitted", "n"),
    ("Tasks completed", "tasks_completed", "n"),
    ("Tasks failed", "tasks_failed", "n"),
    ("Avg task duration", "avg_duration_s", "s"),
    ("Peak workers", "workers_peak", "n"),
    ("Avg utilization", "utilization", "%"),
    ("Cache hit rate", "cache_hit_rate", "%"),
    ("Tasks from cache", "tasks_from_cache", "n"),
    ("Time cache saved", "cache_saved_s", "s"),
    ("Estimated cost", "cost_usd", "$"),
    ("Energy", "energy_kwh", "kWh"),
    ("Carbon (CO2e)", "carbon_g", "g"),
]


def _median_cell(row: dict, side: str) -> str:
    if not row[f"completed_{side}"]:
        return "-"
    n = row[f"n_{side}"]
    return f"{seconds(row[f'median_{side}_s'])} ({n})" if n else "- (0)"


def _any_cached(row: dict) -> bool:
    return bool(row["cached_a"] or row["cached_b"])


def format_compare_groups(rows: list[dict]) -> list[str]:
    """`report --compare`'s groups: busy time and median duration, A and B."""
    lines = ["Groups (busy time, median task duration; A -> B):"]
    for row in rows:
        name = "  " * max(row["depth"], 1) + (row["path"][-1] if row["path"] else group_label([]))
        busy, median = row["busy_s"], row["median_duration_s"]
        change = "" if busy["change_pct"] is None else f"({busy['change_pct']:+.0f}%)"
        lines.append(
            f"{name:<24}{seconds(busy['a']):>9} -> {seconds(busy['b']):<9}{change:<8}"
            f"median {seconds(median['a'])} -> {seconds(median['b'])}"
        )
    return lines


def format_compare(result: dict) -> str:
    """The comparison as text: a table of figures, one of task medians, and the verdict."""
    a, b = result["a"], result["b"]
    rule = "═" * 72
    lines = [
        rule,
        "Run Comparison",
        f"  A: {a['run_id']} ({a['status']})",
        f"  B: {b['run_id']} ({b['status']})",
        rule,
        f"{'':<20}{'A':>14}{'B':>14}  Change",
    ]
    for label, key, kind in ROWS:
        figure = result["figures"][key]
        lines.append(
            f"{label:<20}{_fmt(kind, figure['a']):>14}{_fmt(kind, figure['b']):>14}  "
            f"{_fmt_change(kind, figure)}".rstrip()
        )
    lines += ["", "Median execution time (executions; tasks served from the cache, A/B):"]
    for row in result["tasks"]:
        left, right = _median_cell(row, "a"), _median_cell(row, "b")
        change = _pct(row["change_pct"])
        cached = f"cache {row['cached_a']}/{row['cached_b']}" if _any_cached(row) else ""
        lines.append(
            f"  {row['task']:<26}{left:>16}{right:>16}  {change:<8}{cached:<14}{row['verdict']}"
        )
    if not result["tasks"]:
        lines.append("  no completed tasks")
    if result.get("groups"):
        lines += ["", *format_compare_groups(result["groups"])]
    lines += ["", f"Verdict: {result['verdict']['text']}"]
    return "\n".join(lines)


def format_compare_markdown(result: dict) -> str:
    """The comparison as GitHub-flavoured markdown, for a pull-request comment or a CI
    job summary (`$GITHUB_STEP_SUMMARY`): the verdict, then the figures and the tasks as
    tables."""
    a, b, verdict = result["a"], result["b"], result["verdict"]
    lines = [
        f"### Run comparison: {cell(verdict['verdict'])}",
        "",
        f"**Verdict:** {cell(verdict['text'])}",
        "",
        f"A: `{a['run_id']}` ({a['status']}) · B: `{b['run_id']}` ({b['status']})",
        "",
    ]
    figures = []
    for label, key, kind in ROWS:
        figure = result["figures"][key]
        figures.append(
            [label, _fmt(kind, figure["a"]), _fmt(kind, figure["b"]), _fmt_change(kind, figure)]
        )
    lines += table(["Figure", "A", "B", "Change"], [False, True, True, True], figures)
    tasks = [
        [
            row["task"],
            _median_cell(row, "a"),
            _median_cell(row, "b"),
            "" if row["change_pct"] is None else f"{row['change_pct']:+.0f}%",
            f"{row['cached_a']}/{row['cached_b']}",
            row["verdict"],
        ]
        for row in result["tasks"]
    ]
    headers = ["Task", "A median (executions)", "B median (executions)", "Change"]
    headers += ["From cache A/B", "Verdict"]
    lines += ["", *table(headers, [False, True, True, True, True, False], tasks)]
    if result.get("groups"):
        rows = [
            [
                g["label"],
                seconds(g["busy_s"]["a"]),
                seconds(g["busy_s"]["b"]),
                "" if g["busy_s"]["change_pct"] is None else f"{g['busy_s']['change_pct']:+.0f}%",
                seconds(g["median_duration_s"]["a"]),
                seconds(g["median_duration_s"]["b"]),
            ]
            for g in result["groups"]
        ]
        headers = ["Group", "A busy", "B busy", "Change", "A median", "B median"]
        lines += ["", *table(headers, [False, True, True, True, True, True], rows)]
    return "\n".join(lines)
