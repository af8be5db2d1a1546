"""Worker processes dying: SIGKILLed mid-task when Dask may not retry the task (the task
fails with KilledWorker, the run goes on and is `failed`), killed right after each attempt
started (before the worker reported the start: each death costs the task an attempt),
restarted by their nanny for going over their memory limit (a crashed worker whose task
runs again as attempt 2 on the new worker process, and the report counts the crash), and
SIGKILLed while holding results that are then computed again (`lost_results`).

A worker killed mid-task whose task Dask retries (as attempt 2, on another worker) is
tests/test_workers_and_resources.py::
test_worker_killed_mid_task_is_crashed_and_the_task_reruns_as_attempt_2; not repeated here.
"""

import os
import signal

import dask
import orjson
import pytest
from distributed import KilledWorker

from scalable_otel import ClusterOptions, ScalableSession
from tests import workloads
from tests.conftest import events, read_jsonl, wait_for
from tests.executions import check_every_execution_recorded, executions
from tests.faults import tasks
from tests.faults.harness import scalable


@pytest.fixture(scope="module")
def no_retries(tmp_path_factory):
    """A worker SIGKILLed while its task runs, with Dask allowed no retry of it."""
    project = tmp_path_factory.mktemp("no-retries")
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with ScalableSession(
            target="local",
            n_workers=2,
            threads_per_worker=1,
            project="no-retries",
            runs_dir=project / "runs",
        ) as s:
            future = s.submit(workloads.sleep_then, 7, seconds=30)
            started = wait_for(lambda: events(s.run_dir, event="task_started"))[0]
            added = {e["worker"]: e for e in events(s.run_dir, "workers.jsonl", "worker_added")}
            victim = added[started["worker"]]
            os.kill(victim["pid"], signal.SIGKILL)
            with pytest.raises(KilledWorker):
                s.gather(future)
            after = s.gather(s.submit(workloads.inc, 1))  # the run goes on
    return s.run_dir, future.key, victim, after


def test_a_worker_killed_with_no_retries_fails_its_task_and_the_run_goes_on(no_retries):
    run_dir, key, victim, after = no_retries
    assert after == 2
    (crashed,) = events(run_dir, "workers.jsonl", "worker_crashed")
    assert crashed["worker"] == victim["worker"] and crashed["lost_tasks"] == 1
    (failed,) = events(run_dir, event="task_failed")
    assert failed["key"] == key and failed["worker"] == victim["worker"]
    assert failed["attempt"] == 1
    (failure,) = read_jsonl(run_dir / "failures.jsonl")
    assert failure["key"] == key and failure["span_id"] == failed["span_id"]
    meta = orjson.loads((run_dir / "run.json").read_bytes())
    assert meta["status"] == "failed" and meta["tasks_failed"] == 1
    assert meta["tasks_completed"] == 1 and meta["tasks_submitted"] == 2


def test_the_failure_line_says_the_worker_died(no_retries):
    run_dir = no_retries[0]
    (failure,) = read_jsonl(run_dir / "failures.jsonl")
    assert failure["error_type"] == "KilledWorker"
    assert "died" in failure["error_message"]


@pytest.fixture(scope="module")
def killed_at_start(tmp_path_factory):
    """A task whose every attempt kills its worker as it starts, long before the worker's
    plugin reports the start: Dask allows three such deaths and fails it at the fourth."""
    project = tmp_path_factory.mktemp("killed-at-start")
    with dask.config.set({"distributed.scheduler.allowed-failures": 3}):
        with ScalableSession(
            target="local",
            n_workers=2,
            threads_per_worker=1,
            project="killed-at-start",
            runs_dir=project / "runs",
        ) as s:
            future = s.submit(tasks.kill_own_worker)
            with pytest.raises(KilledWorker):
                s.gather(future)
            after = s.gather(s.submit(workloads.inc, 1))  # the run goes on
    return s.run_dir, future.key, after


