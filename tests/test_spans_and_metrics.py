"""The OTel signals themselves: span tree, attributes, status, and metric instruments."""

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from scalable_otel import PipelineOptions, RecordingOptions, ScalableSession
from scalable_otel import semconv as sc
from tests import workloads
from tests.conftest import events, wait_for


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    root = tmp_path_factory.mktemp("spans")
    with ScalableSession(
        target="local",
        n_workers=1,
        threads_per_worker=1,
        project="spans",
        runs_dir=root / "runs",
        cache_dir=root / "cache",
        pipeline=PipelineOptions(
            span_processors=[SimpleSpanProcessor(exporter)], metric_readers=[reader]
        ),
        recording=RecordingOptions(resource_interval=0.2),
    ) as s:
        s.gather(s.map(workloads.sleep_then, [1, 2], seconds=0.2))
        with pytest.raises(ValueError):
            s.gather(s.submit(workloads.fail, 5))
        wait_for(lambda: events(s.run_dir, event="task_failed"))
        metrics = reader.get_metrics_data()
    return s, exporter.get_finished_spans(), metrics


def test_one_trace_with_run_task_and_execute_spans(recorded):
    s, spans, _ = recorded
    assert len({span.context.trace_id for span in spans}) == 1
    (run,) = [x for x in spans if x.name == sc.SPAN_RUN]
    assert run.parent is None and run.attributes[sc.RUN_ID] == s.run_id
    tasks = [x for x in spans if x.attributes.get(sc.KIND) == sc.KIND_TASK]
    assert sorted(x.name for x in tasks) == ["fail", "sleep_then", "sleep_then"]
    for task in tasks:
        assert task.parent.span_id == run.context.span_id
        assert task.resource.attributes[sc.RUN_ID] == s.run_id  # on the resource, once
        assert task.attributes[sc.TASK_KEY].startswith(task.name + "-")
        assert task.attributes[sc.WORKER].startswith("tcp://")
        assert task.attributes[sc.TASK_ATTEMPT] == 1
        (execute,) = [x for x in spans if x.parent and x.parent.span_id == task.context.span_id]
        assert execute.name == sc.SPAN_EXECUTE
        # the execute span is the worker's own timing, inside the task span
        assert task.start_time <= execute.start_time < execute.end_time <= task.end_time
        assert [e.name for e in task.events][:1] == ["queued"]
    ok = next(x for x in tasks if x.name == "sleep_then")
    assert ok.attributes[sc.TASK_ARGS] in ('{"x":1,"seconds":0.2}', '{"x":2,"seconds":0.2}')
    assert 0.19 < ok.attributes[sc.TASK_DURATION] < 0.5
    assert ok.status.status_code is StatusCode.UNSET


def test_failed_task_span_has_error_status_and_exception_event(recorded):
    _, spans, _ = recorded
    (failed,) = [x for x in spans if x.name == "fail"]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "ValueError: bad input 5"
    (exc,) = [e for e in failed.events if e.name == "exception"]
    assert exc.attributes["exception.type"] == "ValueError"
    assert "raise ValueError" in exc.attributes["exception.stacktrace"]


def test_worker_spans_cover_worker_lifetimes(recorded):
    s, spans, _ = recorded
    workers = [x for x in spans if x.name == sc.SPAN_WORKER]
    assert len(workers) == 1
    assert workers[0].attributes[sc.WORKER_END] == sc.WORKER_REMOVED
    assert len(events(s.run_dir, "workers.jsonl")) == 2


def _points(metrics):
    found = {}
    for rm in metrics.resource_metrics:
        for scope in rm.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = (metric, list(metric.data.data_points))
    return found


def test_metric_instruments_with_bounded_labels(recorded):
    s, _, metrics = recorded
    found = _points(metrics)
    assert {
        sc.METRIC_TASKS_SUBMITTED,
        sc.METRIC_TASKS_COMPLETED,
        sc.METRIC_TASKS_FAILED,
        sc.METRIC_TASK_DURATION,
        sc.METRIC_TASK_QUEUE_WAIT,
        sc.METRIC_WORKERS_ACTIVE,
        sc.METRIC_WORKER_CPU,
        sc.METRIC_WORKER_MEMORY,
    } <= set(found)
    completed = {p.attributes["task"]: p.value for p in found[sc.METRIC_TASKS_COMPLETED][1]}
    assert completed == {"sleep_then": 2}
    failed = {p.attributes["task"]: p.value for p in found[sc.METRIC_TASKS_FAILED][1]}
    assert failed == {"fail": 1}
    duration, points = found[sc.METRIC_TASK_DURATION]
    assert duration.unit == "s"
    point = next(p for p in points if p.attributes["task"] == "sleep_then")
    assert point.count == 2 and 0.38 < point.sum < 1.0
    assert list(point.explicit_bounds) == list(sc.SECONDS_BUCKETS)
    # second-scale buckets: 0.2 s tasks are not all in the first bucket
    assert point.bucket_counts[0] == 0
    for _, pts in found.values():
        for p in pts:
            for label in p.attributes:
                # energy's method is estimated or measured; its host one per machine
                bounded = {sc.M_TASK, sc.M_WORKER, sc.M_STATUS, sc.M_FUNCTION, sc.M_METHOD}
                # a fine metric's: Dask's names of contexts and activities, span names
                bounded |= {sc.M_SCOPE, sc.M_CONTEXT, sc.M_ACTIVITY, sc.M_GROUP}
                # OTel's keys for a task's and a worker's names, and a task run's result
                bounded |= {sc.M_TASK_NAME, sc.M_WORKER_NAME, sc.M_RESULT}
                assert label in bounded | {sc.M_HOST}
            assert s.run_id not in p.attributes.values()
    memory = found[sc.METRIC_WORKER_MEMORY][1]
    assert memory and all(p.value > 10_000_000 for p in memory)
