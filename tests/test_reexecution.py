"""A key that runs more than once in one run: every execution is its own record.

Released and submitted again, recomputed after the worker holding its result died, or
retried: each execution has its own span (a task span per life of the key, an execute
span per attempt), its own `task_started` and final lines with `attempt` and `reason`,
spans made inside it nest under it, run.json's counts equal the lines, and no span is
left open. Real `LocalCluster`s with worker processes.
"""

import os
import signal

import orjson

from scalable_otel import RecordingOptions, ScalableSession
from tests import workloads
from tests.conftest import events, wait_for
from tests.executions import check_every_execution_recorded, executions, trace_spans


def forgotten(session, key) -> bool:
    """Whether the scheduler has forgotten `key`."""
    return not session.client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks)


def work_parents(run_dir) -> dict:
    """Parent span id of each span made inside a task (named `work`), by its attributes."""
    parents = {}
    for span in trace_spans(run_dir):
        if span.name == "work":
            attributes = {a.key: a.value for a in span.attributes}
            parents.setdefault(span.parent_span_id.hex(), []).append(attributes)
    return parents


def test_a_key_released_and_submitted_again_is_a_second_execution(project_dir):
    with ScalableSession(target="local", n_workers=2, threads_per_worker=1, project="again") as s:
        first = s.submit(workloads.traced_inc, 1)
        assert first.result() == 2
        key = first.key
        first.release()
        del first
        wait_for(lambda: forgotten(s, key))
        again = s.submit(workloads.traced_inc, 1)
        assert again.key == key and again.result() == 2
    lines = check_every_execution_recorded(s.run_dir)[key]
    assert executions(lines, "task_started") == [(1, None), (2, "resubmit")]
    assert executions(lines, "task_completed") == [(1, None), (2, "resubmit")]
    assert [e["reason"] for e in lines if e["event"] == "task_submitted"] == [None, "resubmit"]
    lives = [e["span_id"] for e in lines if e["event"] == "task_submitted"]
    for attempt, life in zip((1, 2), lives):
        (started,) = [e for e in lines if e["event"] == "task_started" and e["attempt"] == attempt]
        (done,) = [e for e in lines if e["event"] == "task_completed" and e["attempt"] == attempt]
        assert started["parent_span_id"] == done["span_id"] == life
    # each execution's own spans nest under it
    started = {e["span_id"] for e in lines if e["event"] == "task_started"}
    assert set(work_parents(s.run_dir)) == started
    # the plan's graph holds the task once
    plan = orjson.loads((s.run_dir / "plan.json").read_bytes())
    assert [node["key"] for node in plan["graph"]] == [key]


def test_results_recomputed_after_their_worker_died_have_lines_of_their_own(project_dir):
    with ScalableSession(target="local", n_workers=2, threads_per_worker=1, project="lost") as s:
        s.client.wait_for_workers(2)
        victim = sorted(s.client.scheduler_info()["workers"])[0]
        # results kept on the victim; the restriction is loose, so they can be computed again
        held = s.map(workloads.traced_inc, range(4), workers=[victim], allow_other_workers=True)
        assert s.gather(held) == [1, 2, 3, 4]

        def added():
            lines = events(s.run_dir, "workers.jsonl", "worker_added")
            return next((e for e in lines if e["worker"] == victim), None)

        # the victim's report of the first executions (their spans ride with it) is in
        wait_for(lambda: len(events(s.run_dir, "resources.jsonl", "task_resources")) == 4)
        os.kill(wait_for(added)["pid"], signal.SIGKILL)
        wait_for(lambda: events(s.run_dir, "workers.jsonl", "worker_crashed"))
        assert s.gather(s.submit(sum, held)) == 10  # a dependent of the lost results
    (crashed,) = events(s.run_dir, "workers.jsonl", "worker_crashed")
    assert crashed["lost_results"] == 4
    by_key = check_every_execution_recorded(s.run_dir)
    parents = work_parents(s.run_dir)
    for future in held:
        lines = by_key[future.key]
        assert executions(lines, "task_completed") == [(1, None), (2, "recompute")]
        assert executions(lines, "task_started") == [(1, None), (2, "recompute")]
        first, second = [e for e in lines if e["event"] == "task_started"]
        assert first["worker"] == victim and second["worker"] != victim
        assert first["span_id"] in parents and second["span_id"] in parents
    run = orjson.loads((s.run_dir / "run.json").read_bytes())
    assert run["tasks_completed"] == 4 + 4 + 1


def test_a_retried_task_has_a_line_for_each_attempt(project_dir):
    marker = project_dir / "first-attempt"
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1, project="retry") as s:
        assert s.submit(workloads.fail_once, str(marker), retries=1).result() == "second"
    (lines,) = check_every_execution_recorded(s.run_dir).values()
    assert executions(lines, "task_started") == [(1, None), (2, "retry")]
    assert executions(lines, "task_completed") == [(2, "retry")]
    first, second = [e for e in lines if e["event"] == "task_started"]
    assert first["span_id"] != second["span_id"]
    assert first["parent_span_id"] == second["parent_span_id"]  # one life, two attempts
    parents = work_parents(s.run_dir)
    assert [a["first"].bool_value for a in parents[first["span_id"]]] == [True]
    assert [a["first"].bool_value for a in parents[second["span_id"]]] == [False]


def test_a_key_submitted_again_with_the_recorder_in_a_thread(project_dir):
    """The same records through the recorder in the client's process."""
    with ScalableSession(
        target="local",
        n_workers=1,
        threads_per_worker=1,
        project="thread",
        recording=RecordingOptions(recorder="thread"),
    ) as s:
        for _ in range(2):
            future = s.submit(workloads.inc, 5)
            assert future.result() == 6
            key = future.key
            future.release()
            del future
            wait_for(lambda: forgotten(s, key))  # noqa: B023 (called at once)
    lines = check_every_execution_recorded(s.run_dir)[key]
    assert executions(lines, "task_completed") == [(1, None), (2, "resubmit")]
