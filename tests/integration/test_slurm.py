"""A session on a real Slurm: workers are Slurm jobs started through dask-jobqueue; one
job is cancelled mid-run and the run directory says what happened."""

import json
from pathlib import Path

import pytest

from scalable_otel import ScalableSession
from scalable_otel.analysis import load_run, report
from tests import workloads
from tests.conftest import REPO, events, wait_for
from tests.integration.slurm import slurm  # noqa: F401  (the fixture)

MANIFEST = """
version: 1
project: {name: slurm-ensemble}
targets:
  hpc:
    provider: slurm
    queue: debug
    walltime: "00:10:00"
    cores: 1
    processes: 1
    memory: 1GB
    interface: lo
    max_workers: 2
    cost: {cpu_hour: 0.5, memory_gb_hour: 0.1}
components:
  sim: {cpus: 1, memory: 1G}
tasks:
  sleep_then: {component: sim}
"""


def slurm_session(slurm, project_dir, monkeypatch) -> ScalableSession:  # noqa: F811
    """A session (not started) on the manifest's Slurm target, in `project_dir`."""
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    # Slurm jobs start fresh interpreters: they import the tasks' module by PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    (project_dir / "scalable.yaml").write_text(MANIFEST)
    return ScalableSession.from_yaml("scalable.yaml", target="hpc")


def workers_added(run_dir, n: int = 2) -> list[dict]:
    """The first `n` worker_added lines, once written (one flush interval after joining)."""
    return wait_for(lambda: events(run_dir, "workers.jsonl", "worker_added")[n - 1 :])[:n]


def hold_on(session, worker: str, release: Path):
    """A task kept running on `worker` until `release` exists. Its restriction is loose:
    when the worker dies, Dask runs it again on another one (where, released, it returns)."""
    held = session.submit(
        workloads.hold_until, str(release), 0, workers=[worker], allow_other_workers=True
    )
    wait_for(
        lambda: [
            e
            for e in events(session.run_dir, event="task_started")
            if e["key"] == held.key and e["worker"] == worker
        ],
        timeout=60,
    )
    return held


def check_ran_again(run_dir, key, victim: str, crashed: dict) -> None:
    """`key` was running on `victim` when it died (started there, never completed there)
    and ran again, as attempt 2, on another worker."""
    lines = [e for e in events(run_dir) if e["key"] == key]
    started = [(e["attempt"], e["worker"]) for e in lines if e["event"] == "task_started"]
    assert started[0] == (1, victim), lines
    (done,) = [e for e in lines if e["event"] == "task_completed"]
    assert done["attempt"] == 2 and done["worker"] != victim, lines
    assert (2, done["worker"]) in started, lines
    assert crashed["lost_tasks"] >= 1


@pytest.fixture
def slurm_run(slurm, project_dir, monkeypatch):  # noqa: F811
    release = project_dir / "release"
    with slurm_session(slurm, project_dir, monkeypatch) as session:
        session.client.wait_for_workers(2, timeout=60)
        victim_line = workers_added(session.run_dir)[0]
        victim, job = victim_line["worker"], victim_line["slurm_job_id"]
        held = hold_on(session, victim, release)
        futures = [held] + session.map(workloads.sleep_then, range(1, 6), seconds=1.5)
        slurm.run("scancel", str(job))
        wait_for(lambda: events(session.run_dir, "workers.jsonl", "worker_crashed"), timeout=60)
        release.touch()
        results = session.gather(futures)
    return session, results, job, victim, held.key


def test_workers_are_slurm_jobs_and_a_cancelled_job_is_a_crashed_worker(slurm_run):
    session, results, job, victim, held = slurm_run
    assert results == list(range(6))  # the cancelled job's task ran again elsewhere
    meta = json.loads((session.run_dir / "run.json").read_text())
    assert (meta["target"], meta["provider"], meta["status"]) == ("hpc", "slurm", "completed")
    added = events(session.run_dir, "workers.jsonl", "worker_added")
    assert len({w["slurm_job_id"] for w in added}) == len(added) >= 2
    assert all(
        (w["requested_cores"], w["requested_memory"], w["queue"]) == (1, "1GB", "debug")
        for w in added
    )
    crashed_lines = events(session.run_dir, "workers.jsonl", "worker_crashed")
    (crashed,) = crashed_lines
    assert (crashed["worker"], crashed["slurm_job_id"]) == (victim, job)
    assert crashed["reason"]
    check_ran_again(session.run_dir, held, victim, crashed)
    retried = [t for t in events(session.run_dir, event="task_completed") if t["attempt"] > 1]
    assert retried and all(t["worker"] != victim for t in retried)
    samplers = {s["worker"] for s in events(session.run_dir, "resources.jsonl", "resource_sample")}
    # samples came from workers that are Slurm jobs (the victim may have died before one)
    assert samplers and samplers <= {w["worker"] for w in added if w["slurm_job_id"]}
    summary = report(load_run(session.run_dir))
    assert summary["provider"] == "slurm"
    assert summary["cost"]["usd"] > 0
    assert summary["cost"]["rates"]["cpu_hour"] == 0.5


