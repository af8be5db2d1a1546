"""Canaries: each private name of Dask, OpenTelemetry or the Scalable tool that
scalable-otel relies on (`scalable_otel.compat`), checked against the installed versions.

A failure names what moved. The workflow survives it (tests/test_moved_dask.py), but
records less: read `compat.LOST` for what, then adapt the code or the version bounds in
pyproject.toml. `.ci/run` runs these against the oldest and the newest Dask supported.
"""

import inspect
import os
import signal
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin

from scalable_otel import compat


def moved(name: str, how: str) -> str:
    return f"{name} moved: {how}. The workflow goes on, but {compat.LOST[name]}."


# --- Dask ------------------------------------------------------------------------------------
def test_run_task_simple_takes_task_data_time_delay():
    from distributed import worker

    runner = getattr(worker, "_run_task_simple", None)
    assert callable(runner), moved(compat.RUN_TASK, "distributed.worker has no _run_task_simple")
    params = list(inspect.signature(inspect.unwrap(runner)).parameters)
    assert params == ["task", "data", "time_delay"], moved(
        compat.RUN_TASK,
        f"distributed.worker._run_task_simple no longer takes (task, data, time_delay): {params}",
    )
    assert "_run_task_simple" in worker._run_task.__code__.co_names, moved(
        compat.RUN_TASK, "distributed.worker._run_task no longer calls _run_task_simple by name"
    )


def _where_am_i():
    from distributed import worker

    frames = [(f.function, f.frame.f_globals.get("__name__")) for f in inspect.stack()]
    key = worker.thread_state.key
    try:  # where the run's plugin tags a task with its runs (task_context.task_runs)
        annotations = worker.get_worker().state.tasks[key].annotations
    except Exception as exc:
        annotations = repr(exc)
    return ("_run_task_simple", "distributed.worker") in frames, key, annotations


def test_tasks_run_inside_run_task_simple_with_thread_state_key_set():
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        with dask.annotate(canary="yes"):
            inside, key, annotations = client.submit(_where_am_i, key="canary-key").result()
    assert inside, moved(compat.RUN_TASK, "a task no longer runs inside _run_task_simple")
    assert key == "canary-key", moved(
        compat.RUN_TASK, f"distributed.worker.thread_state.key is {key!r} inside a task"
    )
    assert isinstance(annotations, dict) and annotations.get("canary") == "yes", moved(
        compat.RUN_TASK, f"Worker.state.tasks[key].annotations inside a task is {annotations!r}"
    )


class _Seen(SchedulerPlugin):
    """Every transition's keywords and every event, as the run's scheduler plugin sees them."""

    def __init__(self):
        self.transitions = []
        self.events = []

    def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs):
        self.transitions.append((key, start, finish, stimulus_id, kwargs))

    def log_event(self, topic, msg):
        self.events.append((topic, msg))

    def of(self, key, start, finish):
        return [t for t in self.transitions if t[:3] == (key, start, finish)]


def _attempt(directory: str, name: str) -> int:
    """This task's attempt number, counted in a file (attempts may run on other workers)."""
    path = Path(directory) / name
    with path.open("a") as f:
        f.write("x")
    return len(path.read_text())


def fine(x):
    return x + 1


def fails(x):
    raise ValueError(f"bad {x}")


def fails_once(directory):
    if _attempt(directory, "fails_once") == 1:
        raise ValueError("first attempt")
    return "second attempt"


def kills_worker(directory, name, times):
    if _attempt(directory, name) <= times:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """One real run: a result, an error, a retry, a lost worker and a KilledWorker."""
    import dask

    directory = str(tmp_path_factory.mktemp("canary"))
    plugin = _Seen()
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.scheduler.add_plugin(plugin)
        # one after the other, so that a killed worker takes no other task with it
        client.gather(
            [
                client.submit(fine, 1, key="fine"),
                client.submit(fails, 1, key="fails"),
                client.submit(fails_once, directory, key="fails_once", retries=1),
            ],
            errors="skip",
        )
        client.submit(kills_worker, directory, "lost_once", 1, key="lost_once").result()
        killed = client.submit(kills_worker, directory, "killed", 2, key="killed")
        client.gather([killed], errors="skip")
    return plugin


