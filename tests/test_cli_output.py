"""Exact output of `scalable report`, `report --compare` and `runs` on runs made by the
real SDK. The expected text is computed here, independently, from the run's raw files."""

import json
import statistics
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalable_otel.cli import main
from scalable_otel.rundir import list_runs


def lines(path):
    return [json.loads(raw) for raw in Path(path).read_text().splitlines() if raw.strip()]


def epoch(stamp):
    return datetime.fromisoformat(stamp).timestamp()


def secs(value):
    if abs(value) >= 1:
        return f"{value:.1f}s"
    return f"{value:.3f}s" if abs(value) >= 0.001 or value == 0 else f"{value * 1e6:.0f}µs"


def expected_energy(run: Path) -> str:
    """The Green Algorithms estimate (no RAPL counter on this machine), by the method:
    per worker, uptime x (busy cores x 12 W + memory limit GB x 0.3725 W) x PUE 1.67, busy
    cores being the time-weighted cpu_percent / 100 of its samples, each covering the time
    since the previous sample (the first: since the worker was added)."""
    workers = lines(run / "workers.jsonl")
    samples = [r for r in lines(run / "resources.jsonl") if r["event"] == "resource_sample"]
    joules = 0.0
    for added in (w for w in workers if w["event"] == "worker_added"):
        (end,) = [
            w for w in workers if w["event"] != "worker_added" and w["span_id"] == added["span_id"]
        ]
        previous, busy_s, span_s = epoch(added["timestamp"]), 0.0, 0.0
        for sample in sorted(
            (x for x in samples if x["worker"] == added["worker"]), key=lambda x: x["timestamp"]
        ):
            dt = epoch(sample["timestamp"]) - previous
            previous = epoch(sample["timestamp"])
            if dt > 0:
                busy_s, span_s = busy_s + sample["cpu_percent"] / 100 * dt, span_s + dt
        busy = busy_s / span_s if span_s else added["nthreads"]
        watts = busy * 12 + added["memory_limit"] / 2**30 * 0.3725
        joules += end["uptime_s"] * watts * 1.67
    kwh, grams = joules / 3.6e6, joules / 3.6e6 * 475
    shown = f"{kwh * 1e3:.3g} Wh" if kwh >= 1e-3 else f"{kwh * 1e6:.3g} mWh"
    return (
        f"Energy:         {shown}, {grams:.3g} g CO2e "
        "(Green Algorithms estimate; PUE 1.67, 475 g/kWh, 12 W/core)"
    )


def miss_reasons(cache: list[dict], first_run: bool) -> str:
    """What follows the misses: their reasons in order, unless all are `first` on a first
    run (the hits line says it) or none is known."""
    misses = [c for c in cache if c["result"] != "hit"]
    order = ["first", "arguments", "code", "evicted", "corrupt", "unknown"]
    reasons = Counter(
        c.get("miss_reason") if c.get("miss_reason") in order else "unknown" for c in misses
    )
    if set(reasons) <= {"unknown"} or (set(reasons) == {"first"} and first_run):
        return ""
    names = Counter(
        n for c in misses if c.get("miss_reason") == "arguments" for n in c["miss_arguments"]
    )
    parts = []
    for reason in (r for r in order if reasons[r]):
        part = f"{reason} {reasons[reason]}"
        if reason == "arguments" and names:
            part += ": " + "/".join(sorted(names, key=lambda n: (-names[n], n))[:5])
        parts.append(part)
    return f" ({', '.join(parts)})"