def test_a_job_past_its_walltime_is_a_crashed_worker_whose_tasks_run_again(
    slurm,  # noqa: F811
    project_dir,
    monkeypatch,
):
    """Slurm ends a job at its time limit as it does at preemption: SIGTERM, then SIGKILL.
    The limit is lowered to one minute on a running job (the smallest Slurm accepts);
    slurmctld enforces it on its next periodic check, 60 to 90 s into the job. The job's
    worker runs one task until then, held there by the test."""
    release = project_dir / "release"
    with slurm_session(slurm, project_dir, monkeypatch) as session:
        session.client.wait_for_workers(2, timeout=60)
        victim_line = workers_added(session.run_dir)[0]
        victim, job = victim_line["worker"], victim_line["slurm_job_id"]
        held = hold_on(session, victim, release)
        others = session.map(workloads.sleep_then, range(1, 5), seconds=0.5, pure=False)
        slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=1")
        wait_for(lambda: events(session.run_dir, "workers.jsonl", "worker_crashed"), timeout=150)
        release.touch()
        results = session.gather([held, *others])
    assert results == [0, 1, 2, 3, 4]
    assert "JobState=TIMEOUT" in slurm.run("scontrol", "show", "job", str(job))
    (crashed,) = events(session.run_dir, "workers.jsonl", "worker_crashed")
    assert (crashed["worker"], crashed["slurm_job_id"]) == (victim, job)
    assert crashed["reason"]
    meta = json.loads((session.run_dir / "run.json").read_text())
    assert meta["status"] == "completed" and meta["tasks_completed"] == len(results)
    # the task the job was running when it was ended ran again, as a new attempt, elsewhere
    check_ran_again(session.run_dir, held.key, victim, crashed)
    lines = events(session.run_dir)
    on_victim = {e["event"]: set() for e in lines}
    for e in lines:
        if e.get("worker") == victim:
            on_victim[e["event"]].add(e["key"])
    interrupted = on_victim["task_started"] - on_victim["task_completed"]
    assert held.key in interrupted and len(interrupted) <= crashed["lost_tasks"]
    completed = {e["key"]: e for e in lines if e["event"] == "task_completed"}
    for key in interrupted:
        assert completed[key]["attempt"] == 2 and completed[key]["worker"] != victim


def test_a_slurm_clusters_get_client_records_one_run(slurm, project_dir, monkeypatch, instrumentor):  # noqa: F811
    """A user's own `SLURMCluster(...).get_client()` under `DaskInstrumentor`: one run,
    finished by the cluster's `with` (the client is never closed by hand)."""
    import sys

    from scalable_otel.rundir import list_runs

    jobqueue = pytest.importorskip("dask_jobqueue")
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    runs_root = project_dir / "runs"
    instrumentor.instrument(runs_dir=runs_root)
    with jobqueue.SLURMCluster(
        queue="debug",
        walltime="00:10:00",
        cores=1,
        processes=1,
        memory="1GB",
        interface="lo",
        python=sys.executable,
        scheduler_options={"dashboard_address": None},
    ) as cluster:
        cluster.scale(jobs=1)
        client = cluster.get_client()
        assert cluster.get_client() is client
        client.wait_for_workers(1, timeout=60)
        assert client.gather(client.map(workloads.inc, range(3))) == [1, 2, 3]
    (run_dir,) = list_runs(runs_root)
    meta = json.loads((run_dir / "run.json").read_text())
    assert (meta["status"], meta["tasks_submitted"], meta["tasks_completed"]) == (
        "completed",
        3,
        3,
    )
    done = events(run_dir, event="task_completed")
    assert sorted(e["task"] for e in done) == ["inc"] * 3
    assert len({e["key"] for e in done}) == 3
