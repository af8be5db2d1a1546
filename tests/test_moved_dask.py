"""A Dask release that moves what scalable-otel relies on: tasks still succeed and are
recorded; the run records less (no in-task trace context) and says what moved.

Each test simulates one move in real worker processes of a `LocalCluster`
(`tests/moved_dask.py`), before the run's worker plugin is set up."""

import json

import pytest
from distributed import Client, LocalCluster

from scalable_otel import ScalableSession, compat
from tests.conftest import events
from tests.moved_dask import MovedDask

N_TASKS = 8
N_WORKERS = 2


def traced(x):
    """A task making a span with the plain OpenTelemetry API: its trace and parent."""
    from opentelemetry import trace

    with trace.get_tracer("user.code").start_as_current_span("inside") as span:
        parent = getattr(span, "parent", None)
        return (
            x * 2,
            format(span.get_span_context().trace_id, "032x"),
            None if parent is None else format(parent.span_id, "016x"),
        )


@pytest.mark.parametrize(
    "how, context_kept, fallbacks",
    [
        # no _run_task_simple any more: no context, one warning and count per worker
        ("renamed", False, {compat.RUN_TASK: N_WORKERS}),
        # called another way: the wrapper passes everything through, context kept
        ("new_signature", True, {}),
        # scalable-otel's own part fails in every task: counted, never raised
        ("failing_context", False, {compat.RUN_TASK: N_TASKS}),
    ],
)
def test_tasks_succeed_and_are_recorded_when_dask_moves(
    project_dir, capfd, how, context_kept, fallbacks
):
    with (
        LocalCluster(
            n_workers=N_WORKERS, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(MovedDask(how))
        with ScalableSession.attach(client, project="moved") as session:
            results = session.gather(session.map(traced, range(N_TASKS)))

    assert [r[0] for r in results] == [x * 2 for x in range(N_TASKS)]
    run = json.loads((session.run_dir / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["tasks_completed"] == N_TASKS
    completed = events(session.run_dir, event="task_completed")
    assert sorted(line["args"]["x"] for line in completed) == list(range(N_TASKS))
    assert run["telemetry_fallbacks"] == fallbacks

    task_span = {line["args"]["x"]: line["span_id"] for line in completed}
    for x, (_, trace_id, parent) in enumerate(results):
        if context_kept:
            assert (trace_id, parent) == (run["trace_id"], task_span[x])
        else:
            assert trace_id != run["trace_id"] and parent is None
    if fallbacks:
        err = capfd.readouterr().err
        assert f"{compat.RUN_TASK} has moved" in err
        assert "counted in run.json's telemetry_fallbacks" in err
