"""DaskInstrumentor: plain `distributed.Client`s record runs, on one real LocalCluster."""

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import orjson
import pytest
from distributed import Client, get_client, rejoin, secede, worker_client

from scalable_otel import ScalableSession
from scalable_otel import semconv as sc
from scalable_otel.instrumentor import DaskInstrumentor
from scalable_otel.rundir import list_runs
from tests import workloads
from tests.conftest import REPO, events, wait_for


def runs(root: Path) -> list[Path]:
    """The run directories in start order (two runs can start within one second, and a
    name's last part is random)."""
    return list_runs(root) if root.exists() else []


def run_json(run_dir: Path) -> dict:
    return orjson.loads((run_dir / "run.json").read_bytes())


def assert_detached(cluster) -> None:
    """The cluster as it was: none of the run's plugins left behind (each run's are named
    after its run id)."""
    assert not [n for n in cluster.scheduler.plugins if n.startswith(sc.SCHEDULER_PLUGIN_NAME)]
    assert not [n for n in cluster.scheduler.worker_plugins if n.startswith(sc.WORKER_PLUGIN_NAME)]


def test_every_new_client_records_a_run_finished_when_it_closes(cluster, instrumentor, runs_root):
    instrumentor.instrument(runs_dir=runs_root, project="inst")
    client = Client(cluster)
    try:
        (run_dir,) = runs(runs_root)
        assert run_json(run_dir)["status"] == "running"
        assert client.gather(client.map(workloads.inc, range(4))) == [1, 2, 3, 4]
    finally:
        client.close()
    run = run_json(run_dir)
    assert run["status"] == "completed" and run["project"] == "inst"
    assert (run["tasks_submitted"], run["tasks_completed"]) == (4, 4)
    assert run["target"] == cluster.scheduler_address and run["provider"] == "address"
    counts = {}
    for e in events(run_dir):
        counts[e["event"]] = counts.get(e["event"], 0) + 1
        assert e["task"] == "inc"
    assert counts == {"task_submitted": 4, "task_started": 4, "task_completed": 4}
    assert_detached(cluster)

    # one run per client; leaving a `with` on an exception marks the run failed
    with pytest.raises(RuntimeError):
        with Client(cluster) as client:
            assert client.submit(workloads.inc, 10).result() == 11
            raise RuntimeError("analysis crashed")
    first, second = runs(runs_root)
    assert first == run_dir
    assert run_json(second)["status"] == "failed"
    assert run_json(second)["tasks_completed"] == 1
    assert_detached(cluster)
    assert cluster.status.name == "running"  # the client's cluster is never closed


def test_instrumenting_twice_records_one_run_without_duplicate_lines(
    cluster, instrumentor, runs_root, caplog
):
    instrumentor.instrument(runs_dir=runs_root)
    DaskInstrumentor().instrument(runs_dir=runs_root)  # the same instrumentor: a warning
    assert "already instrumented" in caplog.text
    with Client(cluster) as client:
        futures = client.map(workloads.inc, range(3))
        assert client.gather(futures) == [1, 2, 3]
    (run_dir,) = runs(runs_root)
    for event in ("task_submitted", "task_started", "task_completed"):
        keys = [e["key"] for e in events(run_dir, event=event)]
        assert sorted(keys) == sorted(f.key for f in futures), event


def test_uninstrument_finishes_open_runs_and_new_clients_record_nothing(
    cluster, instrumentor, runs_root
):
    instrumentor.instrument(runs_dir=runs_root)
    with Client(cluster) as client:
        assert client.submit(workloads.inc, 1).result() == 2
        instrumentor.uninstrument()
        (run_dir,) = runs(runs_root)
        run = run_json(run_dir)
        assert run["status"] == "completed" and run["tasks_completed"] == 1
        assert_detached(cluster)
        assert client.submit(workloads.inc, 2).result() == 3  # the client goes on
    assert not hasattr(Client.__init__, "__wrapped__")
    assert not hasattr(Client.close, "__wrapped__")
    with Client(cluster) as client:
        assert client.submit(workloads.inc, 3).result() == 4
    assert runs(runs_root) == [run_dir]
    assert run_json(run_dir)["tasks_completed"] == 1


