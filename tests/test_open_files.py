"""A run leaves no file open in the processes it ran in: workers outlive their runs'
plugins (a cluster serves many clients), and in-process workers share the client's
process, where Dask's own tests count the open files around a client's life."""

import os

from distributed import Client, LocalCluster

from scalable_otel import ScalableSession
from tests import workloads


def proc_files() -> list[str]:
    """This process's open descriptors that point into /proc (the worker plugin's memory
    readings: statm and clear_refs)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # listdir's own descriptor, closed meanwhile
            continue
        if target.startswith("/proc/"):
            found.append(target)
    return sorted(found)


def test_runs_on_in_process_workers_leave_no_proc_file_open(project_dir):
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with Client(cluster) as client:
            before = proc_files()
            for _ in range(2):
                with ScalableSession.attach(client, project="open-files") as session:
                    assert client.gather(client.map(workloads.inc, [1, 2])) == [2, 3]
                    assert session.run_dir is not None
            assert proc_files() == before
