"""One truth: every reader of a run directory gives the same task and cache counts.

A plain case first (the hand-made run of issue 11), then a property test over run
directories built by hypothesis, consistent and inconsistent."""

from __future__ import annotations

import json

from click.testing import CliRunner

from scalable_otel.analysis import load_run, report
from scalable_otel.analysis.runs import list_run_summaries
from scalable_otel.analysis.trends import trends
from scalable_otel.cli import main

LOST_RUN = "run-20260101T000000Z-lost-0000000a"


def _lost_run(root):
    """run.json says completed with 0 tasks, but its telemetry was lost: tasks.jsonl has 3."""
    run = root / LOST_RUN
    run.mkdir(parents=True)
    meta = {
        "run_id": LOST_RUN,
        "status": "completed",
        "start_time": "2026-01-01T00:00:00.000000Z",
        "end_time": "2026-01-01T00:01:00.000000Z",
        "duration_s": 60.0,
        "target": "local",
        "provider": "local",
        "telemetry_lost": True,
        "tasks_submitted": 0,
        "tasks_completed": 0,
        "tasks_failed": 0,
    }
    (run / "run.json").write_text(json.dumps(meta))
    stamp = "2026-01-01T00:00:01.000000Z"
    with open(run / "tasks.jsonl", "w") as f:
        for i in range(3):
            line = {"timestamp": stamp, "task": "t", "key": f"t-{i}"}
            f.write(json.dumps({**line, "event": "task_submitted"}) + "\n")
            f.write(json.dumps({**line, "event": "task_completed", "duration_s": 1.0}) + "\n")
    return run


def test_a_run_whose_telemetry_was_lost_is_counted_from_its_lines(tmp_path):
    root = tmp_path / "runs"
    run = _lost_run(root)
    assert report(load_run(run))["tasks"]["completed"] == 3
    assert report(load_run(run))["tasks"]["submitted"] == 3
    assert list_run_summaries(root)[0]["tasks_completed"] == 3
    assert trends(root).runs[0].tasks_completed == 3

    cli = CliRunner()
    shown = cli.invoke(main, ["report", "--last", "--runs-dir", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "  Completed:     3\n" in shown.output
    listed = cli.invoke(main, ["runs", "--runs-dir", str(root)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[1].split()[-2:] == ["3", "0"]  # tasks, failed
    history = cli.invoke(main, ["trends", "--runs-dir", str(root)])
    assert history.exit_code == 0, history.output
    row = next(line for line in history.output.splitlines() if line.startswith(LOST_RUN))
    assert row.split()[5:7] == ["3", "0"]  # done, failed
