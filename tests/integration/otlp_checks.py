"""Checks shared by the tests that send a run's spans to a real OTLP backend (Phoenix in
test_otlp.py and test_replay.py, Jaeger in test_jaeger.py): what the run directory says
the backend must hold, and `scalable export --otlp` of a run directory."""

from __future__ import annotations

import json

import orjson
from click.testing import CliRunner

from scalable_otel.cli import main
from scalable_otel.exporters.otlp_json import TRACES_FILE
from tests.conftest import events


def run_json(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def file_spans(run_dir):
    """Every span of the run's traces.otlp.jsonl (OTLP/JSON dicts)."""
    return [span for _, _, span in file_spans_in_context(run_dir)]


def file_spans_in_context(run_dir):
    """Every span of the run's traces.otlp.jsonl with its resource and scope:
    [(resource, scope, span)] as OTLP/JSON dicts; unreadable lines are skipped."""
    found = []
    for line in (run_dir / TRACES_FILE).read_bytes().splitlines():
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        for rs in document["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                found.extend((rs.get("resource", {}), ss.get("scope", {}), s) for s in ss["spans"])
    return found


def export_otlp(run_dir, endpoint, protocol):
    """`scalable export --otlp RUN --endpoint ... --protocol ...`, through click."""
    return CliRunner().invoke(
        main,
        [
            "export",
            "--otlp",
            run_dir.name,
            "--runs-dir",
            str(run_dir.parent),
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
        ],
    )


def check_backend_has_the_run(backend, run_dir):
    """Every task span of tasks.jsonl, with its parent, and the spans made inside tasks
    (`traced_work` of tests/test_task_context.py, two each). `backend.spans(trace_id,
    expect=n)` gives at least n spans as dicts with span_id, parent_span_id and name;
    `backend.port` and `backend.grpc_port` are where it takes OTLP/HTTP and OTLP/gRPC."""
    meta = run_json(run_dir)
    done = events(run_dir, event="task_completed")
    failed = events(run_dir, event="task_failed")
    traced = [line for line in done if line["task"] == "traced_work"]
    # run span + a task span and an execute span per task + 2 user spans per traced task
    workers = len(events(run_dir, "workers.jsonl", "worker_added"))
    expected = 1 + 2 * len(done + failed) + 2 * len(traced) + workers
    spans = {s["span_id"]: s for s in backend.spans(meta["trace_id"], expect=expected)}
    run_span = next(s for s in spans.values() if s["name"] == "scalable.run")
    for line in done + failed:
        span = spans[line["span_id"]]
        assert span["parent_span_id"] == run_span["span_id"] == line["parent_span_id"]
        assert span["name"] == line["task"]
    # spans made inside a task nest under its execution's span, inside the task's span
    prepared = [s for s in spans.values() if s["name"] == "prepare"]
    assert len(prepared) == len(traced)
    for span in prepared:
        execution = spans[span["parent_span_id"]]
        assert execution["name"] == "execute"
        assert spans[execution["parent_span_id"]]["name"] == "traced_work"
    ports = (f"127.0.0.1:{backend.port}/v1/traces", f"127.0.0.1:{backend.grpc_port} ")
    assert any(port in meta["exporters"]["otlp_traces"] for port in ports)
    assert meta["telemetry_spans_dropped"] == 0