def test_transition_keywords(seen):
    (done,) = seen.of("fine", "processing", "memory")
    missing = {"worker", "nbytes", "typename", "startstops"} - set(done[4])
    assert not missing, moved(compat.TRANSITION_KWARGS, f"processing->memory lacks {missing}")
    actions = [ss.get("action") for ss in done[4]["startstops"]]
    assert "compute" in actions, moved(
        compat.TRANSITION_KWARGS, f"startstops has no compute action: {actions}"
    )
    (erred,) = seen.of("fails", "processing", "erred")
    missing = {"worker", "exception_text", "traceback_text", "startstops"} - set(erred[4])
    assert not missing, moved(compat.TRANSITION_KWARGS, f"processing->erred lacks {missing}")
    killed = seen.of("killed", "processing", "erred")
    assert killed and killed[-1][4].get("cause") == "killed", moved(
        compat.TRANSITION_KWARGS, "a KilledWorker's processing->erred carries no cause=key"
    )


def test_stimulus_ids_say_retry_and_lost_worker(seen):
    requeued = [t for t in seen.transitions if t[0] == "fails_once" and t[1] == "processing"]
    assert requeued and requeued[0][2] in ("released", "waiting"), requeued
    assert requeued[0][3].startswith("task-erred"), moved(
        compat.STIMULUS_IDS, f"a retry's stimulus id is {requeued[0][3]!r}"
    )
    lost = [t for t in seen.transitions if t[0] == "lost_once" and t[1] == "processing"]
    assert lost and lost[0][2] in ("released", "waiting"), lost
    assert "worker" in lost[0][3], moved(
        compat.STIMULUS_IDS, f"a lost worker's stimulus id is {lost[0][3]!r}"
    )


def test_remove_worker_event(seen):
    removed = [
        msg
        for topic, msg in seen.events
        if topic == "all" and isinstance(msg, dict) and msg.get("action") == "remove-worker"
    ]
    assert removed, moved(compat.REMOVE_WORKER_EVENT, "no remove-worker event on topic 'all'")
    for field in ("worker", "processing-tasks", "lost-computed-tasks", "stimulus_id"):
        assert all(field in msg for msg in removed), moved(
            compat.REMOVE_WORKER_EVENT, f"the event has no {field!r}"
        )
    assert any("lost_once" in msg["processing-tasks"] for msg in removed), removed


def test_scheduler_broker_topics_can_be_bounded():
    from scalable_otel.instrumentation.scheduler_plugin import _bound_topic

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert _bound_topic(cluster.scheduler, "canary"), moved(
            compat.BROKER_TOPICS, "distributed.broker.Topic or Scheduler._broker._topics is gone"
        )
        for i in range(10):
            cluster.scheduler.log_event("canary", i)
        kept = client.get_events("canary")
    assert [msg for _, msg in kept] == [6, 7, 8, 9], moved(
        compat.BROKER_TOPICS, f"a bounded topic kept {len(kept)} of 10 events, not 4"
    )


async def _fine_metrics_after_a_heartbeat(dask_worker):
    await dask_worker.heartbeat()


def _fine_metrics(dask_scheduler, key):
    from distributed.spans import Span

    ts = dask_scheduler.tasks[key]
    sp = dask_scheduler.extensions["spans"].spans[ts.group.span_id]
    return (
        sorted(k for k in dask_scheduler.cumulative_worker_metrics if isinstance(k, tuple)),
        tuple(sp.name),
        [tuple(c.name) for c in sp.children],
        sorted(sp.cumulative_worker_metrics),
        isinstance(Span.cumulative_worker_metrics, property),
    )


def test_the_scheduler_holds_fine_performance_metrics_by_prefix_and_span():
    from distributed import span

    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        with span("canary"):
            with span("inner"):
                client.submit(len, "abc", key="inner-1").result()
            future = client.submit(len, "abcd", key="canary-1")
            future.result()
        client.run(_fine_metrics_after_a_heartbeat)
        cluster_keys, name, children, span_keys, is_property = client.run_on_scheduler(
            _fine_metrics, key="canary-1"
        )
    assert ("execute", "canary", "thread-cpu", "seconds") in cluster_keys, moved(
        compat.FINE_METRICS,
        f"Scheduler.cumulative_worker_metrics has no (execute, prefix, activity, unit) keys: "
        f"{cluster_keys[:5]}",
    )
    assert name == ("canary",) and children == [("canary", "inner")], moved(
        compat.FINE_METRICS, f"a span is named {name!r} with children {children!r}"
    )
    assert is_property and ("execute", "canary", "thread-cpu", "seconds") in span_keys, moved(
        compat.FINE_METRICS, f"Span.cumulative_worker_metrics holds {span_keys[:5]}"
    )


def _own_client_id(dask_worker):
    return str(dask_worker._get_client().id)


def test_a_worker_s_own_client_is_named_worker():
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        (client_id,) = client.run(_own_client_id).values()
    assert client_id.startswith("Client-worker-"), moved(
        compat.WORKER_CLIENT_ID, f"a worker's own client is {client_id!r}"
    )


