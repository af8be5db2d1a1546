"""`scalable trends`, `advise`, `export` and `report --html` on runs made by the real SDK,
with expected figures computed here from the raw files."""

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from scalable_otel.analysis import load_run
from scalable_otel.analysis.advise import format_memory
from scalable_otel.analysis.energy import format_carbon, format_kwh, run_energy
from scalable_otel.cli import main
from scalable_otel.rundir import list_runs


def lines(path):
    return [json.loads(raw) for raw in Path(path).read_text().splitlines() if raw.strip()]


def secs(value):
    if abs(value) >= 1:
        return f"{value:.1f}s"
    return f"{value:.3f}s" if abs(value) >= 0.001 or value == 0 else f"{value * 1e6:.0f}µs"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def runs(demo_project, monkeypatch):
    monkeypatch.chdir(demo_project)
    return list_runs(demo_project / ".scalable" / "runs")


def uncached_durations(run):
    """Completed task durations, leaving out tasks whose result came from the cache."""
    cache = lines(run / "cache.jsonl")
    hit_spans = {c["span_id"] for c in cache if c["result"] == "hit"}
    hit_spans -= {c["span_id"] for c in cache if c["result"] == "miss"}
    return [
        t["duration_s"]
        for t in lines(run / "tasks.jsonl")
        if t["event"] == "task_completed" and t["span_id"] not in hit_spans
    ]


def test_trends_table(runs):
    result = invoke("trends")
    assert result.exit_code == 0
    out = result.output.splitlines()
    assert out[0] == "Trends: 2 runs in .scalable/runs (task durations: all tasks)"
    header = out[2].split()
    assert header[:3] == ["Run", "Start", "(UTC)"]
    assert header[-4:] == ["Cache", "hit", "Energy", "CO2e"]
    for row, run, hits in zip(out[3:5], runs, ["0%", "93%"]):
        meta = json.loads((run / "run.json").read_text())
        durations = uncached_durations(run)
        cells = row.split()
        assert cells[0] == run.name
        assert cells[3:7] == [
            meta["status"],
            secs(meta["duration_s"]),
            str(meta["tasks_completed"]),
            str(meta["tasks_failed"]),
        ]
        assert cells[7] == secs(statistics.median(durations))
        assert cells[-5] == hits
        energy = run_energy(load_run(run))  # the report's figure
        shown = f"{format_kwh(energy['kwh'])} {format_carbon(energy['carbon_g'], '')}"
        assert cells[-4:] == shown.split()
    # two runs: not enough history to call anything a regression
    assert out[6] == "No regressions: too little history to check any task"
    assert out[7].startswith("Too little history: ")


def test_trends_of_one_task(runs):
    result = invoke("trends", "--task", "run_simulation", "--format", "json")
    data = json.loads(result.output)
    assert [r["run_id"] for r in data["runs"]] == [r.name for r in runs]
    first = sorted(
        t["duration_s"]
        for t in lines(runs[0] / "tasks.jsonl")
        if t["event"] == "task_completed" and t["task"] == "run_simulation"
    )
    assert data["runs"][0]["median_s"] == pytest.approx(statistics.median(first))
    assert data["tasks"][0]["verdict"] == "too little history"


def p95(values):
    """The 95th percentile as an observed value (the inverted CDF)."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def test_tutorial_step_6_advise_as_written(runs, demo_project):
    scalable = Path(sys.executable).parent / "scalable"
    command = [str(scalable)] if scalable.exists() else [sys.executable, "-m", "scalable_otel.cli"]
    done = subprocess.run(
        command + ["advise", "--task", "run_simulation"],
        cwd=demo_project,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    measured = [
        r
        for run in runs
        for r in lines(run / "resources.jsonl")
        if r["event"] == "task_resources" and r["task"] == "run_simulation"
    ]
    worker = lines(runs[-1] / "workers.jsonl")[0]
    per_thread = worker["memory_limit"] / worker["nthreads"]
    memory = format_memory(p95([r["peak_memory_bytes"] for r in measured]))
    cpus = [r["cpus_used"] for r in measured if r["cpus_used"] is not None]
    assert out[0] == "Resource Recommendation for 'run_simulation':"
    assert out[1] == f"  Current:           1 CPU, {format_memory(per_thread)} memory"
    assert out[2].startswith("  Recommended:       1 CPU, ")
    if cpus:
        usage = p95(cpus)
        # One decimal from one CPU up, as the tutorial's "1.8 CPUs"; two below it.
        usage_text = f"{usage:.1f}" if usage >= 1 else f"{usage:.2f}"
        reason = f"95th percentile usage is {usage_text} CPUs and {memory} memory"
    else:
        reason = f"95th percentile usage is {memory} memory"
    assert out[3].startswith(f"  Reason:            {reason}")
    assert out[4].startswith("  Potential savings: ") and out[4].endswith(
        "% compute cost reduction"
    )
    assert out[5] == f"  Confidence:        medium ({len(measured)} tasks over 2 runs)"


def test_advise_all_as_json(runs):
    result = invoke("advise", "--all", "--format", "json")
    data = json.loads(result.output)
    assert "run_simulation" in {a["task"] for a in data}


def test_export_parquet_of_the_last_and_of_all_runs(runs, demo_project, tmp_path):
    result = invoke("export", "--parquet", "--last")
    target = demo_project / ".scalable" / "parquet" / runs[-1].name
    name = runs[-1].name
    assert result.output == f"Exported 7 files of {name} to .scalable/parquet/{name}\n"
    assert sorted(p.name for p in target.iterdir()) == [
        f"{file}.parquet"
        for file in ("cache", "failures", "metrics", "resources", "run", "tasks", "workers")
    ]
    tasks = pq.read_table(target / "tasks.parquet")
    assert tasks.num_rows == len(lines(runs[-1] / "tasks.jsonl"))
    assert str(tasks.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    everything = invoke("export", "--parquet", "--all", "--out", tmp_path / "all")
    assert everything.output == f"Exported 2 runs to {tmp_path / 'all'}\n"
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == sorted(r.name for r in runs)


def test_report_writes_the_html_page_too(runs, tmp_path):
    page = tmp_path / "run.html"
    result = invoke("report", runs[0].name, "--html", page)
    assert result.exit_code == 0
    assert result.output.endswith(f"HTML report written to {page}\n")
    text = page.read_text()
    assert runs[0].name in text and 'id="timeline"' in text
