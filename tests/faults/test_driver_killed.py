"""The workflow's own process (the driver) killed with SIGKILL in the middle of a run.

The session's telemetry process is a separate process: it sees the end of its pipe,
writes every line the driver had sent it, rewrites run.json as `crashed` (an end time,
the counts it knows) and exits, so the run directory keeps everything but the driver's
last flush interval, and says it crashed to a reader on any host.
"""

import signal
from pathlib import Path

import orjson
import psutil
import pytest

from scalable_otel.rundir import JSONL_FILES
from tests.faults.harness import Driver, lines_of, scalable

FLUSH_S = 0.2
# Beyond the flush interval: how late the driver's forwarding thread may wake on a
# loaded machine. An event older than both must be on disk.
SLACK_S = 0.25


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return tmp_path_factory.mktemp("killed")


@pytest.fixture(scope="module")
def killed_run(project):
    driver = Driver(project, "session", "--flush-interval", str(FLUSH_S))
    try:
        run_dir = Path(driver.wait_for(lambda line: "run_dir" in line)["run_dir"])
        driver.wait_done(25)
        recorder = driver.recorder()
        killed_at = driver.signal(signal.SIGKILL)
        assert driver.finish(30) == -signal.SIGKILL
        family = driver.remember_family()
        # the telemetry process finishes on its own, and nothing the driver started lingers
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, [p.pid for p in alive]
        yield run_dir, driver.done(), killed_at, recorder.pid
    finally:
        driver.cleanup()


def test_sigkill_loses_at_most_the_last_flush_interval(killed_run):
    run_dir, done, killed_at, _ = killed_run
    files = {}
    for name in JSONL_FILES + ("traces.otlp.jsonl",):
        # every line parses; the promise allows a last line cut short, but the telemetry
        # process outlives the driver and writes whole lines only
        lines, tail = lines_of(run_dir / name)
        assert tail == b"", name
        files[name] = lines
    completed = {e["key"] for e in files["tasks.jsonl"] if e["event"] == "task_completed"}
    old = [key for t, key in done if t < killed_at - FLUSH_S - SLACK_S]
    assert len(old) >= 8
    assert set(old) <= completed, sorted(set(old) - completed)
    # nothing is invented: what is completed on disk, the driver had or was about to have
    submitted = {e["key"] for e in files["tasks.jsonl"] if e["event"] == "task_submitted"}
    assert completed <= submitted and len(submitted) == 400
    # the telemetry process ended the tasks still open, and the workers, when it saw the end
    ended = [e for e in files["tasks.jsonl"] if e["event"] == "task_cancelled"]
    assert len(ended) == 400 - len(completed)
    assert {e["event"] for e in files["workers.jsonl"]} == {"worker_added", "worker_removed"}


def test_the_telemetry_process_writes_run_json_as_crashed(killed_run):
    run_dir, _, killed_at, _ = killed_run
    meta = orjson.loads((run_dir / "run.json").read_bytes())
    # written by the telemetry process: the driver died before it could write anything
    assert meta["status"] == "crashed" and meta["end_time"] is not None
    assert meta["heartbeat_time"] == meta["end_time"]
    assert meta["duration_s"] > 0 and meta["telemetry_lost"] is False
    # the counts the telemetry process knows: what it was sent (not final: readers count lines)
    completed = sum(e["event"] == "task_completed" for e in lines_of(run_dir / "tasks.jsonl")[0])
    assert meta["tasks_submitted"] == 400 and meta["tasks_completed"] == completed
    assert meta["telemetry_records_unhandled"] == 0


def test_the_report_calls_a_killed_run_crashed_with_what_it_finished(killed_run, project):
    run_dir, done, _, _ = killed_run
    completed = sum(e["event"] == "task_completed" for e in lines_of(run_dir / "tasks.jsonl")[0])
    assert completed >= len(done) - 5  # the driver's last interval at most
    report = scalable("report", str(run_dir.relative_to(project)), cwd=project)
    assert report.returncode == 0, report.stderr
    assert "Status:    crashed (the run's process died" in report.stdout
    assert f"Completed:     {completed}\n" in report.stdout
    assert "Submitted:     400\n" in report.stdout


def test_the_trace_of_a_killed_run_says_it_crashed(killed_run):
    run_dir = killed_run[0]
    (run_span,) = [
        span
        for line in lines_of(run_dir / "traces.otlp.jsonl")[0]
        for resource in line["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
        if span["name"] == "scalable.run"
    ]
    attributes = {a["key"]: a["value"]["stringValue"] for a in run_span["attributes"]}
    assert attributes["scalable.run.status"] == "crashed"
    assert run_span["status"] == {"code": 2, "message": "crashed"}
