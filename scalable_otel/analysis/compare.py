"""Two runs side by side: every report figure with its change, per-task duration changes,
and a verdict on whether the second run is faster that looks at the spread of task
durations, not at one number.

The verdict, per task name present in both runs: a Mann-Whitney U test of the two
samples of completed-task durations (two-sided, normal approximation with tie
correction). A task is `faster` or `slower` when p < 0.01 and its median moved by at
least 5%; with fewer than 5 tasks on either side there are too few samples to say.
The run verdict weighs each task by its share of busy time in run A: B is faster when
tasks holding at least half of A's busy time got faster and none got slower (and the
reverse for slower); tasks moving both ways is `mixed`; otherwise there is no clear
difference, whatever the wall-clock durations say.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import semconv as sc
from .load import Run
from .report import report, seconds, task_durations

MIN_SAMPLES = 5
ALPHA = 0.01
MIN_CHANGE = 0.05


def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(p-value, probability that a value of `b` is below one of `a`), two-sided."""
    n1, n2 = len(a), len(b)
    values = np.concatenate([a, b])
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    u_a = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0  # pairs where a is the larger
    n = n1 + n2
    ties = float((counts.astype(np.float64) ** 3 - counts).sum())
    variance = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)))
    if variance <= 0:
        return 1.0, 0.5
    z = (abs(u_a - n1 * n2 / 2.0) - 0.5) / math.sqrt(variance)
    p = math.erfc(max(z, 0.0) / math.sqrt(2.0))
    return p, u_a / (n1 * n2)


def _by_task(table: pa.Table) -> dict[str, np.ndarray]:
    done = table.filter(pc.fill_null(pc.equal(table["event"], sc.TASK_COMPLETED), False))
    done = done.drop_null()
    if done.num_rows == 0:
        return {}
    done = done.sort_by("task")
    names = done["task"].combine_chunks()
    durations = done["duration_s"].to_numpy()
    groups = pc.value_counts(names)  # in order of first appearance: sorted
    out, start = {}, 0
    for item in groups:
        name, count = item["values"].as_py(), item["counts"].as_py()
        out[name] = durations[start : start + count]
        start += count
    return out


def _task_change(name: str, a: np.ndarray, b: np.ndarray) -> dict:
    med_a = float(np.median(a)) if len(a) else None
    med_b = float(np.median(b)) if len(b) else None
    row = {
        "task": name,
        "n_a": len(a),
        "n_b": len(b),
        "median_a_s": med_a,
        "median_b_s": med_b,
        "p25_a_s": float(np.percentile(a, 25)) if len(a) else None,
        "p75_a_s": float(np.percentile(a, 75)) if len(a) else None,
        "p25_b_s": float(np.percentile(b, 25)) if len(b) else None,
        "p75_b_s": float(np.percentile(b, 75)) if len(b) else None,
        "change_s": None,
        "change_pct": None,
        "p_value": None,
        "prob_b_faster": None,
        "busy_a_s": float(a.sum()) if len(a) else 0.0,
        "verdict": "only in A" if not len(b) else "only in B" if not len(a) else None,
    }
    if row["verdict"]:
        return row
    row["change_s"] = med_b - med_a
    row["change_pct"] = 100.0 * (med_b - med_a) / med_a if med_a else None
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        row["verdict"] = "too few samples"
        return row
    p, prob = mann_whitney(a, b)
    row["p_value"], row["prob_b_faster"] = p, prob
    moved = med_a > 0 and abs(med_b - med_a) / med_a >= MIN_CHANGE
    if p < ALPHA and moved:
        row["verdict"] = "faster" if med_b < med_a else "slower"
    else:
        row["verdict"] = "no clear change"
    return row


def _verdict(rows: list[dict]) -> dict:
    shared = [r for r in rows if r["n_a"] and r["n_b"]]
    busy = sum(r["busy_a_s"] for r in shared)
    faster = sum(r["busy_a_s"] for r in shared if r["verdict"] == "faster")
    slower = sum(r["busy_a_s"] for r in shared if r["verdict"] == "slower")
    names = {v: [r["task"] for r in shared if r["verdict"] == v] for v in ("faster", "slower")}
    if not shared:
        return {"verdict": "not comparable", "text": "The runs have no task names in common."}
    if names["faster"] and names["slower"]:
        text = (
            f"Mixed: {', '.join(names['faster'])} got faster, "
            f"{', '.join(names['slower'])} got slower."
        )
        return {"verdict": "mixed", "text": text}
    share = (faster or slower) / busy if busy else 0.0
    if faster and share >= 0.5:
        return {
            "verdict": "faster",
            "text": f"B is faster: {', '.join(names['faster'])} "
            f"({100 * share:.0f}% of A's task time) ran faster beyond the spread of durations.",
        }
    if slower and share >= 0.5:
        return {
            "verdict": "slower",
            "text": f"B is slower: {', '.join(names['slower'])} "
            f"({100 * share:.0f}% of A's task time) ran slower beyond the spread of durations.",
        }
    return {
        "verdict": "no clear difference",
        "text": "No clear difference: task durations changed within their spread "
        "(or too few tasks to tell).",
    }


def _change(a, b) -> dict:
    if a is None or b is None:
        return {"a": a, "b": b, "change": None, "change_pct": None}
    change = b - a
    return {"a": a, "b": b, "change": change, "change_pct": 100.0 * change / a if a else None}


def compare(a: Run, b: Run) -> dict:
    """Run B against run A: figures with changes, per-task duration changes, a verdict.

    >>> result = compare(load_run("run-abc123"), load_run("run-def456"))  # doctest: +SKIP
    >>> result["verdict"]["verdict"]                                     # doctest: +SKIP
    'faster'
    """
    ra, rb = report(a), report(b)
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
    }
    by_a, by_b = _by_task(task_durations(a.path)), _by_task(task_durations(b.path))
    empty = np.array([], dtype=np.float64)
    rows = [
        _task_change(name, by_a.get(name, empty), by_b.get(name, empty))
        for name in sorted(set(by_a) | set(by_b))
    ]
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
