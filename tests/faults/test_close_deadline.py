"""A telemetry process stopped (SIGSTOP) for the whole run: a saturated machine at its
worst. The workflow finishes with its results, the records waiting in the driver stay
within their bound (the rest dropped and counted in run.json), and the session's close
keeps its one deadline (`RecordingOptions.close_timeout`), well inside Slurm's 30 s
between SIGTERM and SIGKILL."""

from __future__ import annotations

import os
import signal
import threading
import time

import orjson
import psutil
import pytest

import scalable_otel.queues as queues
from scalable_otel import RecordingOptions, ScalableSession
from tests import workloads

BOUND = 500  # small, so that a short run overflows it
CLOSE_TIMEOUT_S = 3.0
TASKS = 3000


@pytest.fixture
def stopped():
    """pids to SIGCONT and kill at the end, whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_stopped_telemetry_process_costs_records_never_the_workflow(
    project_dir, monkeypatch, caplog, stopped
):
    monkeypatch.setattr(queues, "RECORD_QUEUE_BOUND", BOUND)
    recording = RecordingOptions(close_timeout=CLOSE_TIMEOUT_S)
    session = ScalableSession(target="local", n_workers=2, project="stopped", recording=recording)
    longest = [0]
    done = threading.Event()
    with session as s:
        pid = s._recording.pid
        stopped.append(pid)
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while psutil.Process(pid).status() != psutil.STATUS_STOPPED:  # the signal is async
            assert time.monotonic() < deadline, "the telemetry process did not stop"
            time.sleep(0.01)
        source = s._recording._source  # the scheduler plugin's records, in this process

        def watch() -> None:
            while not done.is_set():
                longest[0] = max(longest[0], len(source))
                time.sleep(0.001)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        futures = s.map(workloads.inc, range(TASKS), pure=False)
        assert s.gather(futures) == list(range(1, TASKS + 1))
        assert source.dropped > 0  # the bound was reached while the tasks ran
        done.set()
        watcher.join()
        closing = time.monotonic()
    closed = time.monotonic() - closing
    assert longest[0] <= BOUND
    # the promise: the close's waits end by the deadline; Dask's own shutdown comes on top
    assert closed < CLOSE_TIMEOUT_S + 5.0, closed
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    meta = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert meta["status"] == "completed" and meta["telemetry_lost"] is True
    assert meta["telemetry_records_dropped"] >= source.dropped > 0
    dropped = [r for r in caplog.records if "falls behind" in r.getMessage()]
    assert len(dropped) == 1
