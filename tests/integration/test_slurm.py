"""A session on a real Slurm: workers are Slurm jobs started through dask-jobqueue; one
job is cancelled mid-run and the run directory says what happened."""

import json
import time

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


@pytest.fixture
def slurm_run(slurm, project_dir, monkeypatch):  # noqa: F811
    with slurm_session(slurm, project_dir, monkeypatch) as session:
        session.client.wait_for_workers(2, timeout=60)
        futures = session.map(workloads.sleep_then, range(6), seconds=1.5)
        started = wait_for(lambda: events(session.run_dir, event="task_started"), timeout=30)
        victim = started[0]["worker"]
        added = {w["worker"]: w for w in events(session.run_dir, "workers.jsonl", "worker_added")}
        job = added[victim]["slurm_job_id"]
        time.sleep(0.3)
        slurm.run("scancel", str(job))
        results = session.gather(futures)
    return session, results, job, victim


def test_workers_are_slurm_jobs_and_a_cancelled_job_is_a_crashed_worker(slurm_run):
    session, results, job, victim = slurm_run
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
    slurmctld enforces it on its next periodic check, 60 to 90 s into the job."""
    with slurm_session(slurm, project_dir, monkeypatch) as session:
        session.client.wait_for_workers(2, timeout=60)
        # the worker_added lines are written one flush interval after the workers join
        added = wait_for(lambda: events(session.run_dir, "workers.jsonl", "worker_added"))
        victim, job = added[0]["worker"], added[0]["slurm_job_id"]
        slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=1")
        results, deadline = [], time.monotonic() + 150
        # keep both workers busy until the job is ended, so it dies running a task; the
        # futures of each round are released, so no result held by the job is recomputed
        while time.monotonic() < deadline:
            futures = session.map(workloads.sleep_then, range(2), seconds=1.0, pure=False)
            results += session.gather(futures)
            if events(session.run_dir, "workers.jsonl", "worker_crashed"):
                break
    assert results == [0, 1] * (len(results) // 2)
    assert "JobState=TIMEOUT" in slurm.run("scontrol", "show", "job", str(job))
    (crashed,) = events(session.run_dir, "workers.jsonl", "worker_crashed")
    assert (crashed["worker"], crashed["slurm_job_id"]) == (victim, job)
    assert crashed["reason"]
    meta = json.loads((session.run_dir / "run.json").read_text())
    assert meta["status"] == "completed" and meta["tasks_completed"] == len(results)
    # a task the job was running when it was ended ran again, as a new attempt, elsewhere
    lines = events(session.run_dir)
    on_victim = {e["event"]: set() for e in lines}
    for e in lines:
        if e.get("worker") == victim:
            on_victim[e["event"]].add(e["key"])
    interrupted = on_victim["task_started"] - on_victim["task_completed"]
    assert len(interrupted) <= crashed["lost_tasks"]
    completed = {e["key"]: e for e in lines if e["event"] == "task_completed"}
    for key in interrupted:
        assert completed[key]["attempt"] == 2 and completed[key]["worker"] != victim
