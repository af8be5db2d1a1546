"""The statistics behind `report --compare`, checked against a direct count of pairs."""

import json
import math
import random

import pytest

from scalable_otel.analysis.columns import RunFile, query_files
from scalable_otel.analysis.compare import TASK_STATS, mann_whitney

FIELDS = ["event", "task", "duration_s"]


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
    files = {"a": RunFile(tmp_path / "a", "tasks.jsonl", FIELDS)}
    files["b"] = RunFile(tmp_path / "b", "tasks.jsonl", FIELDS)
    rows = {row[0]: row for row in query_files(TASK_STATS, files)}
    _, n_a, n_b, u_a, ties, q_a, _, busy_a = rows["sim"]
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
