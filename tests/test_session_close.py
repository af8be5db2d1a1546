"""The session's close: what it waits for, in which order, and the time of each part."""

import asyncio

import dask
import orjson
from distributed import Client, LocalCluster, Scheduler, Worker, wait

from scalable_otel import ScalableSession
from tests import workloads
from tests.conftest import events, wait_for

PARTS = {"last_records", "dask", "telemetry", "plan", "run_json", "columnar"}


def spy_on_close(session, calls):
    recording, close_dask = session._recording, None
    sync = recording.sync

    def spied_sync(token, timeout=30.0):
        calls.append("sync")
        return sync(token, timeout=timeout)

    recording.sync = spied_sync
    if session.cluster is not None:
        close_dask = session.cluster.close

        def spied_close(*args, **kwargs):
            calls.append("dask")
            return close_dask(*args, **kwargs)

        session.cluster.close = spied_close


def test_the_telemetry_process_reads_the_last_records_while_dask_closes(project_dir):
    calls = []
    with ScalableSession(target="local", n_workers=1, project="close") as s:
        s.gather(s.map(workloads.inc, range(20)))
        spy_on_close(s, calls)
    # the scheduler is in this process: its records are already queued for the recorder
    assert calls == ["dask", "sync"]
    assert set(s.close_split) == PARTS and all(v >= 0 for v in s.close_split.values())
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "completed" and run["tasks_completed"] == 20
    assert len(events(s.run_dir, event="task_completed")) == 20


def test_a_remote_scheduler_s_last_records_arrive_before_the_client_closes(project_dir):
    from distributed import LocalCluster

    calls = []
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with ScalableSession(target=cluster.scheduler_address, project="close") as s:
            s.gather(s.map(workloads.inc, range(20)))
            spy_on_close(s, calls)
            close_client = s.client.close

            def spied_client_close(*args, **kwargs):
                calls.append("client")
                return close_client(*args, **kwargs)

            s.client.close = spied_client_close
    assert calls == ["sync", "client"]
    assert len(events(s.run_dir, event="task_completed")) == 20


class _NeverCloses:
    """A scheduler plugin whose close never returns: the scheduler, and so the cluster's
    close, waits for it forever."""

    name = "never-closes"

    async def close(self) -> None:
        await asyncio.Event().wait()


def test_a_cluster_that_never_closes_does_not_keep_the_run_from_ending(project_dir, caplog):
    from distributed.diagnostics.plugin import SchedulerPlugin

    from scalable_otel import RecordingOptions

    plugin = type("NeverCloses", (_NeverCloses, SchedulerPlugin), {})()
    with ScalableSession(
        target="local",
        n_workers=1,
        project="close-hangs",
        recording=RecordingOptions(close_timeout=6.0),
    ) as s:
        s.client.register_plugin(plugin)
        assert s.gather(s.map(workloads.inc, range(5))) == [1, 2, 3, 4, 5]
    assert "did not close within" in caplog.text
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "completed" and run["tasks_completed"] == 5
    assert len(events(s.run_dir, event="task_completed")) == 5


def spy_on_scheduler_calls(monkeypatch, calls):
    """Note each call the close could make to the scheduler (Client.run, run_on_scheduler,
    unregister_worker_plugin, unregister_scheduler_plugin)."""
    for name in (
        "run",
        "run_on_scheduler",
        "unregister_worker_plugin",
        "unregister_scheduler_plugin",
    ):
        original = getattr(Client, name)

        def spied(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Client, name, spied)


def test_a_client_that_lost_its_scheduler_closes_its_run_without_calling_it(
    project_dir, monkeypatch, instrumentor
):
    """Dask's test_client_disconnect_exception_on_cancelled_futures: the scheduler closes
    under an asynchronous client. Its run's plugins went with it; waiting for the client
    to reconnect to flush or remove them cost 10 s a close."""
    calls = []

    async def lose_the_scheduler():
        async with Scheduler(dashboard_address=":0") as s, Worker(s.address):
            client = await Client(s.address, asynchronous=True)
            await wait(client.submit(workloads.inc, 1))
            run_dir = instrumentor._session_of(client).run_dir
            for _ in range(600):  # forwarded already (the loop runs while this waits)
                if events(run_dir, event="task_completed"):
                    break
                await asyncio.sleep(0.05)
            await s.close()
            spy_on_scheduler_calls(monkeypatch, calls)
            await client.close()

    instrumentor.instrument(runs_dir=project_dir / "runs")
    asyncio.run(lose_the_scheduler())
    (run_dir,) = (project_dir / "runs").glob("run-*")
    run = orjson.loads((run_dir / "run.json").read_bytes())
    assert run["status"] == "completed" and run["tasks_completed"] == 1
    assert calls == []


def test_a_synchronous_client_that_lost_its_scheduler_closes_its_run_without_calling_it(
    project_dir, monkeypatch, instrumentor
):
    calls = []
    instrumentor.instrument(runs_dir=project_dir / "runs")
    with (
        # the cluster's own close tries its lost scheduler for as long as this allows
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
    ):
        client = Client(cluster)
        assert client.submit(workloads.inc, 1).result() == 2
        run_dir = instrumentor._session_of(client).run_dir
        wait_for(lambda: events(run_dir, event="task_completed"))  # forwarded already
        cluster.sync(cluster.scheduler.close)
        wait_for(lambda: client.status != "running", timeout=60)
        spy_on_scheduler_calls(monkeypatch, calls)
        client.close()
    run = orjson.loads((run_dir / "run.json").read_bytes())
    assert run["tasks_completed"] == 1 and run["status"] in ("completed", "failed")
    assert calls == []
