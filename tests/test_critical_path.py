"""The critical path: real LocalCluster runs whose path is known by construction, and
hand-written run directories for the edge cases (lost attempt, missing start line, no
tasks, a crashed run, a Scalable 2.0 beta run)."""

import orjson
import pytest
from click.testing import CliRunner

from scalable_otel import ScalableSession
from scalable_otel.analysis import load_run
from scalable_otel.analysis.critical_path import (
    WORKER_SKEW_S,
    critical_path,
    format_critical_path,
)
from scalable_otel.cli import main
from tests import workloads
from tests.conftest import events
from tests.test_html_figures import A, B, line, run_dir, worker


def durations(run_path) -> dict:
    """duration_s of each key's completed line, as recorded."""
    return {e["key"]: e["duration_s"] for e in events(run_path, event="task_completed")}


def check_summary(path) -> None:
    """The summary's parts add up to the wall time, and execution is the links' own."""
    summary = path.to_dict()["summary"]
    parts = ("execution_s", "waiting_s", "lost_s", "client_s", "else_s")
    assert sum(summary[p] for p in parts) == pytest.approx(summary["wall_s"])
    assert sum(summary["shares"].values()) == pytest.approx(1.0)
    assert summary["execution_s"] == pytest.approx(sum(link.execution_s for link in path.links))


def test_a_diamond_s_path_runs_through_its_slower_branch(project_dir):
    marker = project_dir / "c-done"
    with ScalableSession(target="local", n_workers=1, threads_per_worker=2, project="dia") as s:
        a = s.submit(workloads.inc, 1, key="a")
        # b ends 0.3 s after c has ended: the slower branch whatever the machine's load
        b = s.submit(workloads.hold_until_then_sleep, str(marker), a, key="b")
        c = s.submit(workloads.touch, str(marker), a, key="c")
        d = s.submit(workloads.add, b, c, key="d")
        assert d.result() == 4
    path = critical_path(load_run(s.run_dir))
    assert [link.key for link in path.links] == ["a", "b", "d"]
    assert [link.linked_by for link in path.links] == [None, "dependency", "dependency"]
    assert [link.after for link in path.links] == [None, "a", "b"]
    recorded = durations(s.run_dir)
    assert path.execution_s == pytest.approx(recorded["a"] + recorded["b"] + recorded["d"])
    assert all(link.worker_wait_s == 0 for link in path.links)  # two threads, never full
    check_summary(path)

    result = CliRunner().invoke(main, ["report", "--last", "--critical-path", "--format", "json"])
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.output)["critical_path"]
    assert [link["key"] for link in out["links"]] == ["a", "b", "d"]
    text = CliRunner().invoke(main, ["report", "--last", "--critical-path"]).output
    assert "Critical path: 3 tasks, " in text
    assert "Critical path:" not in CliRunner().invoke(main, ["report", "--last"]).output


def test_tasks_waiting_for_the_only_thread_are_linked_by_their_worker(project_dir):
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1, project="one") as s:
        futures = s.map(workloads.sleep_then, range(4), seconds=0.1)  # one graph: all ready
        assert s.gather(futures) == [0, 1, 2, 3]
    path = critical_path(load_run(s.run_dir))
    starts = sorted(events(s.run_dir, event="task_started"), key=lambda e: e["timestamp"])
    assert [link.key for link in path.links] == [e["key"] for e in starts]
    assert [link.linked_by for link in path.links] == [None, "worker", "worker", "worker"]
    # each was ready before the first started, and waited for those before it
    for before, link in zip(path.links, path.links[1:]):
        assert link.worker_wait_s >= before.execution_s - 1e-6  # times have 6 decimals
    recorded = durations(s.run_dir)
    assert path.execution_s == pytest.approx(sum(recorded.values()))
    # what kept each task waiting for its worker was the execution of the one before it
    held = sum(link.execution_s for link in path.links[:-1])
    assert path.worker_wait_s == pytest.approx(held, abs=3 * WORKER_SKEW_S)
    check_summary(path)