class _Noted(WorkerPlugin):
    """A worker plugin that notes on its worker that it was set up."""

    def setup(self, worker):
        worker.noted = True


def test_the_scheduler_registers_a_worker_plugin_leaving_no_comm_open():
    import asyncio

    from distributed import Scheduler, Worker
    from distributed.protocol.pickle import dumps

    from scalable_otel.instrumentation.scheduler_plugin import TaskRecordPlugin

    async def register():
        async with (
            Scheduler(dashboard_address=":0") as scheduler,
            Worker(scheduler.address) as worker,
        ):
            plugin = TaskRecordPlugin(run_id="canary")
            await plugin._register_worker_plugin(scheduler, "noted", dumps(_Noted()))
            await plugin.close()
            open_comms = [addr for addr, comms in scheduler.rpc.available.items() if comms]
            return getattr(worker, "noted", False), open_comms, compat.counts()

    noted, open_comms, fallbacks = asyncio.run(register())
    assert compat.WORKER_PLUGIN_HANDLER not in fallbacks, moved(
        compat.WORKER_PLUGIN_HANDLER, "Scheduler.register_worker_plugin takes other arguments"
    )
    assert noted and not open_comms, moved(
        compat.WORKER_PLUGIN_HANDLER,
        f"the plugin was {'' if noted else 'not '}set up; comms left open to {open_comms}",
    )


class _SpanAnnotations(SchedulerPlugin):
    """What the scheduler's plugins see of a task's `distributed.span` annotation."""

    def __init__(self):
        self.groups = {}

    def update_graph(self, scheduler, *, tasks=(), **kwargs):
        from scalable_otel.instrumentation.scheduler_plugin import task_group

        for key in tasks:
            self.groups[key] = task_group(scheduler.tasks[key])


def test_span_annotation_names_and_ids_reach_scheduler_plugins():
    import distributed

    plugin = _SpanAnnotations()
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        cluster.scheduler.add_plugin(plugin)
        client.submit(abs, -1, key="outside").result()
        with distributed.span("outer") as outer_id, distributed.span("inner") as inner_id:
            client.submit(abs, -2, key="inside").result()
    assert plugin.groups.get("outside", "absent") is None, moved(
        compat.SPAN_ANNOTATION, f"a task outside any span has {plugin.groups.get('outside')}"
    )
    assert plugin.groups.get("inside") == ((outer_id, inner_id), ("outer", "inner")), moved(
        compat.SPAN_ANNOTATION, f"a task in nested spans has {plugin.groups.get('inside')}"
    )


# --- OpenTelemetry SDK -------------------------------------------------------------------------
def test_span_attributes_keep_a_plain_dict():
    from opentelemetry.sdk.trace import TracerProvider

    span = TracerProvider().get_tracer("canary").start_span("s", attributes={"a": 1})
    span.end()
    inner = getattr(getattr(span, "_attributes", None), "_dict", None)
    assert inner == {"a": 1} and type(inner) is dict, moved(
        compat.SPAN_ATTRIBUTES, "a span's _attributes._dict is not a plain dict"
    )


def test_readable_span_properties_read_the_fields_a_recorded_span_fills():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, Status, StatusCode

    from scalable_otel.recorded_spans import SpanSink

    ended = []

    class Keep:
        def on_start(self, span, parent_context=None):
            pass

        def on_end(self, span):
            ended.append(span)

    sink = SpanSink([Keep()], Resource.create({}), InstrumentationScope("canary"))
    span = sink.start("s", parent=SpanContext(1, 2, False), start_time=10, attributes={"a": 1})
    span.set_attribute("b", "x")
    span.add_event("e", {"c": 2}, timestamp=11)
    span.set_status(Status(StatusCode.ERROR, "why"))
    span.end(end_time=12)
    (done,) = ended
    seen = (
        dict(done.attributes),
        [(e.name, dict(e.attributes), e.timestamp) for e in done.events],
        (done.status.status_code, done.status.description),
        (done.start_time, done.end_time),
    )
    assert seen == (
        {"a": 1, "b": "x"},
        [("e", {"c": 2}, 11)],
        (StatusCode.ERROR, "why"),
        (10, 12),
    ), moved(compat.READABLE_SPAN, f"a ReadableSpan's properties read other fields: {seen}")


