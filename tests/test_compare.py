"""The statistics behind `report --compare`, checked against a direct count of pairs."""

import json
import math
import random

import pytest

from scalable_otel.analysis import load_run
from scalable_otel.analysis.columns import RunFile, query_files
from scalable_otel.analysis.compare import (
    TASK_STATS,
    compare,
    executions_change_pct,
    format_compare,
    gate,
    mann_whitney,
)
from scalable_otel.rundir import RunDirectory

FIELDS = ["event", "task", "span_id", "duration_s"]
LOOKUPS = ["event", "span_id", "result", "saved_s"]


def write_tasks(folder, durations):
    folder.mkdir()
    with open(folder / "tasks.jsonl", "w") as f:
        for task, value in durations:
            f.write(json.dumps({"event": "task_completed", "task": task, "duration_s": value}))
            f.write("\n")


def test_u_ties_and_quartiles_match_a_direct_count(tmp_path):
    rng = random.Random(3)
    a = [round(rng.lognormvariate(0.0, 0.5), 2) for _ in range(300)]  # rounding makes ties
    b = [round(rng.lognormvariate(0.1, 0.5), 2) for _ in range(250)]
    write_tasks(tmp_path / "a", [("sim", v) for v in a] + [("only_a", 1.0)])
    write_tasks(tmp_path / "b", [("sim", v) for v in b])
    files = {side: RunFile(tmp_path / side, "tasks.jsonl", FIELDS) for side in "ab"}
    files |= {f"c{side}": RunFile(tmp_path / side, "cache.jsonl", LOOKUPS) for side in "ab"}
    rows = {row[0]: row for row in query_files(TASK_STATS, files)}
    _, n_a, n_b, u_a, ties, q_a, _, busy_a = rows["sim"][:8]
    assert (n_a, n_b) == (300, 250)
    assert u_a == sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    pooled = a + b
    assert ties == sum(pooled.count(v) ** 3 - pooled.count(v) for v in set(pooled))
    assert q_a[1] == pytest.approx(sorted(a)[149] / 2 + sorted(a)[150] / 2)
    assert busy_a == pytest.approx(sum(a))
    assert rows["only_a"][2] == 0


def test_mann_whitney_p_value_of_a_worked_example():
    # a = 1..5, b = 6..10: no pair in which A is the longer, so U_a = 0
    p, prob_b_below = mann_whitney(5, 5, 0.0, 0.0)
    z = (abs(0 - 12.5) - 0.5) / math.sqrt(5 * 5 * 11 / 12)
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert p == pytest.approx(0.012186, abs=1e-6)  # scipy.stats.mannwhitneyu, asymptotic
    assert prob_b_below == 0.0
    assert mann_whitney(5, 5, 12.5, 0.0)[0] == pytest.approx(1.0)


# --- tasks served from the cache ----------------------------------------------------------

T0 = "2026-01-01T00:00:00.000000Z"


def make_run(root, run_id, tasks, lookups=()):
    """A run whose completed tasks are (task, duration, span id) and whose cache lookups
    are (span id, result, saved_s)."""
    run = RunDirectory.create(root, run_id)
    with open(run.file("tasks.jsonl"), "w") as f:
        for task, duration, span in tasks:
            line = {"timestamp": T0, "event": "task_completed", "task": task, "span_id": span}
            f.write(json.dumps(line | {"duration_s": duration}) + "\n")
    with open(run.file("cache.jsonl"), "w") as f:
        for span, result, saved in lookups:
            line = {"timestamp": T0, "event": "cache_lookup", "span_id": span, "result": result}
            f.write(json.dumps(line | {"saved_s": saved}) + "\n")
    run.write_run_json(
        {"run_id": run_id, "status": "completed", "start_time": T0, "end_time": T0}
        | {"duration_s": 60.0, "tasks_completed": len(tasks), "tasks_failed": 0}
    )
    return load_run(root / run_id)


A_ID = "run-20260101T000000Z-cmp-00000001"
B_ID = "run-20260101T000100Z-cmp-00000002"
EXECUTED = [1.0 + 0.01 * i for i in range(50)]  # A executes 50 simulations


