"""traces.otlp.jsonl (OTLP/JSON spans) and its replay, with the SDK and local stand-in
receivers; tests/integration/test_replay.py replays into a real backend."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import orjson
import pytest
from click.testing import CliRunner
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Link, Status, StatusCode

from scalable_otel.analysis import replay as replay_module
from scalable_otel.analysis.replay import ReplayError, replay, resolve_endpoint
from scalable_otel.cli import main
from scalable_otel.errors import ScalableError
from scalable_otel.exporters.otlp_json import (
    TRACES_FILE,
    OtlpJsonSpanProcessor,
    decode_otlp_json,
    encode_otlp_json,
)

RUN_ID = "run-20261128T175439Z-replay-1a02c988"
OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_INSECURE",
    "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
    "OTEL_TRACES_EXPORTER",
    "OTEL_METRICS_EXPORTER",
)


@pytest.fixture(autouse=True)
def no_otlp_settings(monkeypatch):
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def pipeline(path, flush_interval=60.0, sampler=None, **kwargs):
    """A provider writing `path` through the processor, and an in-memory copy of its spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "scalable-otel", "scalable.run.id": RUN_ID}),
        **({"sampler": sampler} if sampler else {}),
    )
    processor = OtlpJsonSpanProcessor(path, flush_interval=flush_interval, **kwargs)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider, processor, memory


def run_shaped_spans(provider, tasks=3, t0=1_795_000_000_000_000_000):
    """A run span, task spans under it (one failed), execute spans under those, a worker."""
    tracer = provider.get_tracer("scalable_otel", "0.1.0")
    run = tracer.start_span(
        "scalable.run",
        attributes={"scalable.span": "run", "scalable.run.id": RUN_ID},
        start_time=t0,
    )
    in_run = trace.set_span_in_context(run)
    worker = tracer.start_span(
        "worker",
        context=in_run,
        attributes={"scalable.span": "worker", "scalable.worker.nthreads": 1},
        start_time=t0 + 1_000,
    )
    for i in range(tasks):
        start = t0 + 1_000_000 * (i + 1)
        task = tracer.start_span(
            "run_simulation",
            context=in_run,
            attributes={
                "scalable.span": "task",
                "scalable.task.key": f"run_simulation-{i}",
                "scalable.task.dependencies": ["load-0", "load-1"],
                "scalable.task.nbytes": 2**40 + i,  # a 64-bit integer
                "scalable.task.duration_s": 0.25,
                "scalable.cache": i % 2 == 0,
            },
            start_time=start,
        )
        task.add_event("queued", {"scalable.task.attempt": 1}, timestamp=start + 10)
        execute = tracer.start_span(
            "execute",
            context=trace.set_span_in_context(task),
            attributes={"scalable.span": "execute", "scalable.task.attempt": 1},
            links=[Link(worker.get_span_context(), {"why": "ran on"})],
            start_time=start + 100,
        )
        if i == tasks - 1:
            execute.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
            task.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
            task.add_event(
                "exception",
                {"exception.type": "ValueError", "exception.message": "boom"},
                timestamp=start + 500,
            )
        execute.end(end_time=start + 400)
        task.end(end_time=start + 600)
    worker.end(end_time=t0 + 10_000_000)
    run.end(end_time=t0 + 20_000_000)
    return run


