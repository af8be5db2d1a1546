"""`scalable export --otlp` into a real OTLP backend (Arize Phoenix, see phoenix.py): every
span of a recorded run arrives with its original ids, parent, name and start time, over
OTLP/HTTP and OTLP/gRPC."""

from __future__ import annotations

import time

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from scalable_otel import semconv as sc
from scalable_otel.exporters.otlp_json import TRACES_FILE, OtlpJsonSpanProcessor
from scalable_otel.rundir import new_run_id
from tests.integration.otlp_checks import export_otlp, file_spans
from tests.integration.phoenix import phoenix  # noqa: F401  (the fixture)

# Phoenix keeps times as floating-point seconds: nanoseconds come back within a microsecond
TIME_TOLERANCE_NS = 1_000


@pytest.fixture(autouse=True)
def no_otel_settings(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def record_run(root, tasks=8):
    """A run directory whose traces.otlp.jsonl is written by the processor as a session's
    pipeline would: a run span, task spans under it (one failed, with events), an execute
    span under each task, a worker span; spans end over two flushes or more. Returns the
    directory and the SDK's own spans."""
    run_id = new_run_id("replay")
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    resource = Resource.create(
        {"service.name": "scalable-otel", sc.RUN_ID: run_id, sc.PROJECT: "replay"}
    )
    provider = TracerProvider(resource=resource)
    processor = OtlpJsonSpanProcessor(run_dir / TRACES_FILE, flush_interval=0.05)
    memory = InMemorySpanExporter()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(sc.INSTRUMENTATION_SCOPE, "0.1.0")
    run = tracer.start_span(sc.SPAN_RUN, attributes={sc.KIND: sc.KIND_RUN, sc.RUN_ID: run_id})
    in_run = trace.set_span_in_context(run)
    worker = tracer.start_span(
        sc.SPAN_WORKER,
        context=in_run,
        attributes={sc.KIND: sc.KIND_WORKER, sc.WORKER: "tcp://127.0.0.1:1"},
    )
    for i in range(tasks):
        task = tracer.start_span(
            "run_simulation",
            context=in_run,
            attributes={
                sc.KIND: sc.KIND_TASK,
                sc.TASK_NAME: "run_simulation",
                sc.TASK_KEY: f"run_simulation-{i}",
            },
        )
        task.add_event("queued", {sc.TASK_ATTEMPT: 1})
        execute = tracer.start_span(
            sc.SPAN_EXECUTE,
            context=trace.set_span_in_context(task),
            attributes={sc.KIND: sc.KIND_EXECUTE, sc.TASK_ATTEMPT: 1},
        )
        time.sleep(0.002)
        failed = i == tasks - 1
        if failed:
            execute.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
            task.set_status(Status(StatusCode.ERROR, "ValueError: boom"))
        execute.end()
        task.set_attribute(sc.TASK_STATUS, sc.STATUS_FAILED if failed else sc.STATUS_COMPLETED)
        task.end()
        if i == tasks // 2:
            processor.force_flush()  # at least two lines, whatever the timing
    worker.end()
    run.end()
    provider.shutdown()
    assert processor.written == tasks * 2 + 2
    return run_dir, memory.get_finished_spans()


def assert_arrived(received, expected):
    """Every expected (span id, parent id, name, start ns) is in Phoenix, as it was."""
    got = {s["span_id"]: s for s in received}
    assert len(received) == len(got) == len(expected)
    for span_id, parent_id, name, start in expected:
        span = got[span_id]
        assert (span["parent_span_id"], span["name"]) == (parent_id, name)
        assert abs(span["start_time_unix_nano"] - start) <= TIME_TOLERANCE_NS


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_replayed_run_arrives_with_its_original_ids_and_times(
    phoenix,  # noqa: F811
    tmp_path,
    monkeypatch,
    protocol,
):
    run_dir, originals = record_run(tmp_path / "runs")
    assert len((run_dir / TRACES_FILE).read_bytes().splitlines()) > 1
    with open(run_dir / TRACES_FILE, "ab") as f:
        f.write(b'{"resourceSpans":[{"resource":{"attri')  # torn by a crash
    if protocol == "grpc":
        endpoint, project = phoenix.grpc_endpoint, "default"
    else:
        # headers come from OTEL_EXPORTER_OTLP_HEADERS; Phoenix files spans under the
        # project this one names (over HTTP only), which shows they were sent
        endpoint, project = phoenix.http_endpoint, "replay-http"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-project-name={project}")

    result = export_otlp(run_dir, endpoint, protocol)

    assert result.exit_code == 0, result.output
    assert result.output == (
        f"Sent {len(originals)} spans of {run_dir.name} to {endpoint} "
        "(skipped 1 unreadable lines)\n"
    )
    trace_hex = f"{originals[0].context.trace_id:032x}"
    received = phoenix.spans(trace_hex, project=project, expect=len(originals))
    assert_arrived(
        received,
        [
            (
                f"{s.context.span_id:016x}",
                f"{s.parent.span_id:016x}" if s.parent else None,
                s.name,
                s.start_time,
            )
            for s in originals
        ],
    )
    by_name = {}
    for span in received:
        by_name.setdefault(span["name"], []).append(span)
    assert len(by_name["run_simulation"]) == len(by_name[sc.SPAN_EXECUTE]) == 8
    assert sorted(s["status"]["code"] for s in by_name["run_simulation"]) == [0] * 7 + [2]


def test_a_session_run_replays_whole(phoenix, demo_run):  # noqa: F811
    """The real run of examples/quickstart.py, once the session writes traces.otlp.jsonl."""
    if not (demo_run / TRACES_FILE).is_file():
        pytest.skip(f"this session does not write {TRACES_FILE} yet")
    spans = file_spans(demo_run)
    run_json = orjson.loads((demo_run / "run.json").read_bytes())
    tasks = [orjson.loads(line) for line in (demo_run / "tasks.jsonl").read_bytes().splitlines()]
    assert {s["traceId"] for s in spans} == {run_json["trace_id"]}
    # every span the run directory names is in the OTLP file, with the same parent
    parents = {s["spanId"]: s.get("parentSpanId") for s in spans}
    for line in tasks:
        assert parents[line["span_id"]] == line["parent_span_id"]

    result = export_otlp(demo_run, phoenix.grpc_endpoint, "grpc")

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Sent {len(spans)} spans of {demo_run.name} to ")
    received = phoenix.spans(run_json["trace_id"], expect=len(spans))
    assert_arrived(
        received,
        [
            (s["spanId"], s.get("parentSpanId"), s["name"], int(s["startTimeUnixNano"]))
            for s in spans
        ],
    )


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_replaying_into_a_closed_port_is_exit_2_and_one_line(tmp_path, protocol):
    from tests.integration.phoenix import free_port

    run_dir, _ = record_run(tmp_path / "runs", tasks=1)
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    result = export_otlp(run_dir, endpoint, protocol)

    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"Error: cannot send spans to {endpoint}")
