"""Telemetry processes started ahead (`recording.SPARES`) for the runs of instrumented
clients: taken by runs, never left behind, never taken with another environment."""

import os
import signal
import subprocess
import sys
import textwrap

import orjson
import psutil
from distributed import Client

from scalable_otel import RecordingOptions
from scalable_otel.children import child_env
from scalable_otel.recording import SPARES, _spawn
from scalable_otel.rundir import list_runs
from tests import workloads
from tests.conftest import REPO, wait_for


def recorder_processes() -> set[int]:
    """The pids of this process's telemetry processes (spares included)."""
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "scalable_otel._recorder_main" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_instrumented_clients_take_spares_and_uninstrument_ends_the_last(
    cluster, instrumentor, project_dir
):
    instrumentor.instrument(runs_dir=project_dir / "runs", project="spare")
    first_spare = SPARES.pids[0]
    assert set(SPARES.pids) <= recorder_processes()  # started at instrument()
    recorders = []
    for n in range(3):
        with Client(cluster) as client:
            session = instrumentor._session_of(client)
            recorders.append(session._recording.pid)
            assert client.submit(workloads.inc, n).result() == n + 1
            # the next runs', started ahead
            assert len(SPARES.pids) == 2 and not set(SPARES.pids) & set(recorders)
    assert recorders[0] == first_spare  # each run took the oldest spare
    spares = SPARES.pids
    instrumentor.uninstrument()
    assert SPARES.pids == []
    wait_for(lambda: all(gone(pid) for pid in spares))
    assert not recorder_processes() & {*spares, *recorders}
    runs = list_runs(project_dir / "runs")
    assert len(runs) == 3
    for run_dir in runs:
        run = orjson.loads((run_dir / "run.json").read_bytes())
        assert run["status"] == "completed" and run["tasks_completed"] == 1


def test_a_spare_started_in_another_environment_is_not_taken(
    cluster, instrumentor, project_dir, monkeypatch
):
    instrumentor.instrument(runs_dir=project_dir / "runs", project="spare")
    stale = SPARES.pids
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=spare-test")
    with Client(cluster) as client:
        session = instrumentor._session_of(client)
        assert session._recording.pid not in stale
        assert client.submit(workloads.inc, 1).result() == 2
    wait_for(lambda: all(gone(pid) for pid in stale))


def test_a_spare_started_during_another_test_is_taken(
    cluster, instrumentor, project_dir, monkeypatch
):
    """pytest names the test phase running now in PYTEST_CURRENT_TEST, which no telemetry
    process reads: a suite's clients take the spares started in the tests before theirs."""
    instrumentor.instrument(runs_dir=project_dir / "runs", project="spare")
    oldest = SPARES.pids[0]
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_next.py::test_next (call)")
    with Client(cluster) as client:
        assert instrumentor._session_of(client)._recording.pid == oldest
        assert client.submit(workloads.inc, 1).result() == 2


def test_no_spare_without_a_child_process_recorder(cluster, instrumentor, project_dir):
    instrumentor.instrument(
        runs_dir=project_dir / "runs", recording=RecordingOptions(recorder="thread")
    )
    with Client(cluster) as client:
        assert client.submit(workloads.inc, 1).result() == 2
        assert SPARES.pids == [] and not recorder_processes()


def test_a_spare_ends_when_its_pipe_ends():
    process, conn = _spawn(child_env())
    conn.close()  # what the parent's death does
    assert process.wait(timeout=60) == 0


def test_a_spare_ends_when_its_parent_is_killed(project_dir):
    """The parent killed with SIGKILL: its spare sees the end of its pipe and exits."""
    script = textwrap.dedent(
        """
        import sys, time
        from scalable_otel.instrumentor import DaskInstrumentor
        from scalable_otel.recording import SPARES
        DaskInstrumentor().instrument(runs_dir="runs")
        print(SPARES.pids[0], flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        spare = psutil.Process(int(parent.stdout.readline()))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)
        spare.wait(timeout=60)  # it exits by itself (reparented: not ours to reap)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
