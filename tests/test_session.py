"""A real LocalCluster run: the run directory, its lines, and run.json."""

import re
import threading
from pathlib import Path

import dask
import orjson
import pytest

from scalable_otel import RecordingOptions, ScalableSession
from scalable_otel.analysis import load_run, report
from scalable_otel.rundir import JSONL_FILES
from tests import workloads
from tests.conftest import events, read_jsonl, wait_for

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
RUN_NAME = re.compile(r"^run-\d{8}T\d{6}Z-myproj-[0-9a-f]{8}$")


def session(**kwargs):
    kwargs.setdefault("n_workers", 1)
    kwargs.setdefault("threads_per_worker", 1)
    kwargs.setdefault("project", "myproj")
    return ScalableSession(target="local", **kwargs)


def test_run_directory_holds_every_file_and_task_lifecycle(project_dir):
    with session() as s:
        assert s.run_dir.parent == project_dir / ".scalable" / "runs"
        assert RUN_NAME.match(s.run_dir.name)
        running = orjson.loads((s.run_dir / "run.json").read_bytes())
        assert running["status"] == "running" and running["end_time"] is None
        futures = s.map(workloads.sleep_then, range(4), seconds=0.3)
        assert s.gather(futures) == [0, 1, 2, 3]
    run_dir = s.run_dir
    for name in ("run.json", "manifest.yaml", "plan.json", *JSONL_FILES):
        assert (run_dir / name).is_file(), name

    run = orjson.loads((run_dir / "run.json").read_bytes())
    assert run["status"] == "completed"
    assert (run["tasks_submitted"], run["tasks_completed"], run["tasks_failed"]) == (4, 4, 0)
    assert run["target"] == "local" and run["provider"] == "local" and run["project"] == "myproj"
    assert run["manifest_hash"].startswith("sha256:")
    assert ISO_Z.match(run["start_time"]) and ISO_Z.match(run["end_time"])
    assert run["duration_s"] > 1.0

    lines = events(run_dir)
    by_event = {}
    for e in lines:
        by_event.setdefault(e["event"], []).append(e)
        assert e["schema_version"] == 1 and ISO_Z.match(e["timestamp"])
        assert e["trace_id"] == run["trace_id"]
        assert e["task"] == "sleep_then" and e["key"].startswith("sleep_then-")
    assert {k: len(v) for k, v in by_event.items()} == {
        "task_submitted": 4,
        "task_started": 4,
        "task_completed": 4,
    }
    assert sorted(e["args"]["x"] for e in by_event["task_submitted"]) == [0, 1, 2, 3]
    assert all(
        e["args"] == {"x": e["args"]["x"], "seconds": 0.3} for e in by_event["task_completed"]
    )

    workers = {e["worker"] for e in events(run_dir, "workers.jsonl", "worker_added")}
    submitted = {e["key"]: e for e in by_event["task_submitted"]}
    for started in by_event["task_started"]:
        assert started["worker"] in workers  # an address, never the task key
        assert started["parent_span_id"] == submitted[started["key"]]["span_id"]
        assert started["attempt"] == 1
    waits = []
    for done in by_event["task_completed"]:
        # duration is the time on the worker, not submit-to-callback
        assert 0.29 <= done["duration_s"] < 0.6, done
        assert done["worker"] in workers
        waits.append(done["queue_wait_s"])
    # one worker thread: the four tasks queue behind each other
    assert max(waits) > 0.8 and min(waits) < 0.3


def test_failures_name_error_traceback_and_failed_dependency(project_dir):
    with session() as s:
        bad = s.submit(workloads.fail, 3)
        downstream = s.submit(workloads.add, bad, 1)
        ok = s.submit(workloads.inc, 1)
        assert s.gather(ok) == 2
        with pytest.raises(ValueError):
            s.gather(downstream)
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "failed"
    assert (run["tasks_completed"], run["tasks_failed"]) == (1, 2)

    failures = {e["task"]: e for e in read_jsonl(s.run_dir / "failures.jsonl")}
    root = failures["fail"]
    assert root["event"] == "task_failed" and root["error_type"] == "ValueError"
    assert root["error_message"] == "bad input 3"
    assert "raise ValueError" in root["traceback"]
    assert root["worker"].startswith("tcp://") and root["attempt"] == 1
    dep = failures["add"]
    assert dep["caused_by"] == {"task": "fail", "key": root["key"]}
    assert dep["error_type"] == "ValueError" and root["key"] in dep["error_message"]
    failed = events(s.run_dir, event="task_failed")
    assert {e["task"] for e in failed} == {"fail", "add"}


