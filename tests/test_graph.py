"""`analysis.graph.run_graph`: every attempt of every key with its times, worker and
dependencies, from hand-written run directories and a real LocalCluster run."""

import pytest

from scalable_otel import ScalableSession
from scalable_otel.analysis import load_run
from scalable_otel.analysis.graph import run_graph
from scalable_otel.rundir import parse_iso
from tests import workloads
from tests.conftest import events
from tests.test_html_figures import A, B, line, run_dir, stamp, worker


def at(seconds: float) -> float:
    return parse_iso(stamp(seconds))


def test_times_of_an_attempt_come_from_its_lines(tmp_path):
    tasks = [
        line("task_submitted", 1, "x-1", dependencies=[]),
        line("task_started", 2, "x-1", A, queue_wait_s=0.5),
        line("task_completed", 3.5, "x-1", A, duration_s=1.25, queue_wait_s=0.5),
        line("task_submitted", 1, "y-1", dependencies=["x-1"]),
    ]
    workers = [worker("worker_added", 0, A, "0", nthreads=4), worker("worker_added", 0, B, "1")]
    graph = run_graph(run_dir(tmp_path, tasks=tasks, workers=workers))
    (x,) = graph.executions  # y never had an attempt
    assert (x.key, x.attempt, x.worker, x.status) == ("x-1", 1, A, "completed")
    assert x.submitted == at(1) and x.ready == pytest.approx(at(1.5))
    assert x.start == at(2) and x.end == pytest.approx(at(3.25))  # start + duration_s
    assert x.dependencies == () and x.ran
    assert graph.threads == {A: 4, B: 1} and graph.slots == 5
    assert graph.run_start == at(0) and graph.run_end == at(10)
    assert graph.final() == {"x-1": x} and graph.by_worker() == {A: [x]}


def test_a_lost_attempt_ends_when_the_next_became_ready(tmp_path):
    tasks = [
        line("task_submitted", 0, "x-1", dependencies=[]),
        line("task_started", 1, "x-1", A, 1, queue_wait_s=0.0),
        line("task_started", 4, "x-1", B, 2, queue_wait_s=1.0),
        line("task_completed", 5, "x-1", B, 2, duration_s=1.0, queue_wait_s=1.0),
        line("task_started", 6, "z-1", A, 1, queue_wait_s=0.0),  # still running
    ]
    graph = run_graph(run_dir(tmp_path, tasks=tasks))
    lost, retry, running = graph.executions
    assert (lost.attempt, lost.status, lost.end) == (1, "lost", at(3))
    assert (retry.attempt, retry.status, retry.ready) == (2, "completed", at(3))
    assert (running.key, running.status, running.end, running.ran) == ("z-1", "lost", None, False)
    assert graph.final() == {"x-1": retry}
    assert graph.by_worker() == {A: [lost], B: [retry]}


def test_a_final_line_without_its_start_line_starts_back_from_its_end(tmp_path):
    tasks = [
        line("task_completed", 3, "x-1", A, duration_s=1.0, queue_wait_s=0.25),
        line("task_failed", 3, "y-1", None, duration_s=0.0),  # never ran: no worker
    ]
    x, y = run_graph(run_dir(tmp_path, tasks=tasks)).executions
    assert (x.start, x.ready, x.end) == (at(2), at(1.75), at(3))
    assert (y.status, y.start, y.ran) == ("failed", None, False)


def test_an_empty_run_has_an_empty_graph(tmp_path):
    graph = run_graph(run_dir(tmp_path))
    assert graph.executions == [] and graph.final() == {} and graph.slots == 0


def test_a_real_run_s_graph(project_dir):
    with ScalableSession(target="local", n_workers=2, threads_per_worker=1, project="g") as s:
        a = s.submit(workloads.inc, 1, key="a")
        b = s.submit(workloads.add, a, 2, key="b")
        assert b.result() == 4
    graph = run_graph(load_run(s.run_dir))
    final = graph.final()
    assert set(final) == {"a", "b"} and final["b"].dependencies == ("a",)
    recorded = {e["key"]: e for e in events(s.run_dir, event="task_completed")}
    for key, execution in final.items():
        assert execution.duration_s == recorded[key]["duration_s"]
        assert execution.worker == recorded[key]["worker"]
        assert execution.submitted <= execution.start <= execution.end
    assert final["a"].start < final["b"].start
    assert graph.threads == dict.fromkeys(graph.threads, 1) and len(graph.threads) == 2


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_timestamps_with_an_offset_or_none_read_as_the_line_reader_reads_them(
    tmp_path, monkeypatch, tz
):
    import threading

    monkeypatch.setenv("TZ", tz)
    start = stamp(2)  # ...Z
    tasks = [
        line("task_submitted", 1, "x-1", dependencies=[]),
        {**line("task_started", 2, "x-1", A), "timestamp": start[:-1]},  # no offset: UTC
        {**line("task_started", 3, "x-1", A, 2), "timestamp": start[:-1] + "+01:00"},
    ]
    result: list = []
    # a fresh thread: a fresh DuckDB connection, made under this TZ
    thread = threading.Thread(
        target=lambda: result.append(run_graph(run_dir(tmp_path, tasks=tasks)))
    )
    thread.start()
    thread.join()
    by_attempt = {e.attempt: e for e in result[0].executions}
    assert by_attempt[1].start == parse_iso(start[:-1]) == at(2)
    assert by_attempt[2].start == parse_iso(start[:-1] + "+01:00") == at(2) - 3600


def test_an_attempt_starts_at_dask_s_compute_start_when_its_start_line_holds_an_earlier_one(
    tmp_path,
):
    # the worker plugin saw the task executing at 2.0; Dask's compute started at 2.4: the
    # final line's wait (from the same ready time, 1.5) says so
    tasks = [
        line("task_submitted", 1, "x-1", dependencies=[]),
        line("task_started", 2.0, "x-1", A, queue_wait_s=0.5),
        line("task_completed", 3.5, "x-1", A, duration_s=1.0, queue_wait_s=0.9),
    ]
    (x,) = run_graph(run_dir(tmp_path, tasks=tasks)).executions
    assert x.start == pytest.approx(at(2.4)) and x.end == pytest.approx(at(3.4))
    assert x.ready == pytest.approx(at(1.5))
