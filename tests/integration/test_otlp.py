"""OTLP export to a real trace receiver (Phoenix), over HTTP and gRPC, configured by
session arguments or OTel's variables; and backends that refuse or never answer."""

import json
import logging
import socket
import threading
import time

import pytest

from scalable_otel import ExportOptions, RecordingOptions, ScalableSession
from tests import workloads
from tests.conftest import events
from tests.integration.phoenix import phoenix  # noqa: F401  (the fixture)
from tests.test_task_context import traced_work


def run_json(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def check_backend_has_the_run(backend, run_dir):
    """Every task span of tasks.jsonl, with its parent, and the spans made inside tasks."""
    meta = run_json(run_dir)
    done = events(run_dir, event="task_completed")
    # run span + a task span and an execute span per task + 2 user spans per traced task
    workers = len(events(run_dir, "workers.jsonl", "worker_added"))
    expected = 1 + 2 * len(done) + 2 * 2 + workers
    spans = {s["span_id"]: s for s in backend.spans(meta["trace_id"], expect=expected)}
    run_span = next(s for s in spans.values() if s["name"] == "scalable.run")
    for line in done:
        span = spans[line["span_id"]]
        assert span["parent_span_id"] == run_span["span_id"] == line["parent_span_id"]
        assert span["name"] == line["task"]
    for span in (s for s in spans.values() if s["name"] == "prepare"):
        assert spans[span["parent_span_id"]]["name"] == "traced_work"
    ports = (f"127.0.0.1:{backend.port}/v1/traces", f"127.0.0.1:{backend.grpc_port} ")
    assert any(port in meta["exporters"]["otlp_traces"] for port in ports)
    assert meta["telemetry_spans_dropped"] == 0


def test_otlp_http_from_session_arguments(phoenix, project_dir):  # noqa: F811
    with ScalableSession(
        target="local",
        n_workers=1,
        project="otlp-http",
        exports=ExportOptions(
            otlp_endpoint=phoenix.base_url,
            otlp_protocol="http/protobuf",
            metrics_exporter="none",  # Phoenix takes traces only
        ),
    ) as session:
        session.gather(session.map(traced_work, range(2)))
        session.gather(session.map(workloads.sleep_then, [1, 2], seconds=0.05))
    check_backend_has_the_run(phoenix, session.run_dir)


def test_otlp_grpc_from_the_environment(phoenix, project_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix.grpc_endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
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


@pytest.mark.parametrize("backend", ["refuses", "never answers"])
def test_a_backend_down_costs_the_run_nothing_but_its_spans(
    backend, project_dir, caplog, monkeypatch
):
    server = SilentServer() if backend == "never answers" else None
    port = server.port if server else closed_port()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30000")  # longer than we ever wait
    try:
        with caplog.at_level(logging.WARNING):
            with ScalableSession(
                target="local",
                n_workers=1,
                project="down",
                exports=ExportOptions(otlp_endpoint=endpoint),
                # warnings of the recorder land in caplog
                recording=RecordingOptions(recorder="thread"),
            ) as session:
                session.gather(session.map(workloads.sleep_then, range(6), seconds=0.05))
                closing = time.monotonic()
            closed_in = time.monotonic() - closing
    finally:
        if server:
            server.close()
    meta = run_json(session.run_dir)
    assert meta["status"] == "completed" and meta["tasks_completed"] == 6
    assert len(events(session.run_dir, event="task_completed")) == 6
    assert meta["telemetry_spans_dropped"] > 0
    assert closed_in < 30  # the close did not wait out the exporter's timeout
    warnings = [r.getMessage() for r in caplog.records if endpoint in r.getMessage()]
    assert len(warnings) <= 2 and warnings, caplog.text  # one per signal at most
    assert all("the run directory is complete" in w for w in warnings)
