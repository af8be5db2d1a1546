"""OTLP export to a real trace receiver (Phoenix), over HTTP and gRPC, configured by
session arguments or OTel's variables; and backends that refuse or never answer."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scalable_otel import ExportOptions, ScalableSession
from scalable_otel.exporters.backends import CLOSE_WAIT_S
from tests import workloads
from tests.conftest import REPO, events
from tests.integration.otlp_checks import check_backend_has_the_run, run_json
from tests.integration.phoenix import phoenix  # noqa: F401  (the fixture)
from tests.test_task_context import traced_work

# what a close may take beyond the promised wait: a busy 2-core machine's scheduling
CLOSE_SLACK_S = 0.5 * CLOSE_WAIT_S


def test_otlp_http_from_session_arguments(phoenix, project_dir):  # noqa: F811
    with ScalableSession(
        target="local",
        n_workers=1,
        project="otlp-http",
        exports=ExportOptions(
            otlp_endpoint=phoenix.base_url,
            otlp_protocol="http/protobuf",
            metrics_exporter="none",  # Phoenix takes traces only
            logs_exporter="none",
        ),
    ) as session:
        session.gather(session.map(traced_work, range(2)))
        session.gather(session.map(workloads.sleep_then, [1, 2], seconds=0.05))
    check_backend_has_the_run(phoenix, session.run_dir)


def test_otlp_grpc_from_the_environment(phoenix, project_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix.grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20sekrit")
    with ScalableSession(target="local", n_workers=1, project="otlp-grpc") as session:
        session.gather(session.map(traced_work, range(2)))
    check_backend_has_the_run(phoenix, session.run_dir)
    for path in session.run_dir.iterdir():  # a header is a secret: never written down
        if path.is_file():
            assert b"sekrit" not in path.read_bytes(), path.name


class SilentServer:
    """Accepts TCP connections and never answers (a hung backend)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DOWN_DRIVER = """
import json, sys, time
from distributed import LocalCluster
from scalable_otel import ExportOptions, RecordingOptions, ScalableSession
from tests import workloads

def run(address, recorder, endpoint=None):
    exports = ExportOptions(otlp_endpoint=endpoint) if endpoint else None
    recording = RecordingOptions(recorder=recorder)
    with ScalableSession(address, project="down", exports=exports, recording=recording) as s:
        s.gather(s.map(workloads.sleep_then, range(6), seconds=0.05))
        closing = time.monotonic()
    return str(s.run_dir), time.monotonic() - closing

if __name__ == "__main__":
    endpoint, recorder = sys.argv[1:3]
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        run(cluster.scheduler_address, recorder)  # warm: imports, first connections
        _, base = run(cluster.scheduler_address, recorder)
        print("--- the run with OTLP ---", file=sys.stderr, flush=True)
        run_dir, closed_in = run(cluster.scheduler_address, recorder, endpoint)
    print(json.dumps({"run_dir": run_dir, "base_close": base, "closed_in": closed_in}))
"""


@pytest.mark.parametrize("recorder", ["process", "thread"])
@pytest.mark.parametrize("backend", ["refuses", "never answers"])
def test_a_backend_down_costs_the_run_nothing_but_its_spans(backend, recorder, project_dir):
    """Run in a driver process of its own, whose stderr is read: with the default
    (process) recorder the warnings come from the session's telemetry process. The close
    is timed against one of the same driver, on the same cluster, without OTLP."""
    server = SilentServer() if backend == "never answers" else None
    port = server.port if server else closed_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "30000"  # longer than we ever wait
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            [sys.executable, "-c", DOWN_DRIVER, endpoint, recorder],
            cwd=project_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        if server:
            server.close()
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.splitlines()[-1])
    run_dir = Path(said["run_dir"])
    meta = run_json(run_dir)
    assert meta["status"] == "completed" and meta["tasks_completed"] == 6
    assert len(events(run_dir, event="task_completed")) == 6
    assert meta["telemetry_spans_dropped"] > 0
    # the close waits nothing for a backend known down, CLOSE_WAIT_S for one that is silent
    # (traces and metrics side by side), beside what a close without OTLP takes
    wait = 0.0 if backend == "refuses" else CLOSE_WAIT_S
    allowed = said["base_close"] + wait + CLOSE_SLACK_S
    closed, base = said["closed_in"], said["base_close"]
    print(f"\n{backend}, {recorder} recorder: close {closed:.2f}s, without OTLP {base:.2f}s")
    assert said["closed_in"] <= allowed, (said, done.stderr[-3000:])
    printed = done.stderr.split("--- the run with OTLP ---", 1)[1]
    warnings = [line for line in printed.splitlines() if endpoint in line]
    assert 1 <= len(warnings) <= 3, printed[-3000:]  # one per signal at most
    assert all("the run directory is complete" in w for w in warnings), warnings