def file_lines(path):
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def json_spans(path):
    """The spans of every line, as OTLP/JSON dicts."""
    return [
        span
        for line in file_lines(path)
        for rs in orjson.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


# --- the file -------------------------------------------------------------------------------
def test_each_line_is_an_otlp_json_request_with_hex_ids(tmp_path):
    path = tmp_path / TRACES_FILE
    provider, processor, memory = pipeline(path)
    run = run_shaped_spans(provider)
    provider.shutdown()
    lines = file_lines(path)
    assert len(lines) == 1  # one flush, one line
    document = orjson.loads(lines[0])
    [resource_spans] = document["resourceSpans"]
    assert {"key": "scalable.run.id", "value": {"stringValue": RUN_ID}} in resource_spans[
        "resource"
    ]["attributes"]
    [scope_spans] = resource_spans["scopeSpans"]
    assert scope_spans["scope"] == {"name": "scalable_otel", "version": "0.1.0"}

    originals = {s.context.span_id: s for s in memory.get_finished_spans()}
    spans = scope_spans["spans"]
    assert len(spans) == len(originals) == 8 == processor.written
    trace_hex = f"{run.get_span_context().trace_id:032x}"
    for span in spans:
        original = originals[int(span["spanId"], 16)]
        assert span["traceId"] == trace_hex  # hex, not protobuf's base64
        assert span["spanId"] == f"{original.context.span_id:016x}"
        if original.parent is None:
            assert "parentSpanId" not in span
        else:
            assert span["parentSpanId"] == f"{original.parent.span_id:016x}"
        assert span["name"] == original.name
        assert span["kind"] == 1  # SPAN_KIND_INTERNAL, an integer
        assert span["startTimeUnixNano"] == str(original.start_time)  # 64-bit: strings
        assert span["endTimeUnixNano"] == str(original.end_time)
        for link in span.get("links", ()):
            assert link["traceId"] == trace_hex
            assert int(link["spanId"], 16) in originals
    assert all(key[0].islower() and "_" not in key for span in spans for key in span)


def test_parents_attributes_events_links_and_status_survive(tmp_path):
    path = tmp_path / TRACES_FILE
    provider, _, _ = pipeline(path)
    run = run_shaped_spans(provider, tasks=2)
    provider.shutdown()
    spans = json_spans(path)
    by_id = {s["spanId"]: s for s in spans}
    run_hex = f"{run.get_span_context().span_id:016x}"
    tasks = [s for s in spans if s["name"] == "run_simulation"]
    executes = [s for s in spans if s["name"] == "execute"]
    assert {t["parentSpanId"] for t in tasks} == {run_hex}
    assert all(by_id[e["parentSpanId"]]["name"] == "run_simulation" for e in executes)
    worker = next(s for s in spans if s["name"] == "worker")
    assert all(e["links"][0]["spanId"] == worker["spanId"] for e in executes)

    first = next(t for t in tasks if "status" in t and t["status"] == {})
    attrs = {a["key"]: a["value"] for a in first["attributes"]}
    assert attrs["scalable.task.key"] == {"stringValue": "run_simulation-0"}
    assert attrs["scalable.task.nbytes"] == {"intValue": str(2**40)}
    assert attrs["scalable.task.duration_s"] == {"doubleValue": 0.25}
    assert attrs["scalable.cache"] == {"boolValue": True}
    assert attrs["scalable.task.dependencies"] == {
        "arrayValue": {"values": [{"stringValue": "load-0"}, {"stringValue": "load-1"}]}
    }
    assert first["events"] == [
        {
            "timeUnixNano": str(int(first["startTimeUnixNano"]) + 10),
            "name": "queued",
            "attributes": [{"key": "scalable.task.attempt", "value": {"intValue": "1"}}],
        }
    ]
    failed = next(t for t in tasks if t["status"].get("code") == 2)  # STATUS_CODE_ERROR
    assert failed["status"] == {"code": 2, "message": "ValueError: boom"}
    assert [e["name"] for e in failed["events"]] == ["queued", "exception"]


def test_a_line_parsed_back_is_what_the_otlp_exporters_send(tmp_path):
    path = tmp_path / TRACES_FILE
    provider, _, memory = pipeline(path)
    run_shaped_spans(provider)
    provider.shutdown()
    [line] = file_lines(path)
    assert decode_otlp_json(line) == encode_spans(memory.get_finished_spans())
    assert decode_otlp_json(line.decode()) == encode_spans(memory.get_finished_spans())


def test_hex_ids_are_not_read_as_base64():
    # hex digits are base64 letters too: read as base64, a 32-digit id is 24 wrong bytes
    span_id = "0123456789abcdef"
    line = orjson.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "00112233445566778899aabbccddeeff",
                                    "spanId": span_id,
                                    "parentSpanId": "fedcba9876543210",
                                    "name": "x",
                                    "startTimeUnixNano": "1795000000000000001",
                                    "kind": 1,
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    [span] = decode_otlp_json(line).resource_spans[0].scope_spans[0].spans
    assert span.trace_id == bytes.fromhex("00112233445566778899aabbccddeeff")
    assert span.span_id == bytes.fromhex(span_id)
    assert span.parent_span_id == bytes.fromhex("fedcba9876543210")
    assert span.start_time_unix_nano == 1795000000000000001
    # base64 ids (protobuf's plain JSON mapping, as older writers did) still read right
    older = line.replace(span_id.encode(), base64.b64encode(bytes.fromhex(span_id)))
    assert decode_otlp_json(older).resource_spans[0].scope_spans[0].spans[0].span_id == (
        bytes.fromhex(span_id)
    )


@pytest.mark.parametrize(
    "line",
    [b'{"resourceSpans":[{"resource":{"attri', b"not json", b"[1, 2]", b'{"other": 1}'],
)
def test_a_torn_or_foreign_line_is_a_value_error(line):
    with pytest.raises(ValueError):
        decode_otlp_json(line)


def test_spans_are_flushed_in_the_background_and_appended(tmp_path):
    path = tmp_path / TRACES_FILE
    path.write_bytes(b"")
    os.chmod(path, 0o600)
    provider, processor, _ = pipeline(path, flush_interval=0.05)
    tracer = provider.get_tracer("t")
    tracer.start_span("first").end()
    deadline = time.monotonic() + 5
    while processor.written < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(file_lines(path)) == 1  # written without a force_flush
    tracer.start_span("second").end()
    provider.shutdown()
    assert [s["name"] for s in json_spans(path)] == ["first", "second"]
    assert len(file_lines(path)) == 2


def test_the_file_is_created_owner_only_at_once(tmp_path):
    path = tmp_path / TRACES_FILE
    provider, _, _ = pipeline(path)
    assert path.is_file() and path.read_bytes() == b""
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    provider.shutdown()


def test_a_flush_of_many_spans_is_cut_into_lines(tmp_path):
    path = tmp_path / TRACES_FILE
    provider, processor, _ = pipeline(path, max_spans_per_line=3)
    tracer = provider.get_tracer("t")
    for i in range(7):
        tracer.start_span(f"s{i}").end()
    assert processor.force_flush()
    assert [len(json_spans_of(line)) for line in file_lines(path)] == [3, 3, 1]
    provider.shutdown()


def json_spans_of(line):
    return [
        s
        for rs in orjson.loads(line)["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]


def test_spans_beyond_the_cap_are_dropped_counted_and_logged_once(tmp_path, caplog):
    path = tmp_path / TRACES_FILE
    provider, processor, _ = pipeline(path, max_buffered=3)
    tracer = provider.get_tracer("t")
    with caplog.at_level(logging.WARNING, logger="scalable_otel.exporters.otlp_json"):
        for i in range(5):
            tracer.start_span(f"s{i}").end()
        provider.shutdown()
    assert (processor.written, processor.dropped) == (3, 2)
    assert [s["name"] for s in json_spans(path)] == ["s0", "s1", "s2"]
    assert sum("spans waiting to be written" in r.message for r in caplog.records) == 1


def test_an_unwritable_file_never_raises_and_counts_lost_spans(tmp_path, caplog):
    path = tmp_path / "gone" / TRACES_FILE  # its directory does not exist
    with caplog.at_level(logging.WARNING, logger="scalable_otel.exporters.otlp_json"):
        provider, processor, _ = pipeline(path)
        tracer = provider.get_tracer("t")
        for _ in range(3):
            tracer.start_span("s").end()
            assert processor.force_flush() is False
        provider.shutdown()
    assert (processor.written, processor.dropped) == (0, 3)
    assert sum("scalable-otel" in r.message for r in caplog.records) == 1


def test_a_span_that_cannot_be_encoded_is_dropped_alone(tmp_path, monkeypatch):
    from scalable_otel.exporters import otlp_json

    real = otlp_json.encode_span

    def picky(span):
        if span.name == "bad":
            raise ValueError("cannot encode")
        return real(span)

    monkeypatch.setattr(otlp_json, "encode_span", picky)
    path = tmp_path / TRACES_FILE
    provider, processor, _ = pipeline(path)
    tracer = provider.get_tracer("t")
    for name in ("a", "bad", "b"):
        tracer.start_span(name).end()
    assert processor.force_flush() is False
    provider.shutdown()
    assert [s["name"] for s in json_spans(path)] == ["a", "b"]
    assert (processor.written, processor.dropped) == (2, 1)


def test_spans_not_sampled_are_not_written(tmp_path):
    path = tmp_path / TRACES_FILE
    provider, processor, _ = pipeline(path, sampler=ALWAYS_OFF)
    provider.get_tracer("t").start_span("s").end()
    provider.shutdown()
    assert path.read_bytes() == b"" and processor.dropped == 0


def test_spans_ended_after_shutdown_are_counted_not_written(tmp_path):
    path = tmp_path / TRACES_FILE
    provider, processor, _ = pipeline(path)
    span = provider.get_tracer("t").start_span("late")
    processor.shutdown()
    span.end()
    assert path.read_bytes() == b"" and processor.dropped == 1


def test_encode_otlp_json_is_one_line():
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("t").start_span("multi\nline").end()
    line = encode_otlp_json(memory.get_finished_spans())
    assert b"\n" not in line and orjson.loads(line)["resourceSpans"]


# --- replay against local stand-ins ------------------------------------------------------------
class Receiver:
    """An OTLP/HTTP stand-in on 127.0.0.1: records requests, answers from `statuses`."""

    def __init__(self):
        self.requests: list[tuple[str, dict, bytes]] = []
        self.statuses: list[int] = []
        self.response = b""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                payload, kind = receiver.response, "application/x-protobuf"
                if status == 400:  # OTLP/HTTP: a google.rpc.Status
                    payload = RpcStatus(code=3, message="bad\nspans").SerializeToString()
                elif status != 200:
                    payload, kind = b"quota\nexceeded", "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def spans(self):
        out = []
        for _, _, body in self.requests:
            request = ExportTraceServiceRequest.FromString(body)
            out += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def recorded_run(tmp_path):
    """A run directory (inside tmp_path/runs) with traces.otlp.jsonl from two flushes."""
    run_dir = tmp_path / "runs" / RUN_ID
    run_dir.mkdir(parents=True)
    provider, processor, memory = pipeline(run_dir / TRACES_FILE)
    run_shaped_spans(provider, tasks=2)
    processor.force_flush()
    run_shaped_spans(provider, tasks=1)
    provider.shutdown()
    assert len(file_lines(run_dir / TRACES_FILE)) == 2
    return run_dir, memory.get_finished_spans()


def test_replay_posts_each_line_as_protobuf_with_the_original_spans(receiver, recorded_run):
    run_dir, originals = recorded_run
    result = replay(run_dir, receiver.url)
    assert result == {
        "run_id": RUN_ID,
        "endpoint": f"{receiver.url}/v1/traces",
        "protocol": "http/protobuf",
        "requests": 2,
        "spans": len(originals),
        "bad_lines": 0,
        "rejected_spans": 0,
    }
    assert [path for path, _, _ in receiver.requests] == ["/v1/traces", "/v1/traces"]
    assert all(h["Content-Type"] == "application/x-protobuf" for _, h, _ in receiver.requests)
    lines = file_lines(run_dir / TRACES_FILE)
    assert [ExportTraceServiceRequest.FromString(b) for _, _, b in receiver.requests] == [
        decode_otlp_json(line) for line in lines
    ]
    sent = receiver.spans()
    assert [(s.span_id, s.parent_span_id, s.name, s.start_time_unix_nano) for s in sent] == [
        (
            s.context.span_id.to_bytes(8, "big"),
            s.parent.span_id.to_bytes(8, "big") if s.parent else b"",
            s.name,
            s.start_time,
        )
        for s in originals
    ]


def test_an_endpoint_ending_in_v1_traces_is_used_as_given(receiver, recorded_run):
    run_dir, _ = recorded_run
    replay(run_dir, receiver.url + "/v1/traces")
    replay(run_dir, receiver.url + "/custom/v1/traces/")
    assert {path for path, _, _ in receiver.requests} == {"/v1/traces", "/custom/v1/traces"}


def test_endpoint_protocol_and_headers_come_from_the_otel_variables(
    receiver, recorded_run, monkeypatch
):
    run_dir, _ = recorded_run
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=s%3Dcret,x-project-name=p")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")  # a replay is asked for explicitly
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "console")  # not ours to judge here
    result = replay(run_dir)
    assert result["endpoint"] == f"{receiver.url}/v1/traces"
    headers = receiver.requests[0][1]
    assert headers["x-api-key"] == "s=cret" and headers["x-project-name"] == "p"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", receiver.url + "/traces-here")
    assert replay(run_dir)["endpoint"] == receiver.url + "/traces-here"  # used as given
    assert receiver.requests[-1][0] == "/traces-here"


def test_resolve_endpoint_defaults():
    env = {}
    assert resolve_endpoint(env=env) == ("http://localhost:4318/v1/traces", "http/protobuf", {})
    assert resolve_endpoint(protocol="grpc", env=env) == ("http://localhost:4317", "grpc", {})
    assert resolve_endpoint("http://h:4317", "grpc", {"X-K": "v"}, env=env) == (
        "http://h:4317",
        "grpc",
        {"x-k": "v"},
    )
    with pytest.raises(ReplayError, match="http/json"):
        resolve_endpoint(env={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(ReplayError, match="must start with http"):
        resolve_endpoint("localhost:4318", env=env)


def test_torn_and_corrupt_lines_are_skipped_and_counted(receiver, recorded_run):
    run_dir, originals = recorded_run
    path = run_dir / TRACES_FILE
    good = path.read_bytes()
    path.write_bytes(b"garbage\n\n" + good + good[: len(good) // 3])  # a crashed run's tail
    result = replay(run_dir, receiver.url)
    assert (result["requests"], result["spans"], result["bad_lines"]) == (2, len(originals), 2)


def test_a_retryable_status_is_retried_and_an_error_status_is_one_line(
    receiver, recorded_run, monkeypatch
):
    monkeypatch.setattr(replay_module, "RETRY_DELAYS_S", (0.01, 0.01))
    run_dir, originals = recorded_run
    receiver.statuses = [503, 200, 400]
    with pytest.raises(ReplayError) as error:
        replay(run_dir, receiver.url)
    message = str(error.value)
    assert isinstance(error.value, ScalableError)
    assert "\n" not in message
    assert message.startswith(f"cannot send spans to {receiver.url}/v1/traces (http/protobuf)")
    assert "HTTP 400 Bad Request: bad spans" in message
    assert "(1 requests of " in message  # the first line got through on its retry
    assert len(receiver.requests) == 3


def test_retries_end_after_three_attempts(receiver, recorded_run, monkeypatch):
    monkeypatch.setattr(replay_module, "RETRY_DELAYS_S", (0.01, 0.01))
    run_dir, _ = recorded_run
    receiver.statuses = [429, 429, 429]
    with pytest.raises(ReplayError, match=r"HTTP 429 Too Many Requests: quota exceeded$"):
        replay(run_dir, receiver.url)
    assert len(receiver.requests) == 3


def test_spans_the_backend_rejects_are_counted(receiver, recorded_run):
    run_dir, _ = recorded_run
    receiver.response = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=2, error_message="too old")
    ).SerializeToString()
    assert replay(run_dir, receiver.url)["rejected_spans"] == 4


def test_a_run_without_the_file_is_one_line_naming_the_endpoint(tmp_path):
    with pytest.raises(ReplayError, match=r"^nothing sent to http://127\.0\.0\.1:9/v1/traces: "):
        replay(tmp_path, "http://127.0.0.1:9")


def test_a_big_line_is_sent_as_several_requests(receiver, recorded_run, monkeypatch):
    run_dir, originals = recorded_run
    monkeypatch.setattr(replay_module, "MAX_REQUEST_BYTES", 600)
    result = replay(run_dir, receiver.url)
    assert result["requests"] > 2 and result["spans"] == len(originals)
    sent = receiver.spans()
    assert sorted(s.span_id for s in sent) == sorted(
        s.context.span_id.to_bytes(8, "big") for s in originals
    )
    for _, _, body in receiver.requests:
        request = ExportTraceServiceRequest.FromString(body)
        assert request.resource_spans[0].resource.attributes  # each part keeps its resource
        assert request.resource_spans[0].scope_spans[0].scope.name == "scalable_otel"


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self):
        self.calls: list[tuple[ExportTraceServiceRequest, dict]] = []

    def Export(self, request, context):  # noqa: N802 (the generated name)
        self.calls.append((request, dict(context.invocation_metadata())))
        return ExportTraceServiceResponse()


@pytest.fixture
def grpc_receiver():
    servicer = GrpcReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.endpoint = f"http://127.0.0.1:{port}"
    yield servicer
    server.stop(grace=None)


def test_replay_over_grpc_sends_the_requests_and_headers(grpc_receiver, recorded_run, monkeypatch):
    run_dir, originals = recorded_run
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20t")
    result = replay(run_dir, grpc_receiver.endpoint, "grpc")
    assert (result["requests"], result["spans"]) == (2, len(originals))
    assert [request for request, _ in grpc_receiver.calls] == [
        decode_otlp_json(line) for line in file_lines(run_dir / TRACES_FILE)
    ]
    assert grpc_receiver.calls[0][1]["authorization"] == "Bearer t"
    # without a scheme the endpoint is host:port, plaintext only when asked for
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    host_port = grpc_receiver.endpoint.removeprefix("http://")
    assert replay(run_dir, host_port, "grpc")["spans"] == len(originals)


# --- the command -----------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_export_otlp_prints_what_was_sent(receiver, recorded_run):
    run_dir, originals = recorded_run
    runs = run_dir.parent
    result = invoke("export", "--otlp", "--last", "--runs-dir", runs, "--endpoint", receiver.url)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"Sent {len(originals)} spans of {RUN_ID} to {receiver.url}/v1/traces\n"
    )
    (runs / "run-20261128T175440Z-replay-2b02c988").mkdir()  # an older kind of run
    result = invoke("export", "--otlp", "--all", "--runs-dir", runs, "--endpoint", receiver.url)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Sent {len(originals)} spans of {RUN_ID} to {receiver.url}/v1/traces",
        f"Skipped 1 run without {TRACES_FILE}",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--otlp", "--parquet", "--last"], "give one format: --parquet or --otlp"),
        (["--last"], "say which format: --parquet or --otlp"),
        (["--otlp", "--last", "--out", "x"], "--out is for --parquet"),
        (["--parquet", "--last", "--endpoint", "http://x"], "are for --otlp"),
        (["--otlp", "--last", "--endpoint", "http://127.0.0.1:9"], "no traces.otlp.jsonl"),
    ],
)
def test_export_otlp_mistakes_are_one_line_and_exit_2(recorded_run, args, message):
    run_dir, _ = recorded_run
    (run_dir / TRACES_FILE).rename(run_dir / "elsewhere")
    result = invoke("export", *args, "--runs-dir", run_dir.parent)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_headers_are_not_a_command_line_option():
    result = invoke("export", "--help")
    assert "--header" not in result.output and "OTEL_EXPORTER_OTLP_HEADERS" in result.output