def test_each_worker_killed_right_after_a_start_costs_the_task_an_attempt(killed_at_start):
    run_dir, key, after = killed_at_start
    assert after == 2
    lines = check_every_execution_recorded(run_dir)[key]
    retry = "retry"
    assert executions(lines, "task_started") == [(1, None), (2, retry), (3, retry), (4, retry)]
    assert executions(lines, "task_failed") == [(4, retry)]
    (failed,) = [e for e in lines if e["event"] == "task_failed"]
    assert failed["error_type"] == "KilledWorker"
    # each attempt is where a worker died
    crashed = events(run_dir, "workers.jsonl", "worker_crashed")
    assert len(crashed) == 4
    started = [e["worker"] for e in lines if e["event"] == "task_started"]
    assert sorted(started) == sorted(e["worker"] for e in crashed)
    meta = orjson.loads((run_dir / "run.json").read_bytes())
    assert (meta["tasks_failed"], meta["tasks_completed"]) == (1, 1)


@pytest.fixture(scope="module")
def memory_restart(tmp_path_factory):
    """A task that goes over its worker's 400 MiB: the nanny restarts the worker.

    A worker of distributed 2024.12 (the oldest supported) imports pandas and pyarrow and
    starts at about 160 MiB: a lower limit would pause it (at 80 %) before the task runs."""
    project = tmp_path_factory.mktemp("memory")
    marker = project / "first-attempt"
    with ScalableSession(
        target="local",
        n_workers=1,
        threads_per_worker=1,
        cluster=ClusterOptions(memory_limit="400MiB"),
        project="memory",
        runs_dir=project / "runs",
    ) as s:
        assert s.gather(s.submit(tasks.grow_once, str(marker), 400)) == "retried"
    return project, s.run_dir


def test_a_worker_over_its_memory_limit_is_crashed_and_its_task_reruns(memory_restart):
    _, run_dir = memory_restart
    workers = read_jsonl(run_dir / "workers.jsonl")
    assert [e["event"] for e in workers] == [
        "worker_added",
        "worker_crashed",
        "worker_added",  # the nanny's new worker process
        "worker_removed",
    ]
    first, crashed, second, _ = workers
    assert crashed["worker"] == first["worker"] and crashed["pid"] == first["pid"]
    assert crashed["lost_tasks"] == 1 and crashed["memory_limit"] == 400 * 2**20
    assert second["worker"] != first["worker"] and second["pid"] != first["pid"]
    attempts = events(run_dir, event="task_started")
    assert [(e["attempt"], e["worker"]) for e in attempts] == [
        (1, first["worker"]),
        (2, second["worker"]),
    ]
    (done,) = events(run_dir, event="task_completed")
    assert done["attempt"] == 2 and done["worker"] == second["worker"]
    meta = orjson.loads((run_dir / "run.json").read_bytes())
    assert meta["status"] == "completed" and meta["tasks_completed"] == 1


def test_the_crash_says_the_memory_limit_was_exceeded(memory_restart):
    (crashed,) = events(memory_restart[1], "workers.jsonl", "worker_crashed")
    assert "memory" in crashed["reason"]


def test_the_report_counts_the_crashed_worker(memory_restart):
    project, run_dir = memory_restart
    report = scalable(
        "report", run_dir.name, "--runs-dir", str(run_dir.parent), "--format", "json", cwd=project
    )
    assert report.returncode == 0, report.stderr
    workers = orjson.loads(report.stdout)["workers"]
    assert workers.get("crashed") == 1


def test_results_lost_with_a_worker_are_counted_and_computed_again(project_dir):
    with ScalableSession(target="local", n_workers=2, threads_per_worker=1) as s:
        s.client.wait_for_workers(2)
        victim = sorted(s.client.scheduler_info()["workers"])[0]
        # results kept on the victim; the restriction is loose, so they can be computed again
        held = s.map(workloads.inc, range(4), workers=[victim], allow_other_workers=True)
        assert s.gather(held) == [1, 2, 3, 4]

        def added():  # the worker's line, once the writer has flushed it
            lines = events(s.run_dir, "workers.jsonl", "worker_added")
            return next((e for e in lines if e["worker"] == victim), None)

        os.kill(wait_for(added)["pid"], signal.SIGKILL)
        wait_for(lambda: events(s.run_dir, "workers.jsonl", "worker_crashed"))
        assert s.gather(held) == [1, 2, 3, 4]  # computed again on the survivor
    (crashed,) = events(s.run_dir, "workers.jsonl", "worker_crashed")
    assert crashed["worker"] == victim
    assert (crashed["lost_tasks"], crashed["lost_results"]) == (0, 4)
