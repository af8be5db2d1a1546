"""Trace context inside tasks: spans made with the plain OpenTelemetry API in a task on
a worker process nest under the span of the task's execution (its `execute` span, a child
of the task's span), in the run's trace; logs carry the ids."""

import json
import logging

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scalable_otel import PipelineOptions, ScalableSession
from tests.conftest import events
from tests.integration.otlp_checks import file_spans


def traced_work(x):
    """A task that uses OpenTelemetry and logging the way any library would."""
    from opentelemetry import trace

    captured = []

    class Keep(logging.Handler):
        def emit(self, record):
            captured.append((record.getMessage(), record.otelTraceID, record.otelSpanID))

    log = logging.getLogger(f"user.task.{x}")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    log.info("outside")
    tracer = trace.get_tracer("user.code")
    with tracer.start_as_current_span("prepare", attributes={"x": x}) as span:
        with tracer.start_as_current_span("solve"):
            log.info("inside")
        span.add_event("prepared")
    return captured


@pytest.fixture(scope="module")
def traced_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    exporter = InMemorySpanExporter()
    with ScalableSession(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        project="context",
        runs_dir=root / "runs",
        cache_dir=root / "cache",
        pipeline=PipelineOptions(span_processors=[SimpleSpanProcessor(exporter)]),
    ) as session:
        logs = session.gather(session.map(traced_work, range(4)))
    return session, exporter.get_finished_spans(), logs


def execution_spans(run_dir) -> dict:
    """The span id of each task's execution (its only attempt), by the task's `x`, checked
    to be a child of the task's span."""
    completed = {line["key"]: line for line in events(run_dir, event="task_completed")}
    spans = {}
    for started in events(run_dir, event="task_started"):
        task = completed[started["key"]]
        assert started["parent_span_id"] == task["span_id"]
        spans[task["args"]["x"]] = started["span_id"]
    return spans


def test_spans_made_in_tasks_nest_under_their_task_span(traced_run):
    session, spans, _ = traced_run
    run = json.loads((session.run_dir / "run.json").read_text())
    execution = execution_spans(session.run_dir)
    prepared = [s for s in spans if s.name == "prepare"]
    assert len(prepared) == 4
    for span in prepared:
        assert format(span.context.trace_id, "032x") == run["trace_id"]
        assert format(span.parent.span_id, "016x") == execution[span.attributes["x"]]
        assert [e.name for e in span.events] == ["prepared"]
        (solve,) = [
            s for s in spans if s.name == "solve" and s.parent.span_id == span.context.span_id
        ]
        assert solve.context.trace_id == span.context.trace_id


def test_logs_in_tasks_carry_the_trace_and_span_ids(traced_run):
    session, spans, logs = traced_run
    run = json.loads((session.run_dir / "run.json").read_text())
    execution = execution_spans(session.run_dir)
    for x, captured in enumerate(logs):
        (outside, inside) = captured
        assert outside == ("outside", run["trace_id"], execution[x])
        solve = next(
            s for s in spans
            if s.name == "solve" and format(s.context.trace_id, "032x") == run["trace_id"]
            and s.parent.span_id in {p.context.span_id for p in spans if p.attributes.get("x") == x}
        )  # fmt: skip
        assert inside == ("inside", run["trace_id"], format(solve.context.span_id, "016x"))


def test_spans_from_tasks_reach_the_run_directory(project_dir):
    from scalable_otel.exporters.otlp_json import decode_otlp_json

    with ScalableSession(target="local", n_workers=1, project="context") as session:
        session.gather(session.map(traced_work, range(2)))
    task_span = execution_spans(session.run_dir)
    spans = [
        span
        for line in (session.run_dir / "traces.otlp.jsonl").read_bytes().splitlines()
        for resource in decode_otlp_json(line).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    prepared = {
        next(a.value.int_value for a in s.attributes if a.key == "x"): s
        for s in spans
        if s.name == "prepare"
    }
    assert {x: s.parent_span_id.hex() for x, s in prepared.items()} == task_span
    solves = [s for s in spans if s.name == "solve"]
    assert {s.parent_span_id for s in solves} == {s.span_id for s in prepared.values()}


def _skew_the_workers_clock(dask_worker, seconds):
    """Dask's estimate of the scheduler's clock ahead of this worker's, as on a host
    whose clock is `seconds` behind, held (no heartbeat re-estimates it) until `None`."""
    heartbeat = dask_worker.periodic_callbacks["heartbeat"]
    if seconds is None:
        heartbeat.start()
        return
    heartbeat.stop()
    dask_worker.scheduler_delay = seconds


def test_spans_made_in_tasks_lie_inside_their_execute_span_on_the_schedulers_clock(
    project_dir,
):
    """Dask puts an execution on the scheduler's clock with its estimate of the worker's
    offset; the spans made inside the task are moved by the same estimate, so they nest
    in time too (on one host the estimate is milliseconds off; here an hour)."""
    with ScalableSession(target="local", n_workers=1, project="clock") as session:
        session.client.run(_skew_the_workers_clock, seconds=3600.0)
        try:
            session.gather(session.map(traced_work, range(2)))
        finally:
            session.client.run(_skew_the_workers_clock, seconds=None)
    spans = {s["spanId"]: s for s in file_spans(session.run_dir)}
    inside = [s for s in spans.values() if s["name"] in ("prepare", "solve")]
    assert len(inside) == 4
    for span in inside:
        parent = spans[span["parentSpanId"]]
        times = [int(parent["startTimeUnixNano"]), int(parent["endTimeUnixNano"])]
        assert times[0] <= int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
        assert int(span["endTimeUnixNano"]) <= times[1], (span["name"], parent["name"])
        for event in span.get("events", ()):
            assert int(span["startTimeUnixNano"]) <= int(event["timeUnixNano"]) <= times[1]
