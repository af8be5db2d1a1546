"""Workers coming, going and crashing; resource samples; per-task CPU and memory."""

import os
import signal
from datetime import datetime, timedelta

import orjson

from scalable_otel import RecordingOptions, ScalableSession
from tests import workloads
from tests.conftest import events, wait_for


def test_worker_killed_mid_task_is_crashed_and_the_task_reruns_as_attempt_2(project_dir):
    with ScalableSession(target="local", n_workers=2, threads_per_worker=1, project="crash") as s:
        future = s.submit(workloads.sleep_then, 7, seconds=3)
        started = wait_for(lambda: events(s.run_dir, event="task_started"))[0]
        added = {e["worker"]: e for e in events(s.run_dir, "workers.jsonl", "worker_added")}
        victim = added[started["worker"]]
        os.kill(victim["pid"], signal.SIGKILL)
        assert s.gather(future) == 7
    crashed = events(s.run_dir, "workers.jsonl", "worker_crashed")
    assert [e["worker"] for e in crashed] == [victim["worker"]]
    assert crashed[0]["lost_tasks"] == 1 and crashed[0]["pid"] == victim["pid"]
    # the nanny's replacement and the graceful end of the others are not crashes
    assert len(events(s.run_dir, "workers.jsonl", "worker_added")) == 3
    assert len(events(s.run_dir, "workers.jsonl", "worker_removed")) == 2

    attempts = [e for e in events(s.run_dir, event="task_started") if e["key"] == future.key]
    assert [e["attempt"] for e in attempts] == [1, 2]
    assert attempts[1]["worker"] != victim["worker"]
    done = events(s.run_dir, event="task_completed")
    assert len(done) == 1 and done[0]["attempt"] == 2
    assert 2.9 < done[0]["duration_s"] < 4  # the second attempt's own time on its worker
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "completed" and run["tasks_completed"] == 1


def test_resource_samples_per_worker_at_the_interval(project_dir):
    with ScalableSession(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        project="res",
        recording=RecordingOptions(resource_interval=0.25),
    ) as s:
        s.gather(s.map(workloads.burn_cpu, [1.5, 1.501]))  # distinct keys
    samples = events(s.run_dir, "resources.jsonl", "resource_sample")
    by_worker = {}
    for e in samples:
        by_worker.setdefault(e["worker"], []).append(e)
        assert 0 <= e["cpu_percent"] <= 200
        assert e["memory_bytes"] > 10_000_000 and 0 < e["memory_percent"] < 100
    assert len(by_worker) == 2
    usage = {e["worker"]: e for e in events(s.run_dir, "resources.jsonl", "task_resources")}
    for worker, worker_samples in by_worker.items():
        assert len(worker_samples) >= 5  # 1.5 s busy at 0.25 s intervals, plus start-up
        # Over the task's time the samples show the CPU the busy loop used, at the rate the
        # task's own measure gives, however loaded the machine is (a loaded host gives the
        # loop less CPU; both measure the same process). A sample's CPU is the mean since the
        # one before, so the part of each interval that lies in the task's time counts.
        task = usage[worker]
        stop = datetime.fromisoformat(task["timestamp"])
        start = stop - timedelta(seconds=task["wall_s"])
        times = [datetime.fromisoformat(e["timestamp"]) for e in worker_samples]
        covered = sampled_cpu = 0.0
        for e, t0, t1 in zip(worker_samples[1:], times, times[1:]):
            overlap = (min(t1, stop) - max(t0, start)).total_seconds()
            if overlap > 0:
                covered += overlap
                sampled_cpu += e["cpu_percent"] / 100 * overlap
        assert covered > task["wall_s"] / 2, (covered, task["wall_s"])
        sampled_rate, task_rate = sampled_cpu / covered, task["cpu_seconds"] / task["wall_s"]
        assert abs(sampled_rate - task_rate) < 0.25, (sampled_rate, task_rate)


def test_per_task_cpu_seconds_and_peak_memory(project_dir):
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1, project="usage") as s:
        s.gather(
            [
                s.submit(workloads.burn_cpu, 0.6),
                s.submit(workloads.allocate, 300),
                s.submit(workloads.sleep_then, 1, seconds=0.5),
            ]
        )
    usage = {e["task"]: e for e in events(s.run_dir, "resources.jsonl", "task_resources")}
    assert set(usage) == {"burn_cpu", "allocate", "sleep_then"}
    burn = usage["burn_cpu"]
    assert 0.45 < burn["cpu_seconds"] < 0.9 and burn["cpus_used"] > 0.7
    assert usage["sleep_then"]["cpus_used"] < 0.3
    # the 300 MB block is seen even though it is freed before the task ends
    assert (
        usage["allocate"]["peak_memory_bytes"]
        > usage["sleep_then"]["peak_memory_bytes"] + 250 * 2**20
    )
    assert all(not e["cpu_shared"] for e in usage.values())
    completed = {e["key"]: e for e in events(s.run_dir, event="task_completed")}
    for e in usage.values():
        assert e["span_id"] == completed[e["key"]]["span_id"]