def test_tracer_provider_active_span_processor_reaches_added_processors():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    target = getattr(provider, "_active_span_processor", None)
    assert target is not None, moved(compat.ACTIVE_SPAN_PROCESSOR, "the attribute is gone")
    other = TracerProvider()
    span = other.get_tracer("canary").start_span("s")
    span.end()
    target.on_end(span)
    assert [s.name for s in exporter.get_finished_spans()] == ["s"], moved(
        compat.ACTIVE_SPAN_PROCESSOR, "its on_end no longer reaches the added processors"
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_otlp_metric_exporters_keep_their_preferences(protocol):
    from opentelemetry.sdk.metrics import Counter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    exporter = OTLPMetricExporter(
        endpoint="http://127.0.0.1:9",
        preferred_temporality={Counter: AggregationTemporality.DELTA},
    )
    temporality = getattr(exporter, "_preferred_temporality", None)
    assert isinstance(temporality, dict), moved(compat.PREFERRED_TEMPORALITY, "it is gone")
    assert temporality.get(Counter) == AggregationTemporality.DELTA, moved(
        compat.PREFERRED_TEMPORALITY, "it no longer holds the exporter's preferences"
    )
    assert isinstance(getattr(exporter, "_preferred_aggregation", None), dict), moved(
        compat.PREFERRED_TEMPORALITY, "_preferred_aggregation is gone"
    )


def test_sdk_logs_emit_event_records_to_processors():
    try:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter  # noqa
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa
        from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
        from opentelemetry.sdk._logs.export import (  # noqa: F401
            BatchLogRecordProcessor,
            LogRecordExportResult,
        )
    except ImportError as exc:
        pytest.fail(moved(compat.SDK_LOGS, str(exc)))

    seen = []

    class Keep(LogRecordProcessor):
        def on_emit(self, log_record):
            record = log_record.log_record
            seen.append((record.event_name, dict(record.attributes), record.timestamp))

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(Keep())
    provider.get_logger("canary").emit(
        timestamp=123, context=None, event_name="canary.event", attributes={"a": 1}
    )
    assert seen == [("canary.event", {"a": 1}, 123)], moved(
        compat.SDK_LOGS, f"Logger.emit(event_name=...) reached processors as {seen}"
    )


# --- the Scalable tool ---------------------------------------------------------------------
def test_scalable_cacheable_opens_its_cache_through_the_module_global():
    caching = pytest.importorskip("scalable.caching")
    from diskcache import Cache

    current = getattr(caching, "Cache", None)  # ours once instrumented: a subclass
    assert isinstance(current, type) and issubclass(current, Cache), moved(
        compat.SCALABLE_CACHE, f"scalable.caching.Cache is {current!r}, not diskcache.Cache"
    )

    def work(x):
        return x

    inner = caching.cacheable(work)
    assert "Cache" in inner.__code__.co_names, moved(
        compat.SCALABLE_CACHE, "cacheable no longer opens Cache by its module's global name"
    )
    assert "func" in inner.__code__.co_freevars, moved(
        compat.SCALABLE_CACHE, "cacheable's wrapper no longer holds the function as `func`"
    )


def test_every_name_relied_on_has_a_canary_and_a_line_in_the_docs():
    source = Path(__file__).read_text()
    docs = (Path(__file__).parent.parent / "docs" / "reliability.md").read_text()
    constants = [name for name in vars(compat) if name.isupper() and name != "LOST"]
    assert set(compat.LOST) == {getattr(compat, name) for name in constants}
    for name in constants:
        assert source.count(f"compat.{name}") >= 1, f"no canary for compat.{name}"
    canaries = [
        line[4 : line.index("(")]
        for line in source.splitlines()
        if line.startswith("def test_") and "every_name" not in line
    ]
    for test in canaries:
        assert f"`{test}`" in docs, f"docs/reliability.md does not name {test}"


class _CallsSeen(Client):
    """A client noting which of its private coroutines ran (the instrumentor wraps them)."""

    seen: list = []

    async def _start(self, *args, **kwargs):
        self.seen.append("_start")
        return await super()._start(*args, **kwargs)

    async def _close(self, *args, **kwargs):
        self.seen.append("_close")
        return await super()._close(*args, **kwargs)


def test_asynchronous_clients_connect_in_start_and_close_in_close():
    import asyncio

    from distributed import Scheduler

    async def use_clients():
        async with Scheduler(dashboard_address=":0") as scheduler:
            client = await _CallsSeen(scheduler.address, asynchronous=True)
            assert client.status == "running"
            await client.close()
            async with _CallsSeen(scheduler.address, asynchronous=True) as client:
                assert client.status == "running"

    _CallsSeen.seen = []
    asyncio.run(use_clients())
    assert _CallsSeen.seen[:1] == ["_start"], moved(
        compat.CLIENT_START, f"await Client(asynchronous=True) ran {_CallsSeen.seen}"
    )
    assert _CallsSeen.seen == ["_start", "_close", "_start", "_close"], moved(
        compat.CLIENT_CLOSE, f"await client.close() and `async with` ran {_CallsSeen.seen}"
    )