def expected_report(run: Path, first_run: bool) -> str:
    """The report, from run.json and the JSONL files, by the tutorial's definitions."""
    meta = json.loads((run / "run.json").read_text())
    tasks = lines(run / "tasks.jsonl")
    done = [t for t in tasks if t["event"] == "task_completed"]
    worked = done + [t for t in tasks if t["event"] == "task_failed"]
    slowest = max(done, key=lambda t: t["duration_s"])
    detail = ", ".join([slowest["task"]] + [f"{k}={v}" for k, v in (slowest["args"] or {}).items()])
    workers = lines(run / "workers.jsonl")
    ends = {w["span_id"]: epoch(w["timestamp"]) for w in workers if w["event"] != "worker_added"}
    capacity = sum(
        (ends[w["span_id"]] - epoch(w["timestamp"])) * w["nthreads"]
        for w in workers
        if w["event"] == "worker_added"
    )
    busy = sum(t["duration_s"] for t in worked)
    cache = lines(run / "cache.jsonl")
    hits = sum(c["result"] == "hit" for c in cache)
    hit_line = f"{hits} ({100 * hits / len(cache):.0f}%)"
    if first_run:
        hit_line += " — first run, no prior cache"
    return "\n".join(
        [
            "═" * 47,
            f"Run Report: {meta['run_id']}",
            "═" * 47,
            "Target:    local (provider: local)",
            f"Duration:  {secs(meta['duration_s'])}",
            f"Status:    {meta['status']}",
            "",
            "Tasks:",
            f"  Submitted:     {sum(t['event'] == 'task_submitted' for t in tasks)}",
            f"  Completed:     {len(done)}",
            f"  Failed:        {sum(t['event'] == 'task_failed' for t in tasks)}",
            f"  Avg duration:  {secs(statistics.fmean(t['duration_s'] for t in done))}",
            f"  Max duration:  {secs(slowest['duration_s'])} ({detail})",
            "",
            "Workers:",
            "  Peak:             2",
            f"  Avg utilization:  {100 * busy / capacity:.0f}%",
            "",
            "Cache:",
            f"  Lookups:  {len(cache)}",
            f"  Hits:     {hit_line}",
            f"  Misses:   {len(cache) - hits}" + miss_reasons(cache, first_run),
            "",
            "Estimated Cost: $0.00 (local provider)",
            expected_energy(run),
            "",
        ]
    )


@pytest.fixture
def runs(demo_project):
    return list_runs(demo_project / ".scalable" / "runs")


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_report_output_is_exact_for_both_runs(demo_project, runs, monkeypatch):
    monkeypatch.chdir(demo_project)
    first = invoke("report", runs[0].name)
    assert first.exit_code == 0
    assert first.output == expected_report(runs[0], first_run=True)
    last = invoke("report", "--last")
    assert last.exit_code == 0
    assert last.output == expected_report(runs[1], first_run=False)


def test_report_by_path_and_run_id_option(demo_project, runs, monkeypatch):
    monkeypatch.chdir(demo_project)
    by_path = invoke("report", str(runs[0]))
    by_option = invoke("report", "--run-id", runs[0].name[:-3])
    assert by_path.output == by_option.output == expected_report(runs[0], first_run=True)


def _pct(a, b):
    return f"({100 * (b - a) / a:+.0f}%)"


def test_compare_output(demo_project, runs, monkeypatch):
    monkeypatch.chdir(demo_project)
    result = invoke("report", "--compare", runs[0].name, runs[1].name)
    assert result.exit_code == 0
    out = result.output.splitlines()
    metas = [json.loads((r / "run.json").read_text()) for r in runs]
    assert out[:6] == [
        "═" * 72,
        "Run Comparison",
        f"  A: {runs[0].name} (failed)",
        f"  B: {runs[1].name} (failed)",
        "═" * 72,
        f"{'':<20}{'A':>14}{'B':>14}  Change",
    ]
    duration_a, duration_b = metas[0]["duration_s"], metas[1]["duration_s"]
    sign = "+" if duration_b >= duration_a else "-"
    change = f"{sign}{secs(abs(duration_b - duration_a))} {_pct(duration_a, duration_b)}"
    assert out[6] == f"{'Duration':<20}{secs(duration_a):>14}{secs(duration_b):>14}  {change}"
    submitted = metas[0]["tasks_submitted"]
    assert out[7] == f"{'Tasks submitted':<20}{submitted:>14}{submitted:>14}  +0 (+0%)"
    assert out[9] == f"{'Tasks failed':<20}{2:>14}{2:>14}  +0 (+0%)"
    assert out[11] == f"{'Peak workers':<20}{2:>14}{2:>14}  +0 (+0%)"
    assert out[13] == f"{'Cache hit rate':<20}{'0%':>14}{'93%':>14}  +93 pts"
    assert out[14] == f"{'Tasks from cache':<20}{0:>14}{28:>14}  +28"
    saved = sum(c["saved_s"] for c in lines(runs[1] / "cache.jsonl") if c["result"] == "hit")
    assert out[15] == f"{'Time cache saved':<20}{secs(0.0):>14}{secs(saved):>14}  +{secs(saved)}"
    assert out[16] == f"{'Estimated cost':<20}{'$0.00':>14}{'$0.00':>14}  +0.00"
    sims = [
        sorted(t["duration_s"] for t in lines(r / "tasks.jsonl") if t["event"] == "task_completed"
               and t["task"] == "run_simulation")
        for r in runs
    ]  # fmt: skip
    row = next(line for line in out if line.startswith("  run_simulation"))
    # B's simulations all came from its cache: none executed, nothing to test
    assert row == (
        f"  {'run_simulation':<26}{f'{secs(statistics.median(sims[0]))} (28)':>16}"
        f"{'- (0)':>16}  {'':<8}{'cache 0/28':<14}too few samples"
    )
    # the cached simulations held nearly all of A's task time: B is faster from the cache,
    # not because run_simulation ran faster
    assert out[-1] == (
        "Verdict: B is faster, from the cache: 28 of 28 run_simulation tasks came from B's "
        f"cache (saved {secs(saved)}); the executions show no clear change."
    )


