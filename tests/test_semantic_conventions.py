"""OpenTelemetry's semantic conventions beside the scalable.* keys: the CI/CD attributes of
the run, task, execute and worker spans, error.type, code.function.name, the workers'
process.* and host.* attributes, service.name and service.instance.id on the resource, and
metric attributes of bounded cardinality (docs/telemetry-schema.md#semantic-conventions)."""

import platform
import sys

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scalable_otel import PipelineOptions, RecordingOptions, ScalableSession
from scalable_otel import semconv as sc
from scalable_otel.ids import service_instance_id
from scalable_otel.recording import RunRecording
from tests import workloads
from tests.conftest import events, read_jsonl, unit_run_config, wait_for

# The metric attribute keys allowed: names of tasks, workers, functions and Dask spans, and
# small enumerations. Never a task key, a worker address or a run id (the resource has it).
LOW_CARDINALITY = {
    sc.M_TASK,
    sc.M_TASK_NAME,
    sc.M_RESULT,
    sc.M_WORKER,
    sc.M_WORKER_NAME,
    sc.M_FUNCTION,
    sc.M_METHOD,
    sc.M_HOST,
    sc.M_SCOPE,
    sc.M_CONTEXT,
    sc.M_ACTIVITY,
    sc.M_GROUP,
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    root = tmp_path_factory.mktemp("semconv")
    with ScalableSession(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        project="semconv",
        runs_dir=root / "runs",
        cache_dir=root / "cache",
        pipeline=PipelineOptions(
            span_processors=[SimpleSpanProcessor(exporter)], metric_readers=[reader]
        ),
        recording=RecordingOptions(resource_interval=0.2),
    ) as s:
        assert s.gather(s.map(workloads.inc, [1, 2, 3])) == [2, 3, 4]
        failed = s.submit(workloads.fail, 5)
        skipped = s.submit(workloads.add, failed, 1)
        with pytest.raises(ValueError):
            s.gather(skipped)
        wait_for(lambda: len(events(s.run_dir, event="task_failed")) == 2)
        # both workers' gauges are set once a sample of each is written
        samples = "resources.jsonl", "resource_sample"
        wait_for(lambda: len({x["worker"] for x in events(s.run_dir, *samples)}) == 2)
        metrics = reader.get_metrics_data()
    return s, exporter.get_finished_spans(), metrics


def _of_kind(spans, kind):
    return [x for x in spans if x.attributes.get(sc.KIND) == kind]


def test_the_run_span_is_a_cicd_pipeline_run(recorded):
    s, spans, _ = recorded
    (run,) = _of_kind(spans, sc.KIND_RUN)
    assert run.attributes[sc.CICD_PIPELINE_NAME] == "semconv"
    assert run.attributes[sc.CICD_PIPELINE_RUN_ID] == s.run_id
    assert run.attributes[sc.CICD_PIPELINE_ACTION_NAME] == "RUN"
    # a task failed: the run failed, and says so in OTel's words too
    assert run.attributes[sc.RUN_STATUS] == sc.RUN_FAILED
    assert run.attributes[sc.CICD_PIPELINE_RESULT] == "failure"
    assert run.attributes[sc.ERROR_TYPE] == sc.RUN_FAILED


def test_each_task_span_is_a_pipeline_task_run_with_its_result(recorded):
    _, spans, _ = recorded
    tasks = {x.attributes[sc.TASK_KEY]: x for x in _of_kind(spans, sc.KIND_TASK)}
    assert len(tasks) == 5
    for key, task in tasks.items():
        assert task.attributes[sc.CICD_PIPELINE_TASK_NAME] == task.attributes[sc.TASK_NAME]
        assert task.attributes[sc.CICD_PIPELINE_TASK_RUN_ID] == key  # first life: its key
    results = sorted(
        (x.attributes[sc.TASK_NAME], x.attributes[sc.CICD_PIPELINE_TASK_RUN_RESULT])
        for x in tasks.values()
    )
    assert results == [
        ("add", "skip"),  # never ran: the task it depends on failed
        ("fail", "failure"),
        ("inc", "success"),
        ("inc", "success"),
        ("inc", "success"),
    ]
    functions = {
        x.attributes[sc.TASK_NAME]: x.attributes[sc.CODE_FUNCTION_NAME] for x in tasks.values()
    }
    assert functions == {
        "inc": "tests.workloads.inc",
        "fail": "tests.workloads.fail",
        "add": "tests.workloads.add",
    }


def test_failed_spans_have_error_type_the_exception_class(recorded):
    _, spans, _ = recorded
    (fail,) = [x for x in _of_kind(spans, sc.KIND_TASK) if x.name == "fail"]
    (add,) = [x for x in _of_kind(spans, sc.KIND_TASK) if x.name == "add"]
    assert fail.attributes[sc.ERROR_TYPE] == "ValueError"
    assert add.attributes[sc.ERROR_TYPE] == "ValueError"  # its dependency's, as Dask raises
    (execute,) = [
        x for x in _of_kind(spans, sc.KIND_EXECUTE) if x.parent.span_id == fail.context.span_id
    ]
    assert execute.attributes[sc.ERROR_TYPE] == "ValueError"
    for span in spans:  # only failures have one (the failed run's span aside)
        if sc.ERROR_TYPE in span.attributes and span.attributes.get(sc.KIND) != sc.KIND_RUN:
            assert span.status.status_code.name == "ERROR", span.name


def test_execute_and_worker_spans_carry_their_cicd_worker(recorded):
    s, spans, _ = recorded
    workers = {x.attributes[sc.WORKER]: x for x in _of_kind(spans, sc.KIND_WORKER)}
    assert len(workers) == 2
    for address, worker in workers.items():
        assert worker.attributes[sc.CICD_WORKER_ID] == address
        assert worker.attributes[sc.CICD_WORKER_URL_FULL] == address
        assert worker.attributes[sc.CICD_WORKER_NAME] == worker.attributes[sc.WORKER_NAME]
    executes = _of_kind(spans, sc.KIND_EXECUTE)
    assert len(executes) == 4
    for execute in executes:
        worker = workers[execute.attributes[sc.WORKER]]
        assert execute.attributes[sc.CICD_WORKER_ID] == execute.attributes[sc.WORKER]
        assert execute.attributes[sc.CICD_WORKER_NAME] == worker.attributes[sc.WORKER_NAME]
        # the rest is its task's and its worker's: not repeated on each execution
        assert sc.CODE_FUNCTION_NAME not in execute.attributes
        assert sc.CICD_WORKER_URL_FULL not in execute.attributes


def test_worker_spans_carry_the_worker_process_and_host(recorded):
    s, spans, _ = recorded
    lines = {line["worker"]: line for line in events(s.run_dir, "workers.jsonl", "worker_added")}
    for worker in _of_kind(spans, sc.KIND_WORKER):
        attrs = worker.attributes
        line = lines[attrs[sc.WORKER]]
        assert attrs[sc.PROCESS_PID] == line["pid"] == attrs[sc.WORKER_PID]
        assert attrs[sc.PROCESS_EXECUTABLE_PATH] == sys.executable  # LocalCluster's workers
        assert attrs[sc.PROCESS_RUNTIME_NAME] == sys.implementation.name
        assert attrs[sc.PROCESS_RUNTIME_VERSION] == platform.python_version()
        assert attrs[sc.HOST_NAME] == platform.node()
        assert attrs[sc.HOST_ARCH] == {"x86_64": "amd64", "aarch64": "arm64"}.get(
            platform.machine(), platform.machine()
        )


def test_the_resource_names_the_service_and_the_run_as_its_instance(recorded):
    s, spans, metrics = recorded
    resources = {x.resource for x in spans} | {r.resource for r in metrics.resource_metrics}
    assert len({tuple(sorted(r.attributes.items())) for r in resources}) == 1
    attributes = next(iter(resources)).attributes
    assert attributes[sc.SERVICE_NAME] == "scalable-otel"
    assert attributes[sc.SERVICE_INSTANCE_ID] == service_instance_id(s.run_id)
    assert attributes[sc.RUN_ID] == s.run_id


def test_metric_points_have_low_cardinality_attributes_only(recorded):
    _, _, metrics = recorded
    seen = {}
    for resource_metrics in metrics.resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    seen.setdefault(metric.name, set()).update(point.attributes or {})
    assert set().union(*seen.values()) <= LOW_CARDINALITY
    assert seen[sc.METRIC_TASKS_COMPLETED] == {sc.M_TASK, sc.M_TASK_NAME}
    assert seen[sc.METRIC_TASK_DURATION] == {sc.M_TASK, sc.M_TASK_NAME, sc.M_RESULT}
    assert seen[sc.METRIC_WORKER_MEMORY] == {sc.M_WORKER, sc.M_WORKER_NAME}
    durations = {
        (dict(p.attributes)[sc.M_TASK_NAME], dict(p.attributes)[sc.M_RESULT]): p.count
        for resource_metrics in metrics.resource_metrics
        for scope in resource_metrics.scope_metrics
        for metric in scope.metrics
        if metric.name == sc.METRIC_TASK_DURATION
        for p in metric.data.data_points
    }
    assert durations == {("inc", "success"): 3, ("fail", "failure"): 1}


def _otlp_spans(run_dir):
    """(resource attributes, span) of every span in traces.otlp.jsonl, values unwrapped."""

    def plain(attributes):
        return {a["key"]: next(iter(a["value"].values())) for a in attributes}

    for request in read_jsonl(run_dir / "traces.otlp.jsonl"):
        for resource_spans in request["resourceSpans"]:
            resource = plain(resource_spans["resource"]["attributes"])
            for scope_spans in resource_spans["scopeSpans"]:
                for span in scope_spans["spans"]:
                    yield resource, {**span, "attributes": plain(span["attributes"])}


def test_traces_otlp_jsonl_carries_the_conventions_and_the_lines_do_not(recorded):
    s, _, _ = recorded
    spans = list(_otlp_spans(s.run_dir))
    assert {r[sc.SERVICE_INSTANCE_ID] for r, _ in spans} == {service_instance_id(s.run_id)}
    by_kind = {}
    for _, span in spans:
        by_kind.setdefault(span["attributes"].get(sc.KIND), []).append(span["attributes"])
    assert by_kind[sc.KIND_RUN][0][sc.CICD_PIPELINE_RUN_ID] == s.run_id
    assert {a[sc.CICD_PIPELINE_TASK_RUN_RESULT] for a in by_kind[sc.KIND_TASK]} == {
        "success",
        "failure",
        "skip",
    }
    assert all(sc.CICD_WORKER_ID in a for a in by_kind[sc.KIND_EXECUTE])
    assert all(sc.HOST_NAME in a for a in by_kind[sc.KIND_WORKER])
    # the run directory's lines keep their own fields: no OTel key is written there
    for file in ("tasks.jsonl", "failures.jsonl", "workers.jsonl"):
        for line in read_jsonl(s.run_dir / file):
            assert not [k for k in line if "." in k], (file, line)


# --- results a real cluster gives only by timing or by killing workers --------------------
W0 = "tcp://127.0.0.1:40000"


@pytest.fixture
def recording(tmp_path):
    exporter = InMemorySpanExporter()
    rec = RunRecording(unit_run_config(tmp_path), span_processors=[SimpleSpanProcessor(exporter)])
    rec.recorder.handle([("worker_added", 100.0, W0, "0", 1, 2**30, "h", 4321, None)])
    yield rec, exporter
    rec.finish(200.0, None)


def test_a_task_killed_with_its_workers_is_an_error_and_a_released_one_a_cancellation(
    recording,
):
    rec, exporter = recording
    killed = "KilledWorker('every worker that ran 'sim-1' died while running it')"
    rec.handle(
        [
            ("submit", 101.0, "sim-1", "sim", (), None),
            ("processing", 101.0, "sim-1", W0, 1),
            ("error", 102.0, "sim-1", W0, 101.0, 101.5, killed, "", 1),
            ("submit", 101.0, "sim-2", "sim", (), None),
            ("forgotten", 103.0, "sim-2"),
        ]
    )
    spans = {x.attributes.get(sc.TASK_KEY): x for x in exporter.get_finished_spans()}
    assert spans["sim-1"].attributes[sc.CICD_PIPELINE_TASK_RUN_RESULT] == "error"
    assert spans["sim-1"].attributes[sc.ERROR_TYPE] == "KilledWorker"
    assert spans["sim-2"].attributes[sc.CICD_PIPELINE_TASK_RUN_RESULT] == "cancellation"
    assert sc.ERROR_TYPE not in spans["sim-2"].attributes


def test_a_later_life_of_a_key_has_its_own_task_run_id(recording):
    rec, exporter = recording
    rec.handle(
        [
            ("submit", 101.0, "sim-1", "sim", (), None),
            ("processing", 101.0, "sim-1", W0, 1),
            ("done", 101.5, "sim-1", W0, 101.1, 101.4, 8, "int", 1),
            ("forgotten", 102.0, "sim-1"),
            ("submit", 103.0, "sim-1", "sim", (), None),  # submitted again: a new life
            ("processing", 103.0, "sim-1", W0, 2),
            ("done", 103.5, "sim-1", W0, 103.1, 103.4, 8, "int", 2),
        ]
    )
    tasks = [x for x in exporter.get_finished_spans() if x.name == "sim"]
    assert [x.attributes[sc.CICD_PIPELINE_TASK_RUN_ID] for x in tasks] == ["sim-1", "sim-1#2"]


def test_a_worker_process_reported_before_its_addition_reaches_its_span(recording):
    rec, exporter = recording
    w1 = "tcp://127.0.0.1:40001"
    process = {sc.PROCESS_PID: 99, sc.HOST_NAME: "node-7", "not.a.process.key": 1}
    rec.handle(
        [
            ("worker_batch", 101.0, w1, {"name": "1", "process": process}),
            ("worker_added", 101.1, w1, "1", 1, 2**30, "10.0.0.7", 99, None),
            ("worker_removed", 102.0, w1, 0, "handle-worker-cleanup-1", 0),
        ]
    )
    (worker,) = [x for x in exporter.get_finished_spans() if x.name == sc.SPAN_WORKER]
    assert worker.attributes[sc.HOST_NAME] == "node-7"
    assert worker.attributes[sc.PROCESS_PID] == 99
    assert "not.a.process.key" not in worker.attributes
    assert worker.attributes[sc.ERROR_TYPE] == sc.WORKER_ERROR_TYPE  # it crashed


def test_a_service_instance_id_of_the_user_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=node-7-run")
    rec = RunRecording(unit_run_config(tmp_path))
    try:
        assert rec.pipeline.tracer_provider.resource.attributes[sc.SERVICE_INSTANCE_ID] == (
            "node-7-run"
        )
    finally:
        rec.finish(101.0, None)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    rec = RunRecording(unit_run_config(tmp_path / "again"))
    try:
        resource = rec.pipeline.tracer_provider.resource.attributes
        assert resource[sc.SERVICE_INSTANCE_ID] == service_instance_id(resource[sc.RUN_ID])
    finally:
        rec.finish(101.0, None)
