"""The tutorial's code (Steps 2, 4 and 5), unchanged but for the run directory's name,
run against run directories made by examples/quickstart.py."""

import contextlib
import io
import re

import pytest

STEP_2_READ = """
import json

# Read task events line by line
with open(".scalable/runs/run-.../tasks.jsonl") as f:
    for line in f:
        event = json.loads(line)
        print(f"{event['timestamp']} | {event['event']} | {event.get('task', '')}")
"""

STEP_2_PANDAS = """
import pandas as pd

# Load all task events into a DataFrame
tasks = pd.read_json(".scalable/runs/run-.../tasks.jsonl", lines=True)

# Filter to completions and compute statistics
completed = tasks[tasks["event"] == "task_completed"]
print(f"Total tasks: {len(completed)}")
print(f"Average duration: {completed['duration_s'].mean():.2f}s")
print(f"Slowest task: {completed['duration_s'].max():.2f}s")
print(f"Fastest task: {completed['duration_s'].min():.2f}s")
"""

STEP_4 = """
# Find the 5 slowest tasks
slowest = completed.nlargest(5, "duration_s")[["task", "duration_s"]]
print(slowest)

resources = pd.read_json(".scalable/runs/run-.../resources.jsonl", lines=True)
print(f"Average CPU utilization: {resources['cpu_percent'].mean():.1f}%")
# Below 70% suggests you have too many workers for the workload

cache = pd.read_json(".scalable/runs/run-.../cache.jsonl", lines=True)
hit_rate = cache[cache["result"] == "hit"].shape[0] / len(cache) * 100
print(f"Cache hit rate: {hit_rate:.1f}%")
"""

STEP_5 = """
import os
import json

# Load metadata from all runs
runs_dir = ".scalable/runs"
runs = []
for run_name in sorted(os.listdir(runs_dir)):
    run_meta = os.path.join(runs_dir, run_name, "run.json")
    if os.path.exists(run_meta):
        with open(run_meta) as f:
            runs.append(json.load(f))

# Plot duration over time (if matplotlib available)
for r in runs:
    print(f"{r['start_time']}: {r['duration_s']:.1f}s ({r['tasks_completed']} tasks)")
"""


def run_snippets(snippets, run_name, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    namespace, out = {}, io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in snippets:
            exec(code.replace("run-...", run_name), namespace)  # noqa: S102
    return out.getvalue()


@pytest.fixture
def second_run(demo_project):
    from scalable_otel.rundir import list_runs

    return list_runs(demo_project / ".scalable" / "runs")[1]


def test_step_2_reads_task_events(demo_project, demo_run, monkeypatch):
    out = run_snippets([STEP_2_READ, STEP_2_PANDAS], demo_run.name, demo_project, monkeypatch)
    lines = out.splitlines()
    row = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z \| task_\w+ \| \S+$")
    assert sum(bool(row.match(line)) for line in lines) > 60
    assert "| task_submitted | run_simulation" in out
    assert "| task_started | run_simulation" in out
    assert "| task_completed | run_simulation" in out
    assert "| task_failed | run_simulation" in out
    total = int(re.search(r"^Total tasks: (\d+)$", out, re.M).group(1))
    assert total >= 28 + 1  # 28 simulations that work, the summary, the array tasks
    for label in ("Average duration", "Slowest task", "Fastest task"):
        assert re.search(rf"^{label}: \d+\.\d\ds$", out, re.M)


def test_step_4_finds_slow_tasks_utilization_and_cache_rate(demo_project, second_run, monkeypatch):
    out = run_snippets([STEP_2_PANDAS, STEP_4], second_run.name, demo_project, monkeypatch)
    assert re.search(r"task\s+duration_s", out)
    assert re.search(r"^Average CPU utilization: \d+\.\d%$", out, re.M)
    # the second run finds the first run's results: every lookup that can hit does
    rate = float(re.search(r"^Cache hit rate: (\d+\.\d)%$", out, re.M).group(1))
    assert rate == pytest.approx(100 * 28 / 30, abs=0.1)


def test_step_5_lists_every_run(demo_project, monkeypatch):
    out = run_snippets([STEP_5], "", demo_project, monkeypatch)
    rows = re.findall(r"^\d{4}-\d\d-\d\dT[\d:.]+Z: \d+\.\ds \((\d+) tasks\)$", out, re.M)
    assert len(rows) == 2 and all(int(n) > 28 for n in rows)