def test_a_graph_submitted_after_a_result_is_linked_by_the_client(project_dir):
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1, project="two") as s:
        first = s.submit(workloads.inc, 1, key="first")
        assert first.result() == 2
        second = s.submit(workloads.inc, 2, key="second")
        assert second.result() == 3
    path = critical_path(load_run(s.run_dir))
    assert [link.key for link in path.links] == ["first", "second"]
    assert [link.linked_by for link in path.links] == [None, "client"]
    assert path.client_s == path.links[1].client_s >= 0
    check_summary(path)


def test_the_client_s_time_between_graphs_is_its_own(tmp_path):
    tasks = [
        submitted(1, "x-1"),
        started(1, "x-1", A),
        completed(2, "x-1", A, 1.0),
        submitted(2.5, "y-1"),  # the client sent it half a second after x's result
        started(2.75, "y-1", B, wait=0.25),
        completed(3.75, "y-1", B, 1.0, wait=0.25),
    ]
    path = critical_path(run_dir(tmp_path, tasks=tasks))
    assert [(link.key, link.linked_by) for link in path.links] == [("x-1", None), ("y-1", "client")]
    assert path.client_s == pytest.approx(0.5)
    assert path.links[1].dependency_wait_s == pytest.approx(0.25)
    check_summary(path)
    assert "0.500s (5%) in the client between graphs" in format_critical_path(path.to_dict())


# --- hand-written runs -----------------------------------------------------------------------


def submitted(t, key, deps=()):
    return line("task_submitted", t, key, dependencies=list(deps))


def started(t, key, w, attempt=1, wait=0.0):
    return line("task_started", t, key, w, attempt, queue_wait_s=wait)


def completed(t, key, w, duration, attempt=1, wait=0.0):
    return line("task_completed", t, key, w, attempt, duration_s=duration, queue_wait_s=wait)


def test_a_lost_attempt_s_time_is_counted_as_lost(tmp_path):
    tasks = [
        submitted(1, "x-1"),
        started(1, "x-1", A),
        completed(3, "x-1", A, 2.0),
        submitted(1, "y-1", ["x-1"]),
        started(3, "y-1", A),  # its worker died: no final line for attempt 1
        started(6, "y-1", B, attempt=2, wait=0.5),  # ready again at 5.5
        completed(7, "y-1", B, 1.0, attempt=2, wait=0.5),
    ]
    workers = [worker("worker_added", 0, A, "0"), worker("worker_added", 0, B, "1")]
    path = critical_path(run_dir(tmp_path, tasks=tasks, workers=workers))
    assert [(link.key, link.attempt) for link in path.links] == [("x-1", 1), ("y-1", 2)]
    last = path.links[-1]
    assert last.earlier_attempts == 1
    assert last.lost_s == pytest.approx(2.5)  # from 3 to the retry's ready time
    assert last.dependency_wait_s == pytest.approx(0.5)
    assert path.before_s == pytest.approx(1) and path.after_s == pytest.approx(3)
    check_summary(path)
    assert "in lost attempts" in format_critical_path(path.to_dict())


def test_a_missing_start_line_is_read_back_from_the_end(tmp_path):
    tasks = [
        submitted(0.5, "x-1"),
        completed(2, "x-1", A, 1.0, wait=0.5),  # its task_started line never came
        submitted(0.5, "y-1", ["x-1"]),
        started(2.25, "y-1", A),
        completed(3.25, "y-1", A, 1.0),
    ]
    path = critical_path(run_dir(tmp_path, tasks=tasks))
    assert [link.key for link in path.links] == ["x-1", "y-1"]
    assert path.links[0].start == pytest.approx(path.links[0].end - 1.0)
    assert path.links[1].dependency_wait_s == pytest.approx(0.25)
    check_summary(path)


