"""The session's close: what it waits for, in which order, and the time of each part."""

import orjson

from scalable_otel import ScalableSession
from tests import workloads
from tests.conftest import events

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
        import asyncio

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