def test_compare_json_has_the_test_statistics(demo_project, runs, monkeypatch):
    monkeypatch.chdir(demo_project)
    result = invoke("report", "--compare", runs[0].name, runs[1].name, "--format", "json")
    data = json.loads(result.output)
    sim = next(t for t in data["tasks"] if t["task"] == "run_simulation")
    assert sim["completed_a"] == sim["completed_b"] == sim["n_a"] == sim["cached_b"] == 28
    assert sim["n_b"] == sim["cached_a"] == 0 and sim["p_value"] is None
    assert sim["median_all_b_s"] < sim["median_all_a_s"] / 10  # a lookup, not an execution
    chunks = next(t for t in data["tasks"] if t["task"] == "mean_chunk")
    assert chunks["n_a"] == chunks["n_b"] == 16 and 0 <= chunks["p_value"] <= 1
    assert 0 <= chunks["prob_b_faster"] <= 1
    assert data["verdict"]["verdict"] == "faster from the cache"
    assert data["verdict"]["executions_verdict"] == "no clear difference"
    assert data["figures"]["tasks_failed"] == {"a": 2, "b": 2, "change": 0, "change_pct": 0.0}


def test_runs_output(demo_project, runs, monkeypatch):
    monkeypatch.chdir(demo_project)
    result = invoke("runs")
    assert result.exit_code == 0
    width = len(runs[0].name)
    expected = [
        f"{'RUN':<{width}}  {'START (UTC)':<19}  {'PROJECT':<14}  {'TARGET':<8}  "
        f"{'STATUS':<11}  {'DURATION':>9}  {'TASKS':>6}  {'FAILED':>6}"
    ]
    for run in runs:
        meta = json.loads((run / "run.json").read_text())
        tasks = meta["tasks_completed"] + meta["tasks_failed"]
        expected.append(
            f"{run.name}  {meta['start_time'][:19].replace('T', ' ')}  {'quickstart':<14}  "
            f"{'local':<8}  {'failed':<11}  {secs(meta['duration_s']):>9}  {tasks:>6}  {2:>6}"
        )
    assert result.output.splitlines() == expected
    limited = invoke("runs", "--limit", "1")
    assert limited.output.splitlines() == [expected[0], expected[2]]


def test_tutorial_step_3_commands_as_written(demo_project, runs):
    """`scalable report --last` and `scalable report --compare A B`, as a user types them."""
    scalable = Path(sys.executable).parent / "scalable"
    command = [str(scalable)] if scalable.exists() else [sys.executable, "-m", "scalable_otel.cli"]
    last = subprocess.run(
        command + ["report", "--last"], cwd=demo_project, capture_output=True, text=True
    )
    assert last.returncode == 0, last.stderr
    assert last.stdout == expected_report(runs[1], first_run=False)
    compare = subprocess.run(
        command + ["report", "--compare", runs[0].name, runs[1].name],
        cwd=demo_project,
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stderr
    assert compare.stdout.startswith("═" * 72 + "\nRun Comparison\n")
