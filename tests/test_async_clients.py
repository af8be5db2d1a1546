"""Asynchronous clients record runs as synchronous ones do, without blocking the event loop.

Real clusters both ways Dask's asyncio users make them: `LocalCluster(asynchronous=True)`
with worker processes (a session's "local" target), and a `Scheduler` and `Worker` in
the test's own event loop, as `distributed.utils_test.gen_cluster` makes them (and
`gen_cluster` itself). Each other test runs its coroutine with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import orjson
import pytest
from distributed import Client, LocalCluster, Scheduler, Worker
from distributed.utils_test import gen_cluster

from scalable_otel import ScalableSession
from scalable_otel import semconv as sc
from scalable_otel.instrumentor import DaskInstrumentor
from scalable_otel.rundir import list_runs
from tests import workloads
from tests.conftest import events, read_jsonl
from tests.executions import check_every_execution_recorded, trace_spans


def run_json(run_dir: Path) -> dict:
    return orjson.loads((run_dir / "run.json").read_bytes())


def runs(root: Path) -> list[Path]:
    return list_runs(root) if root.exists() else []


def no_run_plugins(scheduler: Scheduler) -> bool:
    """None of any run's plugins left on the scheduler or its workers."""
    names = [*scheduler.plugins, *scheduler.worker_plugins]
    return not [n for n in names if n.startswith((sc.SCHEDULER_PLUGIN_NAME, sc.WORKER_PLUGIN_NAME))]


# --- one workload, both ways -------------------------------------------------------------
def submit_workload(session):
    """Futures of a small workflow with a dependency and a failure (same keys every time)."""
    incs = session.map(workloads.inc, range(4))
    # named: the key Dask makes for a task of futures hashes the id of their client
    total = session.submit(workloads.add, incs[0], incs[1], key="add-total")
    failed = session.submit(workloads.fail, 7)
    return [*incs, total, failed]


def sync_run(**options) -> Path:
    with ScalableSession(**options) as session:
        futures = submit_workload(session)
        assert session.gather(futures, errors="skip") == [1, 2, 3, 4, 3]
    return session.run_dir


async def async_run(**options) -> Path:
    async with ScalableSession(**options, asynchronous=True) as session:
        assert session.client.asynchronous
        futures = submit_workload(session)
        assert await session.gather(futures, errors="skip") == [1, 2, 3, 4, 3]
        assert await futures[4] == 3  # a Dask future of an asynchronous client
    return session.run_dir


def what_was_recorded(run_dir: Path) -> dict:
    """What a run recorded, without its ids and times."""
    run = run_json(run_dir)
    counts = {k: v for k, v in run.items() if k.startswith(("tasks_", "cache_", "telemetry_"))}
    return {
        "status": run["status"],
        "counts": counts,
        "files": sorted(p.name for p in run_dir.iterdir()),
        "task_events": Counter((e["key"], e["task"], e["event"]) for e in events(run_dir)),
        "failures": sorted(
            (e["key"], e["task"], e["error_type"], e["error_message"], e["traceback"])
            for e in read_jsonl(run_dir / "failures.jsonl")
        ),
        "worker_events": Counter(e["event"] for e in read_jsonl(run_dir / "workers.jsonl")),
        "spans": Counter(span.name for span in trace_spans(run_dir)),
        "metric_lines": {
            (e["event"], e.get("scope"), e.get("prefix"))
            for e in read_jsonl(run_dir / "metrics.jsonl")
        },
    }


def test_an_async_session_on_an_async_local_cluster_records_what_a_sync_one_does(project_dir):
    options = dict(target="local", n_workers=2, threads_per_worker=1, project="both")
    sync_dir = sync_run(**options)
    async_dir = asyncio.run(async_run(**options))

    recorded = what_was_recorded(async_dir)
    assert recorded == what_was_recorded(sync_dir)
    assert recorded["status"] == "failed"  # a task failed
    counts = recorded["counts"]
    assert (counts["tasks_submitted"], counts["tasks_completed"], counts["tasks_failed"]) == (
        6,
        5,
        1,
    )
    assert recorded["worker_events"]["worker_added"] == 2
    assert recorded["failures"][0][2] == "ValueError"
    check_every_execution_recorded(async_dir)
    assert run_json(async_dir)["provider"] == "local"


