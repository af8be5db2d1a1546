"""Secrets planted wherever a run can take them from are absent from everything it leaves.

One real session (a LocalCluster with worker processes, in a driver subprocess) is given:
a task keyword argument `password=`, a task's error message `token=...`, exceptions and
an error status on spans user code makes inside a task (holding also a record number
that only the user's `Redaction(values=...)` calls secret), credentials in the userinfo of
the OTLP metrics endpoint and of the Pushgateway URL, an OTLP header, and an environment
variable never used. None of them may appear in any file under the project (the run
directory, recursively, raw bytes), in the HTML report (`scalable report --html`), in the
Parquet export (`scalable export --parquet`), in what a real OTLP receiver got (gRPC
trace and logs services built from opentelemetry-proto's definitions, in this process:
the failures' log records carry their tracebacks), nor in
anything the driver or those commands printed. Each secret is also checked to have been
used, so that its absence means something.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from scalable_otel.cli import main
from tests.conftest import REPO, events

SECRETS = {
    "task argument": "argsecret-5be1d0",
    "task error message": "tokensecret-93ac4f",
    "exception on a span in a task": "spansecret-c07e12",
    "OTLP endpoint userinfo": "urlsecret-61d8a3",
    "Pushgateway userinfo": "pgsecret-0f4b77",
    "OTLP header": "headersecret-2e9d58",
    "environment variable": "envsecret-4a6c31",
    "record number, a secret by the user's rules": "MRN-70211960",
}

DRIVER = """
import os
from scalable_otel import RecordingOptions, Redaction, ScalableSession
from tests import workloads

with ScalableSession(
    project="secrets",
    n_workers=2,
    threads_per_worker=1,
    recording=RecordingOptions(flush_interval=0.05),
    redaction=Redaction(values=[r"MRN-\\d{8}"]),
) as session:
    connected = session.submit(workloads.connect, "db", password=os.environ["APP_ARG"])
    assert connected.result() == "connected to db"
    for fn, args in ((workloads.fail_with_token, ()), (workloads.traced_login, ("db",))):
        try:
            session.submit(fn, *args).result()
        except Exception:
            pass
        else:
            raise SystemExit(fn.__name__ + " did not fail")
print("recorded", session.run_dir.name)
"""


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver keeping each request's bytes and metadata."""

    def __init__(self):
        self.requests: list[bytes] = []
        self.metadata: list[dict] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            self.requests.append(request.SerializeToString())
            self.metadata.append(dict(context.invocation_metadata()))
        return trace_service_pb2.ExportTraceServiceResponse()

    def span_names(self) -> set[str]:
        names = set()
        for raw in self.requests:
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
            for resource_spans in request.resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    names.update(span.name for span in scope_spans.spans)
        return names


class LogsReceiver(logs_service_pb2_grpc.LogsServiceServicer):
    """An OTLP/gRPC logs receiver keeping each request's bytes."""

    def __init__(self):
        self.requests: list[bytes] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            self.requests.append(request.SerializeToString())
        return logs_service_pb2.ExportLogsServiceResponse()

    def event_names(self) -> list[str]:
        names = []
        for raw in self.requests:
            request = logs_service_pb2.ExportLogsServiceRequest.FromString(raw)
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    names.extend(record.event_name for record in scope_logs.log_records)
        return names


