"""A crashed run says so wherever it is read: run.json's heartbeat, rewritten while the run
lives, lets a reader on another host call a run whose every process died `crashed`, with
"no sign of life since T" (`semconv.HEARTBEAT_STALE_S`)."""

from __future__ import annotations

import time

import orjson
from click.testing import CliRunner

import scalable_otel.semconv as sc
from scalable_otel import ScalableSession
from scalable_otel.analysis.load import run_status, silent_since
from scalable_otel.cli import main
from scalable_otel.rundir import iso, parse_iso, run_json
from tests import workloads

RUN_ID = "run-20260101T000000Z-remote-0123abcd"


def _remote_run(root, heartbeat: float) -> None:
    """A run.json as a compute node leaves it: running, written on another host."""
    meta = run_json(
        run_id=RUN_ID,
        project="remote",
        status=sc.RUN_RUNNING,
        started=heartbeat - 60,
        ended=None,
        target="slurm",
        provider="slurm",
        host="compute-node-that-is-not-here",
        pid=4242,
        process_start_time=None,
        manifest_hash="sha256:0",
        trace_id="0" * 32,
        exporters={},
        settings={},
        versions={},
        heartbeat=heartbeat,
    )
    run_dir = root / RUN_ID
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_bytes(orjson.dumps(meta))
    lines = [{"event": "task_submitted", "key": "a", "task": "a", "timestamp": iso(heartbeat)}]
    (run_dir / "tasks.jsonl").write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))


def _cli(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_silent_run_of_another_host_reads_as_crashed_in_report_and_runs(tmp_path):
    beat = time.time() - sc.HEARTBEAT_STALE_S - 60
    _remote_run(tmp_path, beat)
    since = iso(beat)
    report = _cli("report", RUN_ID, "--runs-dir", str(tmp_path))
    assert f"Status:    crashed (no sign of life since {since}" in report
    runs = _cli("runs", "--runs-dir", str(tmp_path))
    row = next(line for line in runs.splitlines() if line.startswith(RUN_ID))
    assert "crashed" in row.split()
    assert f"Note: {RUN_ID}: no sign of life since {since}" in runs
    (row,) = orjson.loads(_cli("runs", "--runs-dir", str(tmp_path), "--format", "json"))
    assert row["status"] == "crashed" and row["silent_since"] == since


def test_a_beating_run_of_another_host_reads_as_running(tmp_path):
    _remote_run(tmp_path, time.time())
    meta = orjson.loads((tmp_path / RUN_ID / "run.json").read_bytes())
    assert run_status(meta) == sc.RUN_RUNNING and silent_since(meta) is None
    assert "Status:    running" in _cli("report", RUN_ID, "--runs-dir", str(tmp_path))


def test_a_live_runs_heartbeat_advances(project_dir, monkeypatch):
    monkeypatch.setattr(sc, "HEARTBEAT_INTERVAL_S", 0.1)
    with ScalableSession(target="local", n_workers=1, project="beating") as s:
        path = s.run_dir / "run.json"
        first = orjson.loads(path.read_bytes())
        assert first["status"] == "running" and first["heartbeat_time"]
        deadline = time.monotonic() + 60
        while True:
            meta = orjson.loads(path.read_bytes())
            if parse_iso(meta["heartbeat_time"]) > parse_iso(first["heartbeat_time"]):
                break
            assert time.monotonic() < deadline, "the heartbeat did not advance"
            time.sleep(0.05)
        assert meta["status"] == "running" and meta["end_time"] is None
        assert s.gather(s.submit(workloads.inc, 1)) == 2
    meta = orjson.loads(path.read_bytes())
    # the last write is the end's: no beat after it
    assert meta["status"] == "completed" and meta["heartbeat_time"] == meta["end_time"]