def test_exception_in_with_body_marks_run_failed(project_dir):
    with pytest.raises(RuntimeError):
        with session() as s:
            s.gather(s.submit(workloads.inc, 1))
            raise RuntimeError("analysis crashed")
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "failed" and run["tasks_failed"] == 0


def test_lines_appear_while_a_long_task_runs(project_dir):
    with session() as s:
        future = s.submit(workloads.sleep_then, 1, seconds=4)
        started = wait_for(lambda: events(s.run_dir, event="task_started"), timeout=3.5)
        assert not future.done()  # visible before the task ends
        assert started[0]["worker"].startswith("tcp://")
        s.gather(future)
        done = wait_for(lambda: events(s.run_dir, event="task_completed"), timeout=2)
    assert done[0]["duration_s"] >= 3.9


def test_everything_computed_on_the_client_is_recorded(project_dir):
    da = pytest.importorskip("dask.array")
    with session(n_workers=2) as s:
        total = s.client.compute(da.ones((40, 40), chunks=10).sum()).result()
        assert total == 1600
        delayed = dask.delayed(workloads.add)(dask.delayed(workloads.inc)(1), 10)
        assert s.client.compute(delayed).result() == 12
    completed = events(s.run_dir, event="task_completed")
    names = {e["task"] for e in completed}
    assert {"inc", "add"} <= names
    assert any(name.startswith(("ones", "sum")) for name in names)
    # span names are task names, never keys
    assert all(e["task"] != e["key"] for e in completed)
    submitted = events(s.run_dir, event="task_submitted")
    assert len(submitted) == len(completed)
    add = next(e for e in submitted if e["task"] == "add")
    inc = next(e for e in submitted if e["task"] == "inc")
    assert add["dependencies"] == [inc["key"]]
    plan = orjson.loads((s.run_dir / "plan.json").read_bytes())
    assert {"key": add["key"], "task": "add", "dependencies": [inc["key"]]} in plan["graph"]