def test_odd_values_round_trip_as_the_sdk_encodes_them():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import (
        Link,
        NonRecordingSpan,
        SpanContext,
        TraceFlags,
        set_span_in_context,
    )

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"scalable.run.id": "r", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("odd", "1.2", schema_url="https://opentelemetry.io/schemas/1.21.0")
    remote = SpanContext(2**127 + 5, 2**63 + 7, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span(
        "naïve ✓",
        context=set_span_in_context(NonRecordingSpan(remote)),
        links=[Link(remote, {"why": "retry"})],
        attributes={
            "nan": float("nan"), "inf": float("inf"), "neg": float("-inf"), "zero": 0,
            "false": False, "empty": "", "bytes": b"\x00\xff", "floats": [0.5, 1.0],
            "big": 2**62, "negative": -3,
        },
    ) as span:  # fmt: skip
        span.add_event("bare")
        span.add_event("with", {"k": "v"}, timestamp=123)
    with tracer.start_as_current_span("plain"):
        pass
    other = TracerProvider(resource=Resource.create({"other": True}))
    other.add_span_processor(SimpleSpanProcessor(memory))
    with other.get_tracer("second").start_as_current_span("elsewhere"):
        pass
    spans = memory.get_finished_spans()
    assert decode_otlp_json(encode_otlp_json(spans)) == encode_spans(spans)