def test_shutdown_finishes_the_run_of_a_client_with_its_own_cluster(instrumentor, runs_root):
    instrumentor.instrument(runs_dir=runs_root)
    # threads, not processes: this test's cluster is its own and cheap
    client = Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    assert client.submit(workloads.inc, 1).result() == 2
    client.shutdown()
    (run_dir,) = runs(runs_root)
    run = run_json(run_dir)
    assert run["status"] == "completed" and run["tasks_completed"] == 1


def test_providers_get_the_runs_spans_and_metrics_until_uninstrumented(
    cluster, instrumentor, runs_root
):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    instrumentor.instrument(
        runs_dir=runs_root, tracer_provider=tracer_provider, meter_provider=meter_provider
    )

    def metrics():
        return {
            metric.name: metric
            for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def completed():
        metric = metrics().get(sc.METRIC_TASKS_COMPLETED)  # none before the first task ends
        return [point.value for point in metric.data.data_points] if metric else []

    with Client(cluster) as client:
        assert client.gather(client.map(workloads.inc, range(3))) == [1, 2, 3]
        wait_for(lambda: completed() == [3])
        (workers,) = metrics()[sc.METRIC_WORKERS_ACTIVE].data.data_points
        assert workers.value == 1
    (run_dir,) = runs(runs_root)
    trace_id = run_json(run_dir)["trace_id"]

    spans = exporter.get_finished_spans()
    names = [span.name for span in spans]
    assert names.count("inc") == 3 and names.count(sc.SPAN_EXECUTE) == 3
    assert names.count(sc.SPAN_RUN) == 1
    assert {f"{span.context.trace_id:032x}" for span in spans} == {trace_id}
    span_ids = {f"{span.context.span_id:016x}" for span in spans}
    assert {e["span_id"] for e in events(run_dir, event="task_submitted")} <= span_ids

    after = metrics()  # the run is over: its counts stay, its workers are gone
    (done,) = after[sc.METRIC_TASKS_COMPLETED].data.data_points
    task = {sc.M_TASK: "inc", sc.M_TASK_NAME: "inc"}
    assert done.value == 3 and dict(done.attributes) == task
    (duration,) = after[sc.METRIC_TASK_DURATION].data.data_points
    assert duration.count == 3 and dict(duration.attributes) == {**task, sc.M_RESULT: "success"}
    workers = after.get(sc.METRIC_WORKERS_ACTIVE)
    assert workers is None or not workers.data.data_points

    instrumentor.uninstrument()
    exporter.clear()
    with Client(cluster) as client:
        assert client.submit(workloads.inc, 5).result() == 6
    assert exporter.get_finished_spans() == ()
    assert len(runs(runs_root)) == 1


def spawn_inner(runs_dir: str) -> tuple:
    """A task that makes clients as opentelemetry-instrument's workers would: instrumented."""
    instrumentor = DaskInstrumentor()
    instrumentor.instrument(runs_dir=runs_dir)
    try:
        client = get_client()
        secede()  # one worker thread: let the inner task have it
        first = client.submit(workloads.inc, 1).result()
        rejoin()
        with worker_client() as inner:
            second = inner.submit(workloads.inc, 2).result()
        seen = getattr(client, "_scalable_otel_seen", False)  # the wrapper saw the client
        return first, second, seen, len(instrumentor._live)
    finally:
        instrumentor.uninstrument()


def test_a_client_made_inside_a_task_starts_no_nested_run(cluster, instrumentor, runs_root):
    instrumentor.instrument(runs_dir=runs_root)
    with Client(cluster) as client:
        assert client.submit(spawn_inner, str(runs_root)).result() == (2, 3, True, 0)
    (run_dir,) = runs(runs_root)
    tasks = sorted(e["task"] for e in events(run_dir, event="task_completed"))
    assert tasks == ["inc", "inc", "spawn_inner"]  # the inner tasks are in the outer run


def test_asynchronous_clients_get_a_run_and_scalable_sessions_no_second_one(
    cluster, instrumentor, runs_root
):
    instrumentor.instrument(runs_dir=runs_root)

    async def use_async_client():
        async with Client(cluster.scheduler_address, asynchronous=True) as client:
            return await client.submit(workloads.inc, 1)

    assert asyncio.run(use_async_client()) == 2
    (async_run,) = runs(runs_root)
    assert run_json(async_run)["status"] == "completed"
    assert run_json(async_run)["tasks_completed"] == 1
    assert_detached(cluster)
    with ScalableSession(target=cluster.scheduler_address, runs_dir=runs_root) as session:
        assert session.gather(session.submit(workloads.inc, 2)) == 3
    assert runs(runs_root) == [async_run, session.run_dir]


def test_the_off_switch_leaves_clients_unrecorded(cluster, instrumentor, runs_root, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    instrumentor.instrument(runs_dir=runs_root)
    with Client(cluster) as client:
        assert client.submit(workloads.inc, 1).result() == 2
    assert runs(runs_root) == []


def test_attach_records_on_a_client_it_leaves_running(cluster, runs_root):
    with Client(cluster) as client:
        with ScalableSession.attach(client, project="attached", runs_dir=runs_root) as session:
            assert client.gather(client.map(workloads.inc, range(2))) == [1, 2]
        assert client.status == "running"
        assert client.submit(workloads.inc, 5).result() == 6
    run = run_json(session.run_dir)
    assert run["status"] == "completed" and run["tasks_completed"] == 2
    assert run["project"] == "attached"
    assert_detached(cluster)


def _raise(*args, **kwargs):
    raise RuntimeError("telemetry broke")


_real_close = ScalableSession.close


def _close_then_raise(session, status=None):
    _real_close(session, status)  # the run and the cluster are left tidy, then it fails
    raise RuntimeError("telemetry broke")


@pytest.mark.parametrize("failure", ["unwritable runs_dir", "attach raises", "close raises"])
def test_a_telemetry_failure_never_breaks_the_client(
    cluster, instrumentor, project_dir, monkeypatch, caplog, failure
):
    runs_root = project_dir / "runs"
    if failure == "unwritable runs_dir":
        runs_root.write_text("a file where the runs directory should be")
    elif failure == "attach raises":
        monkeypatch.setattr(ScalableSession, "attach", _raise)
    else:
        monkeypatch.setattr(ScalableSession, "close", _close_then_raise)
    caplog.set_level(logging.WARNING)
    instrumentor.instrument(runs_dir=runs_root)
    with Client(cluster) as client:
        assert client.gather(client.map(workloads.inc, range(3))) == [1, 2, 3]
    assert client.status == "closed"
    warnings = [r for r in caplog.records if r.getMessage().startswith("scalable-otel")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_the_entry_point_names_the_instrumentor():
    (entry_point,) = [
        e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "dask"
    ]
    assert entry_point.value == "scalable_otel.instrumentor:DaskInstrumentor"
    assert entry_point.load() is DaskInstrumentor
    assert DaskInstrumentor().instrumentation_dependencies() == ("distributed >= 2024.12",)


APP = """\
from distributed import Client, LocalCluster


def inc(x):
    return x + 1


if __name__ == "__main__":
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        with Client(cluster) as client:
            print(client.gather(client.map(inc, range(5))))
"""


def test_opentelemetry_instrument_records_a_plain_dask_app(project_dir):
    """`opentelemetry-instrument python app.py`: an app that imports nothing of ours gets
    its run, through the entry point alone (its worker processes, which inherit the
    auto-instrumentation, start no run of their own)."""
    bin_dir = Path(sys.executable).parent
    command = bin_dir / "opentelemetry-instrument"
    if not command.exists():  # a Python whose scripts are elsewhere on PATH
        command = shutil.which("opentelemetry-instrument")
    assert command, "opentelemetry-instrument (opentelemetry-instrumentation) is not installed"
    (project_dir / "app.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    # this checkout's package first, as for the tests themselves
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    done = subprocess.run(
        [str(command), sys.executable, "app.py"],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "[1, 2, 3, 4, 5]"
    (run_dir,) = runs(project_dir / ".scalable" / "runs")
    run = run_json(run_dir)
    assert run["status"] == "completed" and run["provider"] == "address"
    assert (run["tasks_submitted"], run["tasks_completed"]) == (5, 5)
    assert run["project"] == project_dir.name
    done_lines = events(run_dir, event="task_completed")
    assert sorted(e["task"] for e in done_lines) == ["inc"] * 5
    assert len(events(run_dir, "workers.jsonl", "worker_added")) == 1
