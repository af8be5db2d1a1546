"""Two runs side by side: every report figure with its change, per-task duration changes,
and a verdict on whether the second run is faster that looks at the spread of task
durations, not at one number.

The verdict, per task name present in both runs: a Mann-Whitney U test of the two
samples of completed-task durations (two-sided, normal approximation with tie
correction). A task is `faster` or `slower` when p < 0.01 and its median moved by at
least 5%; with fewer than 5 tasks on either side there are too few samples to say.
The run verdict weighs each task by its share of busy time in run A: B is faster when
tasks holding at least half of A's busy time got faster and those that got slower hold
under a tenth of it (and the reverse for slower); at least a tenth moving each way is
`mixed`; otherwise there is no clear difference, whatever the wall-clock durations say.
"""

from __future__ import annotations

import math

from .. import semconv as sc
from ..rundir import TASKS
from .columns import query_files
from .energy import format_carbon, format_kwh
from .load import Run
from .report import report, seconds

MIN_SAMPLES = 5
ALPHA = 0.01
MIN_CHANGE = 0.05
MAJORITY = 0.5  # share of A's task time that must move one way for a verdict
MINOR = 0.1  # share moving the other way that still leaves the verdict standing

# Per task name: sample sizes, U of A (pairs in which A's duration is the longer, ties
# counting half), the tie term sum(t^3 - t) over groups of equal durations, quartiles of
# each side, and A's busy time. U comes from counts per distinct duration and a running
# sum of B's counts below it: one sort, no ranking of every row.
TASK_STATS = f"""
WITH d AS (
    SELECT task, duration_s AS v, 0 AS side FROM {{a}}
    WHERE event = '{sc.TASK_COMPLETED}' AND duration_s IS NOT NULL AND task IS NOT NULL
    UNION ALL
    SELECT task, duration_s, 1 FROM {{b}}
    WHERE event = '{sc.TASK_COMPLETED}' AND duration_s IS NOT NULL AND task IS NOT NULL
),
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
           count(*) FILTER (WHERE side = 0) AS n_a,
           count(*) FILTER (WHERE side = 1) AS n_b,
           quantile_cont(v, [0.25, 0.5, 0.75]) FILTER (WHERE side = 0) AS q_a,
           quantile_cont(v, [0.25, 0.5, 0.75]) FILTER (WHERE side = 1) AS q_b,
           coalesce(sum(v) FILTER (WHERE side = 0), 0) AS busy_a
    FROM d GROUP BY task
)
SELECT q.task, n_a, n_b, u_a, tie, q_a, q_b, busy_a
FROM q JOIN u USING (task)
ORDER BY q.task
"""


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
    name, n_a, n_b, u_a, ties, q_a, q_b, busy_a = row
    q_a, q_b = q_a or [None] * 3, q_b or [None] * 3
    med_a, med_b = q_a[1], q_b[1]
    change = {
        "task": name,
        "n_a": n_a,
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
        "verdict": "only in A" if not n_b else "only in B" if not n_a else None,
    }
    if change["verdict"]:
        return change
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


def _verdict(rows: list[dict]) -> dict:
    shared = [r for r in rows if r["n_a"] and r["n_b"]]
    if not shared:
        return {"verdict": "not comparable", "text": "The runs have no task names in common."}
    busy = sum(r["busy_a_s"] for r in shared) or 1.0
    share = {
        v: sum(r["busy_a_s"] for r in shared if r["verdict"] == v) / busy
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
    fields = ["event", "task", "duration_s"]
    files = {"a": a.file(TASKS, fields), "b": b.file(TASKS, fields)}
    rows = [_task_change(row) for row in query_files(TASK_STATS, files)]
    return {
        "a": ra,
        "b": rb,
        "figures": figures,
        "tasks": rows,
        "verdict": _verdict(rows),
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
    ("Estimated cost", "cost_usd", "$"),
    ("Energy", "energy_kwh", "kWh"),
    ("Carbon (CO2e)", "carbon_g", "g"),
]


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
    lines += ["", "Median task duration (n):"]
    for row in result["tasks"]:
        left = f"{seconds(row['median_a_s'])} ({row['n_a']})" if row["n_a"] else "-"
        right = f"{seconds(row['median_b_s'])} ({row['n_b']})" if row["n_b"] else "-"
        change = _pct(row["change_pct"])
        lines.append(f"  {row['task']:<26}{left:>16}{right:>16}  {change:<8}{row['verdict']}")
    if not result["tasks"]:
        lines.append("  no completed tasks")
    lines += ["", f"Verdict: {result['verdict']['text']}"]
    return "\n".join(lines)