def refusing_port() -> tuple[socket.socket, int]:
    """A port bound and not listening: connections to it are refused while it is held."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@pytest.fixture(scope="module")
def leftovers(tmp_path_factory):
    """Everything one run with planted secrets left: files, prints, what OTLP got."""
    project = tmp_path_factory.mktemp("secrets")
    receiver = TraceReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    logs = LogsReceiver()
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(logs, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    metrics_sock, metrics_port = refusing_port()
    gateway_sock, gateway_port = refusing_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    env.update(
        PYTHONPATH=str(REPO),
        APP_ARG=SECRETS["task argument"],
        APP_API_TOKEN=SECRETS["task error message"],
        APP_DB_PASSWORD=SECRETS["exception on a span in a task"],
        APP_PATIENT=SECRETS["record number, a secret by the user's rules"],
        DATABASE_URL=f"postgres://ann:{SECRETS['environment variable']}@db/app",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{grpc_port}",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS=f"x-api-key={SECRETS['OTLP header']}",
        OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"http://127.0.0.1:{grpc_port}",
        OTEL_EXPORTER_OTLP_LOGS_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=(
            f"http://otlp:{SECRETS['OTLP endpoint userinfo']}@127.0.0.1:{metrics_port}/v1/metrics"
        ),
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL="http/protobuf",
        SCALABLE_PUSHGATEWAY_URL=(
            f"http://pg:{SECRETS['Pushgateway userinfo']}@127.0.0.1:{gateway_port}"
        ),
    )
    try:
        driver = subprocess.run(
            [sys.executable, "-c", DRIVER],
            cwd=project,
            env=env,
            capture_output=True,
            timeout=240,
        )
    finally:
        server.stop(grace=None)
        metrics_sock.close()
        gateway_sock.close()
    assert driver.returncode == 0, driver.stderr.decode(errors="replace")[-3000:]
    runs_dir = project / ".scalable" / "runs"
    (run_dir,) = runs_dir.iterdir()
    cli = CliRunner()
    report = cli.invoke(
        main,
        ["report", "--last", "--runs-dir", str(runs_dir), "--html", str(project / "run.html")],
    )
    assert report.exit_code == 0, report.output
    export = cli.invoke(
        main,
        [
            "export",
            "--parquet",
            "--last",
            "--runs-dir",
            str(runs_dir),
            "--out",
            str(project / "pq"),
        ],
    )
    assert export.exit_code == 0, export.output
    return {
        "project": project,
        "run_dir": run_dir,
        "driver": driver,
        "printed": driver.stdout + driver.stderr + report.output.encode() + export.output.encode(),
        "receiver": receiver,
        "logs": logs,
        "ports": (metrics_port, gateway_port),
    }


def leaked(data: bytes) -> list[str]:
    return [what for what, secret in SECRETS.items() if secret.encode() in data]


def test_no_secret_in_any_file_the_run_or_its_exports_wrote(leftovers):
    files = [p for p in leftovers["project"].rglob("*") if p.is_file()]
    assert any(p.name == "traces.otlp.jsonl" for p in files)
    assert any(p.suffix == ".parquet" for p in files)
    assert (leftovers["project"] / "run.html").is_file()
    found = {str(p.relative_to(leftovers["project"])): leaked(p.read_bytes()) for p in files}
    assert {path: what for path, what in found.items() if what} == {}


def test_the_secrets_were_there_to_be_redacted(leftovers):
    run_dir = leftovers["run_dir"]
    submitted = {e["task"]: e["args"] for e in events(run_dir, event="task_submitted")}
    assert submitted["connect"] == {"host": "db", "password": "[redacted]"}
    failures = {f["task"]: f["error_message"] for f in events(run_dir, "failures.jsonl")}
    assert failures == {
        "fail_with_token": "token=[redacted]",
        "traced_login": "login to https://ann:[redacted]@db failed for [redacted]",
    }
    spans = (run_dir / "traces.otlp.jsonl").read_bytes()
    # the recorded exception's message
    assert b"refused password=[redacted] for [redacted]" in spans
    assert b"refused: password=[redacted]" in spans  # the span's status
    metrics_port, gateway_port = leftovers["ports"]
    exporters = json.loads((run_dir / "run.json").read_text())["exporters"]
    assert exporters["otlp_metrics"] == (
        f"http://127.0.0.1:{metrics_port}/v1/metrics (http/protobuf)"
    )
    assert exporters["pushgateway"] == f"http://127.0.0.1:{gateway_port}"


def test_no_secret_in_what_the_otlp_receiver_got(leftovers):
    receiver = leftovers["receiver"]
    assert {"retry", "login", "scalable.run"} <= receiver.span_names()
    assert leaked(b"".join(receiver.requests)) == []
    # the header reached the receiver as a header, and nowhere else
    assert {m.get("x-api-key") for m in receiver.metadata} == {SECRETS["OTLP header"]}


def test_no_secret_in_the_log_records_the_otlp_receiver_got(leftovers):
    names = leftovers["logs"].event_names()
    assert names.count("task_failed") == 2  # the failures, their messages and tracebacks
    assert "worker_added" in names
    sent = b"".join(leftovers["logs"].requests)
    assert b"token=[redacted]" in sent  # the failure's message, as failures.jsonl has it
    assert leaked(sent) == []


def test_no_secret_in_what_the_session_printed(leftovers):
    printed = leftovers["printed"]
    metrics_port, gateway_port = leftovers["ports"]
    # the failures were told, naming their endpoints without credentials
    assert f"OTLP metrics to http://127.0.0.1:{metrics_port}/v1/metrics".encode() in printed
    assert f"Pushgateway at http://127.0.0.1:{gateway_port}".encode() in printed
    # Dask's worker logged the failed task, its message cleaned by the run's rules
    assert b"Compute Failed" in printed and b"token=[redacted]" in printed
    assert leaked(printed) == []
