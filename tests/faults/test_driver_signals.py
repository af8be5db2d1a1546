"""SIGTERM (Slurm preempting or cancelling a job) and SIGINT (Ctrl-C) while a run is
recorded: the session flushes and closes, run.json says `interrupted`, the process exits
non-zero (143 for SIGTERM, by SIGINT for Ctrl-C as Python does), and the report reads it.
"""

import os
import signal
import threading
from pathlib import Path

import orjson
import psutil
import pytest
from distributed.diagnostics.plugin import SchedulerPlugin

from scalable_otel import ScalableSession
from scalable_otel.rundir import JSONL_FILES, list_runs
from tests import workloads
from tests.faults.harness import Driver, lines_of, scalable

# Python ends on an uncaught KeyboardInterrupt by SIGINT; a SIGTERM ends the session's
# process with SystemExit(143), 128 + 15, as a shell reports a process killed by SIGTERM.
EXIT = {signal.SIGTERM: 143, signal.SIGINT: -signal.SIGINT}


def check_interrupted(run_dir: Path, done: list, project: Path) -> dict:
    meta = orjson.loads((run_dir / "run.json").read_bytes())
    assert meta["status"] == "interrupted" and meta["end_time"] is not None
    assert meta["telemetry_lost"] is False and meta["telemetry_lines_dropped"] == 0
    for name in JSONL_FILES:
        assert lines_of(run_dir / name)[1] == b"", name  # closed: no line cut short
    tasks = lines_of(run_dir / "tasks.jsonl")[0]
    completed = {e["key"] for e in tasks if e["event"] == "task_completed"}
    assert {key for _, key in done} <= completed
    assert meta["tasks_completed"] == len(completed)
    ended = meta["tasks_completed"] + meta["tasks_failed"] + meta["tasks_cancelled"]
    assert ended == meta["tasks_submitted"] == 400
    report = scalable("report", str(run_dir.relative_to(project)), cwd=project)
    assert report.returncode == 0, report.stderr
    assert "Status:    interrupted\n" in report.stdout
    assert f"Completed:     {len(completed)}\n" in report.stdout
    return meta


@pytest.mark.parametrize(
    "signum, group",
    [
        pytest.param(signal.SIGTERM, False, id="SIGTERM-to-the-driver"),
        pytest.param(signal.SIGTERM, True, id="SIGTERM-to-the-process-group"),  # as Slurm
        pytest.param(signal.SIGINT, True, id="SIGINT-to-the-process-group"),  # Ctrl-C
    ],
)
def test_a_signal_closes_the_run_as_interrupted(signum, group, project_dir):
    driver = Driver(project_dir, "session", "--workers", "1", group=group)
    try:
        run_dir = Path(driver.wait_for(lambda line: "run_dir" in line)["run_dir"])
        driver.wait_done(10)
        recorder = driver.recorder()
        driver.signal(signum, group=group)
        assert driver.finish(60) == EXIT[signum], driver.stderr()[-3000:]
        # the telemetry process lived to write the end of the run, then ended
        psutil.wait_procs([recorder], timeout=15)
        assert not recorder.is_running()
        check_interrupted(run_dir, driver.done(), project_dir)
    finally:
        driver.cleanup()


def test_sigterm_to_a_plain_instrumented_client_leaves_an_interrupted_run(project_dir):
    """DaskInstrumentor's run of a client the code never closes is finished at exit."""
    driver = Driver(project_dir, "instrumented", "--workers", "1")
    try:
        driver.wait_done(10)
        driver.signal(signal.SIGTERM)
        assert driver.finish(60) == 143, driver.stderr()[-3000:]
        (run_dir,) = list_runs(project_dir / ".scalable" / "runs")
        check_interrupted(run_dir, driver.done(), project_dir)
    finally:
        driver.cleanup()


def test_the_handler_runs_the_previous_one_and_is_put_back(project_dir):
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(SystemExit) as exited:
            with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as s:
                assert s.gather(s.submit(workloads.inc, 1)) == 2
                assert signal.getsignal(signal.SIGTERM) is not previous
                os.kill(os.getpid(), signal.SIGTERM)
                threading.Event().wait(30)  # the handler raises here
        assert exited.value.code == 143 and calls == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)
    meta = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert meta["status"] == "interrupted" and meta["tasks_completed"] == 1


def test_a_session_outside_the_main_thread_leaves_sigterm_alone(project_dir):
    seen = []

    def run():
        with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as s:
            seen.append(signal.getsignal(signal.SIGTERM))
            s.gather(s.submit(workloads.inc, 1))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert seen == [signal.SIG_DFL] and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


class _TermWhenClosing(SchedulerPlugin):
    """Sends this process SIGTERM while the scheduler closes, i.e. inside session.close()."""

    async def close(self):
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_the_close_waits_for_the_close_to_finish(project_dir):
    with pytest.raises(SystemExit) as exited:
        with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as s:
            s.client.register_plugin(_TermWhenClosing())
            assert s.gather(s.submit(workloads.inc, 1)) == 2
    assert exited.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    meta = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert meta["status"] == "interrupted" and meta["end_time"] is not None
    assert meta["tasks_completed"] == 1 and meta["telemetry_lost"] is False
