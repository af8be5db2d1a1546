"""The Dask clusters a session starts itself, one function per provider.

`local`: a `distributed.LocalCluster` with worker processes and no dashboard, of the
session's `n_workers`, `threads_per_worker` and `memory_limit` (each else the manifest
target's `max_workers`, `threads_per_worker` and `memory`, else Dask's defaults).

`slurm`: workers are Slurm jobs, through dask-jobqueue's `SLURMCluster` (the scheduler
runs in the session's process). The target's settings give the job's `queue`,
`account`, `walltime`, `cores`, `processes`, `memory` (per job), `job_extra` (more
`#SBATCH` lines) and `interface` (the network interface workers listen on, `lo` on a
single machine); `max_workers` the number of jobs (or the session's `n_workers`).

Either way `ClusterOptions(extra=...)` adds keywords of the cluster class, applied last,
and the session's scheduler plugins are put on the scheduler as it starts, so that no
task or worker goes unseen.
"""

from __future__ import annotations

import sys

DEFAULT_WALLTIME = "01:00:00"


def start_cluster(
    provider: str,
    settings: dict,
    *,
    n_workers: int | None,
    threads_per_worker: int | None,
    memory_limit,
    plugins: list,
    extra: dict,
):
    """A started cluster of `provider` ("local" or "slurm") whose scheduler holds `plugins`."""
    if provider == "slurm":
        return slurm_cluster(settings, n_workers, plugins, extra)
    return local_cluster(n_workers, threads_per_worker, memory_limit, plugins, extra)


def local_cluster(
    n_workers: int | None, threads_per_worker: int | None, memory_limit, plugins: list, extra: dict
):
    """A `LocalCluster` with worker processes whose scheduler holds `plugins` (besides any
    in `extra["scheduler_kwargs"]`); None leaves a size to Dask."""
    from distributed import LocalCluster

    kwargs = {"processes": True, "dashboard_address": None}
    if n_workers is not None:
        kwargs["n_workers"] = int(n_workers)
    if threads_per_worker is not None:
        kwargs["threads_per_worker"] = int(threads_per_worker)
    if memory_limit is not None:
        kwargs["memory_limit"] = memory_limit
    kwargs.update(extra)
    scheduler_kwargs = dict(kwargs.pop("scheduler_kwargs", {}) or {})
    scheduler_kwargs["plugins"] = list(scheduler_kwargs.get("plugins", [])) + list(plugins)
    return LocalCluster(scheduler_kwargs=scheduler_kwargs, **kwargs)


def slurm_cluster(settings: dict, n_jobs: int | None, plugins: list, worker_options: dict):
    """A started `SLURMCluster` of `n_jobs` jobs whose scheduler holds `plugins`.

    The TaskRecordPlugin among them learns each worker's Slurm job id and request, so
    workers.jsonl can say which job a worker was.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ImportError(
            "a slurm target needs dask-jobqueue: pip install 'scalable-otel[slurm]'"
        ) from None
    cores = int(settings.get("cores") or 1)
    memory = settings.get("memory") or "1GB"
    job_extra = settings.get("job_extra") or settings.get("job_extra_directives") or []
    cluster = SLURMCluster(
        queue=settings.get("queue"),
        account=settings.get("account"),
        walltime=settings.get("walltime") or DEFAULT_WALLTIME,
        cores=cores,
        processes=int(settings.get("processes") or 1),
        memory=str(memory),
        job_extra_directives=list(job_extra),
        python=sys.executable,
        interface=settings.get("interface"),
        scheduler_options={"dashboard_address": None, "plugins": list(plugins)},
        **worker_options,
    )
    for plugin in plugins:
        if hasattr(plugin, "worker_details"):
            plugin.worker_details = _job_details(cluster, cores, memory, settings.get("queue"))
    jobs = n_jobs if n_jobs is not None else settings.get("max_workers") or 1
    cluster.scale(jobs=int(jobs))
    return cluster


def _job_details(cluster, cores, memory, queue):
    def details(worker_name: str) -> dict | None:
        # dask-jobqueue names a job's workers after the job (with a suffix per process)
        for name, job in list(cluster.workers.items()):
            if worker_name == name or worker_name.startswith(f"{name}-"):
                return {
                    "slurm_job_id": getattr(job, "job_id", None),
                    "requested_cores": cores,
                    "requested_memory": str(memory),
                    "queue": queue,
                }
        return None

    return details
