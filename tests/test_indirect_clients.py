"""Clients a user does not make with `Client(...)` themselves are recorded once, never twice.

`get_client()` and `default_client()` in the driver, `Client.as_current()`,
`dask.config.set(scheduler=client)` and a cluster object's `get_client()`, all under
`DaskInstrumentor`, on real LocalClusters with worker processes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster, default_client, get_client

from scalable_otel import ScalableSession
from tests import workloads
from tests.conftest import events
from tests.test_instrumentor import run_json, runs


@pytest.fixture(scope="module")
def cluster():
    """A cluster made "elsewhere": the tests' clients know it by its address or object."""
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster


def task_lines(run_dir: Path) -> Counter:
    """How many lines of each (event, task) the run's tasks.jsonl holds."""
    return Counter((e["event"], e["task"]) for e in events(run_dir))


def completed_once(run_dir: Path, tasks: dict) -> None:
    """The run finished, with each task in `tasks` submitted, started and completed
    exactly as many times as it says, and nothing else."""
    run = run_json(run_dir)
    assert run["status"] == "completed"
    total = sum(tasks.values())
    assert (run["tasks_submitted"], run["tasks_completed"]) == (total, total)
    expected = Counter()
    for task, n in tasks.items():
        for event in ("task_submitted", "task_started", "task_completed"):
            expected[(event, task)] = n
    assert task_lines(run_dir) == expected


def test_get_client_in_the_driver_makes_one_recorded_client(cluster, instrumentor, runs_root):
    instrumentor.instrument(runs_dir=runs_root)
    client = get_client(cluster.scheduler_address)  # no client yet: one is made
    try:
        # every later lookup finds the same client, and starts no second run
        assert get_client() is client
        assert get_client(cluster.scheduler_address) is client
        assert default_client() is client and Client.current() is client
        assert client.gather(client.map(workloads.inc, range(3))) == [1, 2, 3]
        assert get_client().submit(workloads.add, 1, 2).result() == 3
        (run_dir,) = runs(runs_root)
        assert run_json(run_dir)["status"] == "running"
    finally:
        client.close()
    assert runs(runs_root) == [run_dir]
    completed_once(run_dir, {"inc": 3, "add": 1})


def test_dask_collections_go_to_the_run_of_the_client_they_name(cluster, instrumentor, runs_root):
    """`Client.as_current()` and `dask.config.set(scheduler=client)` with two clients:
    each computation is in the run of the client it went to, and only there."""
    instrumentor.instrument(runs_dir=runs_root)
    with Client(cluster) as first, Client(cluster) as second:
        assert Client.current() is second  # the latest client is the default
        with first.as_current():
            assert get_client() is first
            assert dask.compute(dask.delayed(workloads.inc)(1)) == (2,)
        with dask.config.set(scheduler=first):
            assert dask.compute(dask.delayed(workloads.add)(1, 2)) == (3,)
        assert dask.compute(dask.delayed(workloads.sleep_then)(5, 0)) == (5,)  # the default
        first_run, second_run = runs(runs_root)
    assert runs(runs_root) == [first_run, second_run]
    completed_once(first_run, {"inc": 1, "add": 1})
    completed_once(second_run, {"sleep_then": 1})


def test_get_client_finds_a_sessions_client_and_starts_no_second_run(
    cluster, instrumentor, runs_root
):
    instrumentor.instrument(runs_dir=runs_root)
    with ScalableSession(target=cluster.scheduler_address, runs_dir=runs_root) as session:
        assert get_client() is session.client
        assert dask.compute(dask.delayed(workloads.inc)(1)) == (2,)
    assert runs(runs_root) == [session.run_dir]
    completed_once(session.run_dir, {"inc": 1})


def local_cluster(**kwargs) -> LocalCluster:
    return LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", **kwargs
    )


@pytest.mark.parametrize("closes", ["client, then cluster", "the cluster's with"])
def test_a_cluster_objects_get_client_records_one_run(instrumentor, runs_root, closes):
    """`LocalCluster(...).get_client()` (the same method as dask-jobqueue's clusters'):
    one run however often it is called, finished when the client closes or, left open,
    when its cluster does (while the workers can still be flushed)."""
    instrumentor.instrument(runs_dir=runs_root)
    with local_cluster() as cluster:
        client = cluster.get_client()
        assert cluster.get_client() is client
        assert client.gather(client.map(workloads.inc, range(2))) == [1, 2]
        (run_dir,) = runs(runs_root)
        if closes == "client, then cluster":
            client.close()
            assert run_json(run_dir)["status"] == "completed"
        else:
            assert run_json(run_dir)["status"] == "running"
    client.close()  # after its cluster: nothing more to finish
    assert runs(runs_root) == [run_dir]
    completed_once(run_dir, {"inc": 2})


def test_a_client_by_address_left_open_is_finished_when_the_cluster_closes(instrumentor, runs_root):
    instrumentor.instrument(runs_dir=runs_root)
    with local_cluster() as cluster:
        client = Client(cluster.scheduler_address)
        assert client.submit(workloads.inc, 1).result() == 2
    (run_dir,) = runs(runs_root)
    completed_once(run_dir, {"inc": 1})
    client.close()


def test_a_cluster_leaving_its_with_on_an_error_marks_its_clients_run_failed(
    instrumentor, runs_root
):
    instrumentor.instrument(runs_dir=runs_root)
    with pytest.raises(RuntimeError):
        with local_cluster() as cluster:
            client = cluster.get_client()
            assert client.submit(workloads.inc, 1).result() == 2
            raise RuntimeError("analysis crashed")
    (run_dir,) = runs(runs_root)
    assert run_json(run_dir)["status"] == "failed"
    assert run_json(run_dir)["tasks_completed"] == 1


def test_an_asynchronous_clusters_get_client_records_one_run(instrumentor, runs_root):
    instrumentor.instrument(runs_dir=runs_root)

    async def main():
        async with local_cluster(asynchronous=True) as cluster:
            client = await cluster.get_client()
            assert cluster.get_client() is client
            assert await client.gather(client.map(workloads.inc, range(2))) == [1, 2]
            (run_dir,) = runs(runs_root)
            return run_dir  # the client is left to the cluster's `async with`

    run_dir = asyncio.run(main())
    assert runs(runs_root) == [run_dir]
    completed_once(run_dir, {"inc": 2})


class LibraryClient(Client):
    """A library's own client class (as prefect-dask's `PrefectDaskClient`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made_by = "library"

    def submit(self, func, *args, **kwargs):
        return super().submit(func, *args, **kwargs)


def test_a_librarys_client_subclass_records_one_run(cluster, instrumentor, runs_root):
    instrumentor.instrument(runs_dir=runs_root)
    with LibraryClient(cluster) as client:
        assert client.made_by == "library"
        assert client.gather([client.submit(workloads.inc, i) for i in range(2)]) == [1, 2]
    (run_dir,) = runs(runs_root)
    completed_once(run_dir, {"inc": 2})