def test_a_crashed_run_ends_at_its_last_task_event(tmp_path):
    tasks = [submitted(1, "x-1"), started(1, "x-1", A), completed(2, "x-1", A, 1.0)]
    tasks.append(submitted(2.5, "y-1"))  # submitted, never started
    run = run_dir(tmp_path, {"status": "running", "end_time": None}, tasks=tasks)
    path = critical_path(run)
    assert path.wall_s == pytest.approx(2.5)
    assert [link.key for link in path.links] == ["x-1"]
    check_summary(path)
    # one figure: the report's duration, the path's wall time and the what-if's real one
    from scalable_otel.analysis.report import report
    from scalable_otel.analysis.whatif import whatif

    assert report(run)["duration_s"] == path.wall_s == whatif(run).real_duration_s


def test_a_run_without_tasks_or_starts_has_no_path(tmp_path):
    path = critical_path(run_dir(tmp_path))
    assert not path.available and path.reason == "no task ran on a worker"
    text = format_critical_path(path.to_dict())
    assert text == "Critical path: not available (no task ran on a worker)"


def test_a_failed_task_can_end_the_path(tmp_path):
    tasks = [
        submitted(0, "x-1"),
        started(0, "x-1", A),
        completed(1, "x-1", A, 1.0),
        submitted(0, "y-1", ["x-1"]),
        started(1, "y-1", A),
        line("task_failed", 2, "y-1", A, 1, duration_s=1.0, queue_wait_s=0.0),
        line("task_failed", 2, "z-1", None, 1, duration_s=0.0),  # its dependency failed
    ]
    path = critical_path(run_dir(tmp_path, tasks=tasks))
    assert [(link.key, link.status) for link in path.links] == [
        ("x-1", "completed"),
        ("y-1", "failed"),
    ]


def test_a_ready_time_before_the_dependency_s_end_is_no_wait_for_a_worker(tmp_path):
    # y's ready time (the scheduler's) is 10 ms before x's computed end, on x's worker
    tasks = [
        submitted(0, "x-1"),
        started(0, "x-1", A),
        completed(1, "x-1", A, 1.0),
        submitted(0, "y-1", ["x-1"]),
        started(1.005, "y-1", A, wait=0.015),
        completed(2, "y-1", A, 0.995, wait=0.015),
    ]
    path = critical_path(run_dir(tmp_path, tasks=tasks))
    assert [link.linked_by for link in path.links] == [None, "dependency"]
    assert path.links[1].worker_wait_s == 0
    assert path.links[1].dependency_wait_s == pytest.approx(0.005, abs=1e-6)


def test_a_beta_run_has_no_path(tmp_path):
    run = run_dir(tmp_path, {"format": "scalable-2.0-beta"})
    assert critical_path(run).reason == "the Scalable 2.0 beta recorded no task starts"


def test_the_html_page_leaves_the_path_out_of_very_large_runs_unless_given(tmp_path):
    from scalable_otel.analysis.html.critical import (
        MAX_PATH_ATTEMPTS,
        critical_figure,
        critical_section,
    )

    tasks = [submitted(0, "x-1"), started(0, "x-1", A), completed(1, "x-1", A, 1.0)]
    run = run_dir(tmp_path, tasks=tasks)
    path = critical_path(run).to_dict()
    assert critical_figure(run, {}, 1) == path
    assert critical_figure(run, {}, MAX_PATH_ATTEMPTS + 1) is None
    assert critical_figure(run, {"critical_path": path}, MAX_PATH_ATTEMPTS + 1) == path
    assert "scalable report --critical-path --html" in critical_section(None, None)


def test_a_client_link_survives_a_worker_clock_offset_beyond_the_skew_allowed(tmp_path):
    # Dask's estimate of the worker's clock offset put x's end 0.12 s after the client sent
    # y, which it did only after x's result came back (seen with distributed 2024.12)
    tasks = [
        submitted(1, "x-1"),
        started(2.11, "x-1", A, wait=1.11),
        completed(2.12, "x-1", A, 0.01, wait=1.11),
        submitted(2.0, "y-1"),
        started(2.13, "y-1", A, wait=0.01),
        completed(2.63, "y-1", A, 0.5, wait=0.01),
    ]
    path = critical_path(run_dir(tmp_path, tasks=tasks))
    assert [(link.key, link.linked_by) for link in path.links] == [("x-1", None), ("y-1", "client")]
    assert path.client_s == 0.0
    check_summary(path)
