"""A Dask release that moves what scalable-otel relies on: tasks still succeed and are
recorded; the run records less (no in-task trace context) and says what moved.

Each test simulates one move in real worker processes of a `LocalCluster`
(`tests/moved_dask.py`), before the run's worker plugin is set up."""

import json

import pytest
from distributed import Client, LocalCluster

from scalable_otel import ScalableSession, compat
from tests.conftest import events
from tests.moved_dask import MovedDask

N_TASKS = 8
N_WORKERS = 2


def traced(x):
    """A task making a span with the plain OpenTelemetry API: its trace and parent."""
    from opentelemetry import trace

    with trace.get_tracer("user.code").start_as_current_span("inside") as span:
        parent = getattr(span, "parent", None)
        return (
            x * 2,
            format(span.get_span_context().trace_id, "032x"),
            None if parent is None else format(parent.span_id, "016x"),
        )


@pytest.mark.parametrize(
    "how, context_kept, fallbacks",
    [
        # no _run_task_simple any more: no context, one warning and count per worker
        ("renamed", False, {compat.RUN_TASK: N_WORKERS}),
        # called another way: the wrapper passes everything through, context kept
        ("new_signature", True, {}),
        # scalable-otel's own part fails in every task: counted, never raised
        ("failing_context", False, {compat.RUN_TASK: N_TASKS}),
    ],
)
def test_tasks_succeed_and_are_recorded_when_dask_moves(
    project_dir, capfd, how, context_kept, fallbacks
):
    with (
        LocalCluster(
            n_workers=N_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(MovedDask(how))
        with ScalableSession.attach(client, project="moved") as session:
            results = session.gather(session.map(traced, range(N_TASKS)))

    assert [r[0] for r in results] == [x * 2 for x in range(N_TASKS)]
    run = json.loads((session.run_dir / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["tasks_completed"] == N_TASKS
    completed = events(session.run_dir, event="task_completed")
    assert sorted(line["args"]["x"] for line in completed) == list(range(N_TASKS))
    assert run["telemetry_fallbacks"] == fallbacks

    # spans made in a task nest under its execution's span (its task_started line)
    started = events(session.run_dir, event="task_started")
    execution = {line["key"]: line["span_id"] for line in started}
    execute_span = {line["args"]["x"]: execution[line["key"]] for line in completed}
    for x, (_, trace_id, parent) in enumerate(results):
        if context_kept:
            assert (trace_id, parent) == (run["trace_id"], execute_span[x])
        else:
            assert trace_id != run["trace_id"] and parent is None
    if fallbacks:
        err = capfd.readouterr().err
        assert f"{compat.RUN_TASK} has moved" in err
        assert "counted in run.json's telemetry_fallbacks" in err


def test_a_scheduler_without_bounded_topics_still_records_the_run(project_dir, monkeypatch):
    """distributed.broker.Topic has moved (for the plugin: Dask keeps its own reference)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "distributed.broker", types.ModuleType("moved"))
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as session:
        assert session.gather(session.map(traced, range(3)))[2][0] == 4
    run = json.loads((session.run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["tasks_completed"] == 3
    assert len(events(session.run_dir, event="task_completed")) == 3
    assert run["telemetry_fallbacks"] == {compat.BROKER_TOPICS: 1}


def test_a_remove_worker_event_without_its_task_lists_still_records_the_run(
    project_dir, monkeypatch
):
    """The scheduler's remove-worker event loses the lists of tasks the worker held."""
    from distributed.scheduler import Scheduler

    log_event = Scheduler.log_event

    def without_task_lists(self, topic, msg):
        if isinstance(msg, dict) and msg.get("action") == "remove-worker":
            msg = {k: v for k, v in msg.items() if not k.endswith("-tasks")}
        return log_event(self, topic, msg)

    monkeypatch.setattr(Scheduler, "log_event", without_task_lists)
    with ScalableSession(target="local", n_workers=2, threads_per_worker=1) as session:
        assert len(session.gather(session.map(traced, range(4)))) == 4
    run = json.loads((session.run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["tasks_completed"] == 4
    removed = events(session.run_dir, "workers.jsonl", "worker_removed")
    assert len(removed) == 2 and all(line["lost_tasks"] == 0 for line in removed)
    assert run["telemetry_fallbacks"] == {compat.REMOVE_WORKER_EVENT: 2}


def test_a_span_annotation_of_another_shape_records_the_tasks_without_groups(
    project_dir, monkeypatch
):
    """Dask's span annotation loses its ids: tasks are recorded, ungrouped, and counted."""
    import distributed
    from distributed.spans import SpansSchedulerExtension

    observe_tasks = SpansSchedulerExtension.observe_tasks

    def without_ids(self, tss, *args, **kwargs):
        out = observe_tasks(self, tss, *args, **kwargs)
        for ts in tss:
            if ts.annotations and "span" in ts.annotations:
                ts.annotations = {**ts.annotations, "span": {"name": ("moved",)}}
        return out

    monkeypatch.setattr(SpansSchedulerExtension, "observe_tasks", without_ids)
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as session:
        with distributed.span("calibration"):
            assert session.gather(session.map(traced, range(3)))[0][0] == 0
    run = json.loads((session.run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["tasks_completed"] == 3
    lines = events(session.run_dir)
    assert lines and all(line["group"] is None for line in lines)
    assert run["telemetry_fallbacks"] == {compat.SPAN_ANNOTATION: 1}


def _in_a_span(x):
    return x + 1


def test_spans_without_their_metrics_still_leave_the_prefixes_figures(project_dir, monkeypatch):
    """Dask's spans no longer hold fine performance metrics: said once, the rest recorded."""
    from distributed import span
    from distributed.spans import Span

    monkeypatch.delattr(Span, "cumulative_worker_metrics")
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1) as session:
        with span("study"):
            assert session.gather(session.map(_in_a_span, range(3))) == [1, 2, 3]
    run = json.loads((session.run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["tasks_completed"] == 3
    assert run["telemetry_fallbacks"] == {compat.FINE_METRICS: 1}
    lines = events(session.run_dir, "metrics.jsonl")
    assert {x["scope"] for x in lines} <= {"prefix", "cluster"}
    assert {x["prefix"] for x in lines if x["scope"] == "prefix"} == {
        "in_a_span"
    }  # Dask's prefix of the key


def test_an_otlp_metric_exporter_without_its_preferences_gets_the_sdk_defaults():
    from opentelemetry.sdk.metrics.export import MetricExporter

    from scalable_otel.exporters.backends import _Guard, _guarded_metric_exporter

    class Moved:  # an SDK exporter whose preferences moved elsewhere
        pass

    wrapped = _guarded_metric_exporter(Moved(), _Guard("metrics", "http://127.0.0.1:9"))
    assert isinstance(wrapped, MetricExporter)  # built with the SDK's defaults (cumulative)
    assert compat.counts().get(compat.PREFERRED_TEMPORALITY, 0) >= 1


def test_a_failing_watch_of_the_scalable_tool_s_cache_never_reaches_its_function(
    project_dir, monkeypatch
):
    caching = pytest.importorskip("scalable.caching")
    from scalable_otel import cache
    from scalable_otel.instrumentation import scalable_library
    from tests import scalable_tool_workloads as tool

    monkeypatch.setattr(caching, "cachedir", str(project_dir / "tool-cache"))

    def decide(self):
        raise RuntimeError("the watch failed")

    monkeypatch.setattr(scalable_library._Lookup, "decide", decide)
    before = compat.counts().get(compat.SCALABLE_CACHE, 0)
    seen = []
    cache.set_driver_sink(seen.append, None)
    try:
        assert [tool.simulate(3), tool.simulate(3)] == [30, 30]  # computed, then stored
    finally:
        cache.set_driver_sink(None, None)
    assert {line["function"] for line in seen} <= {"simulate"}  # what could still be told
    assert compat.counts()[compat.SCALABLE_CACHE] > before


def test_a_moved_worker_plugin_handler_leaves_the_registration_to_the_client(
    project_dir, monkeypatch
):
    """The scheduler's register_worker_plugin handler takes its arguments another way: the
    run's scheduler plugin cannot register the worker plugin, the client's own call does."""
    from distributed.scheduler import Scheduler

    from scalable_otel.instrumentor import DaskInstrumentor

    async def keywords_only(self, comm=None, *, plugin, name, idempotent=False):
        raise AssertionError("not reached: the call's arguments no longer fit")

    instrumentor = DaskInstrumentor()
    instrumentor.instrument(runs_dir=project_dir / "runs")
    try:
        with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
            # after the scheduler started: its handler table (the client's way in) keeps
            # the method it had
            monkeypatch.setattr(Scheduler, "register_worker_plugin", keywords_only)
            with Client(cluster) as client:
                assert len(client.gather(client.map(traced, range(3)))) == 3
    finally:
        instrumentor.uninstrument()
    (run_dir,) = (project_dir / "runs").glob("run-*")
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["tasks_completed"] == 3
    # the worker plugin was there: each task's start came from it, in-task spans too
    assert len(events(run_dir, event="task_started")) == 3
    assert len(events(run_dir, "resources.jsonl", "task_resources")) == 3
    assert run["telemetry_fallbacks"] == {compat.WORKER_PLUGIN_HANDLER: 1}