# --- a scheduler and a worker in the test's event loop ------------------------------------
def test_in_process_cluster_async_session_and_instrumented_clients(project_dir, instrumentor):
    root = project_dir / "runs"

    async def main():
        async with (
            Scheduler(dashboard_address=":0") as scheduler,
            Worker(scheduler.address, nthreads=2) as worker,
        ):
            async with ScalableSession(
                target=scheduler.address, runs_dir=root, project="inproc", asynchronous=True
            ) as session:
                futures = session.map(workloads.inc, range(3))
                assert await session.gather(futures) == [1, 2, 3]
            assert no_run_plugins(scheduler) and sc.WORKER_PLUGIN_NAME not in str(worker.plugins)

            instrumentor.instrument(runs_dir=root, project="inst")
            client = await Client(scheduler.address, asynchronous=True)
            assert await client.gather(client.map(workloads.inc, range(5))) == [1, 2, 3, 4, 5]
            (running,) = [r for r in runs(root) if run_json(r)["status"] == "running"]
            await client.close()
            assert run_json(running)["status"] == "completed"

            async with Client(scheduler.address, asynchronous=True) as client:
                assert await client.submit(workloads.inc, 10) == 11
            with pytest.raises(ValueError, match="bad input"):
                async with Client(scheduler.address, asynchronous=True) as client:
                    await client.submit(workloads.fail, 1)
            assert no_run_plugins(scheduler)
            return session.run_dir

    session_dir = asyncio.run(main())
    by_project = {}
    for run_dir in runs(root):
        by_project.setdefault(run_json(run_dir)["project"], []).append(run_json(run_dir))
    assert [r["run_id"] for r in by_project["inproc"]] == [session_dir.name]
    assert by_project["inproc"][0]["tasks_completed"] == 3
    assert [(r["status"], r["tasks_completed"], r["tasks_failed"]) for r in by_project["inst"]] == [
        ("completed", 5, 0),
        ("completed", 1, 0),
        ("failed", 0, 1),
    ]
    for run_dir in runs(root):
        check_every_execution_recorded(run_dir)


# --- Dask's own test clusters ------------------------------------------------------------------
@pytest.fixture
def recorded_by_gen_cluster(project_dir):
    """Instrumented before `gen_cluster` makes its client; its run checked once it closed
    the client (with `Client._close`) and its cluster."""
    root = project_dir / "runs"
    instrumentor = DaskInstrumentor()
    instrumentor.instrument(runs_dir=root, project="gen")
    try:
        yield root
    finally:
        instrumentor.uninstrument()
    (run_dir,) = runs(root)
    assert (run_json(run_dir)["status"], run_json(run_dir)["tasks_completed"]) == ("completed", 2)
    check_every_execution_recorded(run_dir)


@pytest.mark.usefixtures("recorded_by_gen_cluster")
@gen_cluster(client=True)
async def test_a_gen_cluster_client_is_recorded(c, s, a, b):
    """distributed.utils_test.gen_cluster: a scheduler, two workers and an asynchronous
    client in one event loop, checked for leaked threads and processes at its end."""
    assert await c.gather(c.map(workloads.inc, range(2))) == [1, 2]
    assert [n for n in s.plugins if n.startswith(sc.SCHEDULER_PLUGIN_NAME)]


@pytest.fixture
def instrumented(instrumentor, project_dir):
    """The instrumentor on for the test (a `gen_cluster` test's client included)."""
    instrumentor.instrument(runs_dir=project_dir / "runs", project="gen")
    return project_dir / "runs"


@pytest.mark.usefixtures("instrumented")
@gen_cluster(client=True, config={"distributed.comm.timeouts.connect": "200ms"})
async def test_the_run_leaves_no_comm_to_a_worker_open(c, s, a, b):
    """Dask's own test_run_rpc_error: once a worker's server stopped, a broadcast cannot
    reach it. The run's worker plugin was registered by a broadcast, whose comms Dask keeps
    for the next one unless told not to."""
    assert [n for n in s.worker_plugins if n.startswith(sc.WORKER_PLUGIN_NAME)]
    assert not [addr for addr, comms in s.rpc.available.items() if comms]
    a.stop()
    out = await c.run(workloads.inc, 1, on_error="return")
    assert isinstance(out[a.address], OSError)
    assert out[b.address] == 2


# --- the instrumentor on a LocalCluster(asynchronous=True) -----------------------------------
def test_instrumented_clients_of_an_async_local_cluster(project_dir, instrumentor):
    root = project_dir / "runs"

    async def main():
        async with LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            asynchronous=True,
        ) as cluster:
            instrumentor.instrument(runs_dir=root, project="local")
            async with Client(cluster, asynchronous=True) as client:
                futures = client.map(workloads.inc, range(3))
                assert await client.gather(futures) == [1, 2, 3]
            assert no_run_plugins(cluster.scheduler)
            # a session's own client is recorded by the session only
            async with ScalableSession(
                target=cluster.scheduler_address, runs_dir=root, project="own", asynchronous=True
            ) as session:
                assert await session.submit(workloads.inc, 1) == 2
            # an asynchronous client's session attached by hand
            instrumentor.uninstrument()
            async with Client(cluster, asynchronous=True) as client:
                async with ScalableSession.attach(client, runs_dir=root, project="hand") as s:
                    assert await client.submit(workloads.inc, 5) == 6
                assert client.status == "running"
            return s

    attached = asyncio.run(main())
    recorded = sorted((run_json(r)["project"], run_json(r)["tasks_completed"]) for r in runs(root))
    assert recorded == [("hand", 1), ("local", 3), ("own", 1)]
    assert run_json(attached.run_dir)["status"] == "completed"