@pytest.mark.parametrize("env", [{"SCALABLE_TELEMETRY": "off"}, {"OTEL_SDK_DISABLED": "true"}])
def test_off_switch_runs_without_telemetry(project_dir, monkeypatch, env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with session() as s:
        assert s.gather(s.submit(workloads.inc, 41)) == 42
    assert s.run_dir is None
    assert not (project_dir / ".scalable").exists()


def test_from_yaml_snapshots_the_manifest(project_dir):
    manifest = project_dir / "scalable.yaml"
    manifest.write_text(
        "version: 1\nproject: {name: demeter-lulcc}\n"
        "targets:\n  local: {provider: local, max_workers: 1, threads_per_worker: 1}\n"
        "components:\n  sim: {cpus: 4, memory: 16G}\n"
        "tasks:\n  run_simulation: {component: sim}\n"
    )
    with ScalableSession.from_yaml(target="local") as s:
        s.gather(s.submit(workloads.inc, 1))
    assert "-demeter-lulcc-" in s.run_dir.name
    assert (s.run_dir / "manifest.yaml").read_text() == manifest.read_text()
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["project"] == "demeter-lulcc" and run["settings"]["n_workers"] == 1
    # the hash is of the content, not of its formatting
    reformatted = project_dir / "other.yaml"
    reformatted.write_text(
        "project:\n  name: demeter-lulcc\nversion: 1\n"
        "tasks: {run_simulation: {component: sim}}\n"
        "components: {sim: {memory: 16G, cpus: 4}}\n"
        "targets: {local: {threads_per_worker: 1, provider: local, max_workers: 1}}\n"
    )
    from scalable_otel import Manifest

    assert Manifest.load(reformatted).hash == run["manifest_hash"]
    plan = orjson.loads((s.run_dir / "plan.json").read_bytes())
    assert plan["tasks"]["run_simulation"] == {"cpus": 4, "memory": "16G", "component": "sim"}


def test_scheduler_address_target_is_recorded(project_dir):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with ScalableSession(target=cluster.scheduler_address, project="myproj") as s:
            assert s.gather(s.map(workloads.inc, range(5))) == [1, 2, 3, 4, 5]
        # the cluster lives on; a second session on it records its own run
        with ScalableSession(target=cluster.scheduler_address, project="myproj") as s2:
            assert s2.gather(s2.submit(workloads.inc, 10)) == 11
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["provider"] == "address" and run["tasks_completed"] == 5
    assert run["telemetry_records_unhandled"] == 0  # records forwarded by a remote scheduler
    assert len(events(s.run_dir, event="task_completed")) == 5
    assert len(events(s2.run_dir, event="task_completed")) == 1
    assert events(s.run_dir, "workers.jsonl", "worker_added")


def test_two_sessions_at_once_get_distinct_run_directories(project_dir):
    results = {}

    def run(name):
        with session() as s:
            results[name] = (s.run_dir, s.gather(s.map(workloads.inc, range(10))))

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["a"][0] != results["b"][0]
    for run_dir, _ in results.values():
        assert len(events(Path(run_dir), event="task_completed")) == 10


def test_cancelled_running_task_is_cancelled_not_a_lost_attempt(project_dir):
    with session() as s:
        future = s.submit(workloads.sleep_then, 1, seconds=3)
        wait_for(lambda: events(s.run_dir, event="task_started"))
        future.cancel()
        assert s.gather(s.submit(workloads.inc, 1)) == 2
    (cancelled,) = events(s.run_dir, event="task_cancelled")
    assert cancelled["key"] == future.key and cancelled["attempt"] == 1
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["tasks_cancelled"] == 1 and run["status"] == "completed"


def test_retries_are_attempts_of_the_same_task(project_dir):
    with session() as s:
        with pytest.raises(ValueError):
            s.gather(s.submit(workloads.fail, 1, retries=2))
    (failed,) = events(s.run_dir, event="task_failed")
    assert failed["attempt"] == 3
    (failure,) = read_jsonl(s.run_dir / "failures.jsonl")
    assert failure["attempt"] == 3 and failure["error_type"] == "ValueError"
    assert len(events(s.run_dir, event="task_submitted")) == 1
    usage = events(s.run_dir, "resources.jsonl", "task_resources")
    assert len(usage) == 3  # each attempt measured on its worker


def test_unwritable_runs_directory_never_stops_the_workflow(project_dir, caplog):
    blocker = project_dir / "runs"
    blocker.write_text("a file where the runs directory should be")
    with session(runs_dir=blocker) as s:
        assert s.gather(s.submit(workloads.inc, 1)) == 2
    assert s.run_dir is None
    warnings = [r.message for r in caplog.records if "telemetry is off" in r.message]
    assert len(warnings) == 1


def test_keyboard_interrupt_in_the_body_marks_run_interrupted(project_dir):
    with pytest.raises(KeyboardInterrupt):
        with session() as s:
            s.gather(s.submit(workloads.inc, 1))
            raise KeyboardInterrupt
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "interrupted" and run["tasks_completed"] == 1


def test_telemetry_process_killed_mid_run_never_stops_the_workflow(project_dir, caplog):
    import os
    import signal

    with session() as s:
        assert s.gather(s.map(workloads.inc, range(5))) == [1, 2, 3, 4, 5]
        wait_for(lambda: len(events(s.run_dir, event="task_completed")) == 5)
        os.kill(s._recording._process.pid, signal.SIGKILL)
        assert s.gather(s.map(workloads.inc, range(5, 10))) == [6, 7, 8, 9, 10]
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "completed" and run["telemetry_lost"] is True
    # what was written before the loss is all there and whole
    assert len(events(s.run_dir, event="task_completed")) == 5
    # counts it never learned are null, and readers count the lines instead
    assert run["tasks_completed"] is None and run["tasks_submitted"] is None
    assert report(load_run(s.run_dir))["tasks"]["completed"] == 5
    assert sum("telemetry process is gone" in r.message for r in caplog.records) == 1


def test_recorder_in_a_thread_writes_the_same_run_directory(project_dir):
    import psutil

    def recorder_processes():
        children = psutil.Process().children(recursive=True)
        return [p for p in children if "_recorder_main" in " ".join(p.cmdline())]

    with session(recording=RecordingOptions(recorder="thread")) as s:
        assert s.gather(s.map(workloads.inc, range(3))) == [1, 2, 3]
        assert recorder_processes() == []
    with session():
        assert len(recorder_processes()) == 1
    names = [e["event"] for e in events(s.run_dir)]
    assert names.count("task_completed") == 3 and names.count("task_started") == 3
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["status"] == "completed" and run["tasks_completed"] == 3