def test_a_run_served_by_its_cache_is_faster_from_the_cache_not_faster(tmp_path):
    a = make_run(
        tmp_path, A_ID, [("run_simulation", d, f"a{i:015x}") for i, d in enumerate(EXECUTED)]
    )
    # B executes 10 of them (every fifth duration of A: no change beyond the spread) and
    # takes 40 from its cache, each a 1 ms lookup that saved 0.3075 s
    ran = [("run_simulation", d, f"b{i:015x}") for i, d in enumerate(EXECUTED[::5])]
    hits = [("run_simulation", 0.001, f"c{i:015x}") for i in range(40)]
    b = make_run(tmp_path, B_ID, ran + hits, [(span, "hit", 0.3075) for *_, span in hits])
    result = compare(a, b)
    (row,) = result["tasks"]
    assert (row["completed_a"], row["completed_b"], row["cached_a"], row["cached_b"]) == (
        50,
        50,
        0,
        40,
    )
    assert (row["n_a"], row["n_b"]) == (50, 10)  # executions only
    assert row["median_b_s"] == pytest.approx(1.225) and row["verdict"] == "no clear change"
    assert row["median_all_b_s"] == 0.001  # the old figure, lookups included
    assert row["saved_b_s"] == pytest.approx(12.3)
    verdict = result["verdict"]
    assert verdict["verdict"] == "faster from the cache"
    assert verdict["executions_verdict"] == "no clear difference"
    assert verdict["text"] == (
        "B is faster, from the cache: 40 of 50 run_simulation tasks came from B's cache "
        "(saved 12.3s); the executions show no clear change."
    )
    assert verdict["cache"] == {
        "served_a": 0,
        "served_b": 40,
        "saved_a_s": 0.0,
        "saved_b_s": pytest.approx(12.3),
        "effect": "faster",
    }
    assert gate(result, 0) is None
    text = format_compare(result)
    assert "Tasks from cache" in text and "cache 0/40" in text
    assert text.endswith(f"Verdict: {verdict['text']}")


def test_a_hit_and_a_miss_in_one_task_is_an_execution(tmp_path):
    a = make_run(tmp_path, A_ID, [("sim", d, f"a{i:015x}") for i, d in enumerate(EXECUTED)])
    # each of B's tasks looked up twice: a hit, then a miss it computed: all executions
    tasks = [("sim", d * 2, f"b{i:015x}") for i, d in enumerate(EXECUTED)]
    lookups = [(span, result, 0.5) for *_, span in tasks for result in ("hit", "miss")]
    result = compare(a, make_run(tmp_path, B_ID, tasks, lookups))
    (row,) = result["tasks"]
    assert (row["cached_b"], row["n_b"], row["verdict"]) == (0, 50, "slower")
    assert result["verdict"]["verdict"] == "slower"
    assert result["verdict"]["cache"]["served_b"] == 0
    assert result["verdict"]["executions_change_pct"] == pytest.approx(row["change_pct"])
    assert row["change_pct"] == pytest.approx(100.0)
    assert gate(result, 100.0) and gate(result, 100.5) is None


def test_the_slowdown_weighs_each_tested_task_by_a_s_execution_time():
    rows = [
        {"verdict": "slower", "change_pct": 100.0, "exec_busy_a_s": 3.0},
        {"verdict": "no clear change", "change_pct": -4.0, "exec_busy_a_s": 1.0},
        {"verdict": "too few samples", "change_pct": 500.0, "exec_busy_a_s": 50.0},
        {"verdict": "only in A", "change_pct": None, "exec_busy_a_s": 9.0},
    ]
    assert executions_change_pct(rows) == pytest.approx((300.0 - 4.0) / 4.0)
    assert executions_change_pct(rows[2:]) is None


def test_faster_executions_stay_faster_and_the_cache_is_said_apart(tmp_path):
    a = make_run(tmp_path, A_ID, [("sim", d, f"a{i:015x}") for i, d in enumerate(EXECUTED)])
    # B runs every task in half the time, and its cache serves 5 more (1 ms lookups)
    ran = [("sim", d / 2, f"b{i:015x}") for i, d in enumerate(EXECUTED)]
    hits = [("sim", 0.001, f"c{i:015x}") for i in range(5)]
    b = make_run(tmp_path, B_ID, ran + hits, [(span, "hit", 1.0) for *_, span in hits])
    verdict = compare(a, b)["verdict"]
    assert verdict["verdict"] == verdict["executions_verdict"] == "faster"
    assert verdict["executions_change_pct"] == pytest.approx(-50.0)
    assert verdict["text"] == (
        "B is faster: sim (100% of A's task time) ran faster beyond the spread of durations. "
        "The cache served 0 of A's tasks (saved 0.000s) and 5 of B's (saved 5.0s); they are "
        "left out of the durations compared."
    )