def test_an_async_client_left_open_is_finished_by_uninstrument(project_dir, instrumentor):
    root = project_dir / "runs"

    async def main():
        async with Scheduler(dashboard_address=":0") as scheduler, Worker(scheduler.address):
            instrumentor.instrument(runs_dir=root)
            client = await Client(scheduler.address, asynchronous=True)
            assert await client.submit(workloads.inc, 1) == 2
            # from another thread, as at exit: the run is closed on the client's loop
            await asyncio.to_thread(instrumentor.uninstrument)
            (run_dir,) = runs(root)
            assert run_json(run_dir)["status"] == "completed"
            assert no_run_plugins(scheduler)
            await client.close()
            return run_dir

    run_dir = asyncio.run(main())
    assert run_json(run_dir)["tasks_completed"] == 1


def test_an_awaited_session_closed_by_await_and_one_left_by_an_exception(project_dir):
    async def main():
        async with Scheduler(dashboard_address=":0") as scheduler, Worker(scheduler.address):
            session = await ScalableSession(target=scheduler.address, asynchronous=True)
            assert await session.client.submit(workloads.inc, 1) == 2
            assert run_json(session.run_dir)["status"] == "running"
            await session.close()
            assert session.client.status == "closed"  # the session's own client
            with pytest.raises(ValueError, match="bad input"):
                async with ScalableSession(target=scheduler.address, asynchronous=True) as s:
                    await s.submit(workloads.fail, 3)
            return session, s

    completed, failed = asyncio.run(main())
    assert (completed.status, run_json(completed.run_dir)["tasks_completed"]) == ("completed", 1)
    assert (failed.status, run_json(failed.run_dir)["tasks_failed"]) == ("failed", 1)
    assert read_jsonl(failed.run_dir / "failures.jsonl")[0]["error_type"] == "ValueError"


# --- misuse ---------------------------------------------------------------------------------
def test_with_on_an_async_session_and_async_with_on_a_sync_one_say_what_to_use(project_dir):
    with pytest.raises(RuntimeError, match="use `async with`"):
        with ScalableSession(target="tcp://127.0.0.1:1", asynchronous=True):
            pass

    async def enter_sync():
        async with ScalableSession(target="tcp://127.0.0.1:1"):
            pass

    with pytest.raises(RuntimeError, match="asynchronous=True"):
        asyncio.run(enter_sync())
    with pytest.raises(TypeError, match="asynchronous"):
        ScalableSession(asynchronous="yes")
    assert not (project_dir / ".scalable").exists()  # nothing was started


# --- the event loop is never blocked --------------------------------------------------------
BLOCKING_PARTS = ("_open_telemetry", "_recorder_ready", "_finish_telemetry", "_stop_progress")


def test_the_event_loop_runs_while_telemetry_starts_and_closes(project_dir, monkeypatch):
    """Each blocking part of the telemetry's start and close waits, before it returns,
    until a task ticking on the event loop has run once since the part began. Were the part
    run on the loop, the ticker could not run and the wait would end unanswered: an
    answer proves the loop was free, however loaded the machine (no timing is measured)."""
    parts = []  # (name, thread, the loop ran during it)
    waiting: list[threading.Event] = []

    def spy(name):
        original = getattr(ScalableSession, name)

        def part(self, *args, **kwargs):
            ran = threading.Event()
            waiting.append(ran)
            try:
                return original(self, *args, **kwargs)
            finally:
                parts.append((name, threading.current_thread(), ran.wait(timeout=20)))

        return part

    for name in BLOCKING_PARTS:
        monkeypatch.setattr(ScalableSession, name, spy(name))

    async def tick():
        while True:
            while waiting:
                waiting.pop().set()
            await asyncio.sleep(0.01)

    async def main():
        async with Scheduler(dashboard_address=":0") as scheduler, Worker(scheduler.address):
            ticker = asyncio.create_task(tick())
            async with ScalableSession(
                target=scheduler.address, runs_dir="runs", asynchronous=True
            ) as session:
                assert await session.submit(workloads.inc, 1) == 2
            ticker.cancel()
            return threading.current_thread(), session

    loop_thread, session = asyncio.run(main())
    assert run_json(session.run_dir)["tasks_completed"] == 1
    assert sorted(name for name, *_ in parts) == sorted(BLOCKING_PARTS)
    assert [name for name, thread, _ in parts if thread is loop_thread] == []
    assert [name for name, _, loop_ran in parts if not loop_ran] == []
