"""OpenTelemetry's semantic conventions as real backends receive them over OTLP: Jaeger v2
(its query API shows the CI/CD, error.type, code.function.name, process.* and host.*
tags and the resource's service.instance.id) and the OpenTelemetry Collector (its file
exporter gets the metric points with their low-cardinality attributes only)."""

from __future__ import annotations

import json

import pytest

from scalable_otel import ExportOptions, ScalableSession
from scalable_otel import semconv as sc
from scalable_otel.ids import service_instance_id
from tests import workloads
from tests.integration.go_servers import (
    jaeger,  # noqa: F401  (a fixture)
    otlp_receiver,
    read_otlp_json_lines,
    start_collector,
    wait_until,
)
from tests.test_semantic_conventions import LOW_CARDINALITY

# the real servers built by servers/build (see .ci/run)
pytestmark = pytest.mark.go_servers


@pytest.fixture(autouse=True)
def no_otel_settings(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


def run_workflow(root, endpoint: str) -> ScalableSession:
    """Three tasks that complete, one that raises and one that never runs for it."""
    with ScalableSession(
        target="local",
        n_workers=1,
        threads_per_worker=1,
        project="semconv",
        runs_dir=root / "runs",
        cache_dir=root / "cache",
        exports=ExportOptions(otlp_endpoint=endpoint, otlp_protocol="http/protobuf"),
    ) as s:
        s.gather(s.map(workloads.inc, [1, 2, 3]))
        skipped = s.submit(workloads.add, s.submit(workloads.fail, 5), 1)
        with pytest.raises(ValueError):
            s.gather(skipped)
    return s


def test_jaeger_shows_the_conventions_on_the_runs_spans(jaeger, tmp_path):  # noqa: F811
    s = run_workflow(tmp_path, jaeger.otlp_http)
    trace_id = json.loads((s.run_dir / "run.json").read_text())["trace_id"]
    # run, five tasks, four executions, one worker
    found = jaeger.trace(trace_id, spans=11)
    (process,) = {p["serviceName"]: p for p in found["processes"].values()}.values()
    assert process["serviceName"] == "scalable-otel"
    resource = {t["key"]: t["value"] for t in process["tags"]}
    assert resource[sc.SERVICE_INSTANCE_ID] == service_instance_id(s.run_id)

    def tags(span):
        return {t["key"]: t["value"] for t in span["tags"]}

    spans = [tags(span) for span in found["spans"]]
    by_kind = {}
    for span in spans:
        by_kind.setdefault(span[sc.KIND], []).append(span)
    (run,) = by_kind[sc.KIND_RUN]
    assert run[sc.CICD_PIPELINE_RUN_ID] == s.run_id
    assert run[sc.CICD_PIPELINE_NAME] == "semconv"
    assert run[sc.CICD_PIPELINE_RESULT] == "failure"
    results = sorted(
        (t[sc.CICD_PIPELINE_TASK_NAME], t[sc.CICD_PIPELINE_TASK_RUN_RESULT])
        for t in by_kind[sc.KIND_TASK]
    )
    assert results == [("add", "skip"), ("fail", "failure")] + [("inc", "success")] * 3
    (failed,) = [t for t in by_kind[sc.KIND_TASK] if t[sc.CICD_PIPELINE_TASK_NAME] == "fail"]
    assert failed[sc.ERROR_TYPE] == "ValueError"
    assert failed[sc.CODE_FUNCTION_NAME] == "tests.workloads.fail"
    assert failed[sc.CICD_PIPELINE_TASK_RUN_ID] == failed[sc.TASK_KEY]
    (worker,) = by_kind[sc.KIND_WORKER]
    assert worker[sc.CICD_WORKER_ID] == worker[sc.WORKER]
    assert worker[sc.HOST_NAME] and worker[sc.PROCESS_RUNTIME_NAME] == "cpython"
    assert {e[sc.CICD_WORKER_NAME] for e in by_kind[sc.KIND_EXECUTE]} == {worker[sc.WORKER_NAME]}


def test_the_collector_gets_metric_points_of_low_cardinality(tmp_path):
    out = tmp_path / "otelcol" / "received.jsonl"

    def config(ports):
        return {
            "receivers": otlp_receiver(ports),
            "exporters": {"file": {"path": str(out)}},
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["otlp"], "exporters": ["file"]},
                    "metrics": {"receivers": ["otlp"], "exporters": ["file"]},
                }
            },
        }

    collector = start_collector(tmp_path / "otelcol", config)
    try:
        s = run_workflow(tmp_path, collector.url("http"))

        def metric_points():
            points = {}
            for line in read_otlp_json_lines(out):
                for resource_metrics in line.get("resourceMetrics", ()):
                    resource = {
                        a["key"]: a["value"].get("stringValue")
                        for a in resource_metrics["resource"]["attributes"]
                    }
                    for scope in resource_metrics["scopeMetrics"]:
                        for metric in scope["metrics"]:
                            data = next(v for k, v in metric.items() if isinstance(v, dict))
                            for point in data.get("dataPoints", ()):
                                keys = {a["key"]: a["value"] for a in point.get("attributes", ())}
                                points.setdefault(metric["name"], []).append((resource, keys))
            return points if sc.METRIC_TASK_DURATION in points else None

        points = wait_until(metric_points, 30.0, "the run's metrics in the Collector's file")
    finally:
        collector.stop()
    for name, found in points.items():
        for resource, keys in found:
            assert resource[sc.SERVICE_INSTANCE_ID] == service_instance_id(s.run_id)
            assert resource[sc.SERVICE_NAME] == "scalable-otel"
            assert set(keys) <= LOW_CARDINALITY, name
    durations = {
        (keys[sc.M_TASK_NAME]["stringValue"], keys[sc.M_RESULT]["stringValue"])
        for _, keys in points[sc.METRIC_TASK_DURATION]
    }
    assert durations == {("inc", "success"), ("fail", "failure")}
