"""Run directories of the Scalable tool's own 2.0 betas (other field names, no worker
samples), built by hand from the format's description, read by report, runs, trends
and advise beside runs of ours."""

import json

import pytest
from click.testing import CliRunner

from scalable_otel.analysis import load_run, report
from scalable_otel.cli import main


def write_beta_run(root, name, started, durations, failed=(), hits=0, status="succeeded"):
    """A beta run: whole-second timestamps, `state`/`task_name`, cache `hit` booleans."""
    run = root / name
    run.mkdir(parents=True)
    finished = started.replace(":00Z", ":50Z")
    (run / "run.json").write_text(
        json.dumps(
            {
                "run_id": name,
                "started_at": started,
                "finished_at": finished,
                "target_name": "hpc",
                "provider_name": "slurm",
                "status": status,
            }
        )
    )
    total = len(durations) + len(failed)
    (run / "summary.json").write_text(
        json.dumps({"total_tasks": total, "succeeded": len(durations), "failed": len(failed)})
    )
    with open(run / "tasks.jsonl", "w") as f:
        for i, d in enumerate(list(durations) + list(failed)):
            base = {"timestamp": started, "event_type": "task", "task_name": "run_simulation"}
            f.write(json.dumps({**base, "state": "submitted", "task_id": f"t{i}"}) + "\n")
            f.write(json.dumps({**base, "state": "running", "task_id": f"t{i}"}) + "\n")
            end = "failed" if i >= len(durations) else "succeeded"
            f.write(json.dumps({**base, "state": end, "task_id": f"t{i}", "duration": d}) + "\n")
        f.write(json.dumps({"timestamp": started, "event_type": "run_finished"}) + "\n")
    with open(run / "cache.jsonl", "w") as f:
        for i in range(total):
            f.write(json.dumps({"timestamp": started, "hit": i < hits}) + "\n")
    return run


@pytest.fixture
def beta_root(tmp_path):
    root = tmp_path / "runs"
    write_beta_run(root, "run-20260101T000000Z-lulcc-00000001", "2026-01-01T00:00:00Z",
                   [4.0, 4.2, 3.8, 4.1], failed=[1.0])  # fmt: skip
    write_beta_run(root, "run-20260102T000000Z-lulcc-00000002", "2026-01-02T00:00:00Z",
                   [4.1, 3.9, 4.0, 4.2], hits=2)  # fmt: skip
    write_beta_run(root, "run-20260103T000000Z-lulcc-00000003", "2026-01-03T00:00:00Z",
                   [4.0, 4.0, 4.1, 3.9])  # fmt: skip
    write_beta_run(root, "run-20260104T000000Z-lulcc-00000004", "2026-01-04T00:00:00Z",
                   [6.1, 6.0, 6.3, 5.9])  # fmt: skip
    return root


def test_report_maps_the_fields_and_says_what_is_missing(beta_root):
    result = CliRunner().invoke(
        main, ["report", "run-20260101T000000Z-lulcc-00000001", "--runs-dir", str(beta_root)]
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Target:    hpc (provider: slurm)" in out
    assert "Duration:  50.0s" in out
    assert "Status:    completed" in out
    assert "  Submitted:     5\n  Completed:     4\n  Failed:        1\n" in out
    assert "  Avg duration:  4.0s\n  Max duration:  4.2s (run_simulation)\n" in out
    assert "  Avg utilization:  n/a" in out
    assert "  Lookups:  5\n  Hits:     0 (0%) — first run, no prior cache\n  Misses:   5" in out
    assert "Estimated Cost: unknown (no worker records in this run)" in out
    assert "Note: a Scalable 2.0 beta run: it has no worker or resource samples" in out
    assert "skipped" not in out  # the run_finished line is an event, not a bad line


def test_cache_hits_and_runs_listing(beta_root):
    summary = report(load_run(beta_root / "run-20260102T000000Z-lulcc-00000002"))
    assert summary["cache"]["hits"] == 2 and summary["cache"]["lookups"] == 4
    assert summary["cache"]["first_run"] is False
    result = CliRunner().invoke(main, ["runs", "--runs-dir", str(beta_root)])
    lines = result.output.splitlines()
    assert len(lines) == 5
    assert lines[1].split()[:6] == [
        "run-20260101T000000Z-lulcc-00000001", "2026-01-01", "00:00:00", "?", "hpc", "completed",
    ]  # fmt: skip
    assert lines[1].split()[-3:] == ["50.0s", "5", "1"]


def test_trends_flag_the_slow_run_and_advise_says_it_cannot(beta_root):
    result = CliRunner().invoke(main, ["trends", "--task", "run_simulation",
                                       "--runs-dir", str(beta_root)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Regression: run_simulation median 4.0s → 6.0s (+" in result.output
    assert "since run-20260104T000000Z-lulcc-00000004" in result.output
    advice = CliRunner().invoke(main, ["advise", "--task", "run_simulation",
                                       "--runs-dir", str(beta_root)])  # fmt: skip
    assert advice.exit_code == 2
    assert len(advice.output.splitlines()) == 1
    assert "4 of the 4 runs are Scalable 2.0 beta runs, which measured no per-task" in (
        advice.output
    )


def test_beta_and_our_runs_side_by_side(beta_root, demo_run):
    import shutil

    shutil.copytree(demo_run, beta_root / demo_run.name)
    result = CliRunner().invoke(main, ["runs", "--runs-dir", str(beta_root)])
    assert result.exit_code == 0
    assert demo_run.name in result.output.splitlines()[-1]
    compared = CliRunner().invoke(
        main,
        ["report", "--compare", "run-20260103T000000Z-lulcc-00000003",
         demo_run.name, "--runs-dir", str(beta_root)],
    )  # fmt: skip
    assert compared.exit_code == 0, compared.output
    assert "Verdict: " in compared.output
