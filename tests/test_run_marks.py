"""The run's mark on a task (`semconv.RUNS_ANNOTATION`, how workers know whose task they
run) is there only while the task may be sent to a worker: the annotations a user reads on
the scheduler's finished task are their own, and a task computed again is marked again.
A real `LocalCluster` with a worker process.
"""

import dask
from distributed import Event

from scalable_otel import ScalableSession
from scalable_otel import semconv as sc
from tests.conftest import events, wait_for
from tests.executions import trace_spans


def held(x, name: str):
    """Say it started (the Dask event `name`-started), then wait for `name`-go; a span
    made inside it tells whose run the worker thought it was."""
    from distributed import Event
    from opentelemetry import trace

    with trace.get_tracer("user.code").start_as_current_span("held"):
        Event(f"{name}-started").set()
        Event(f"{name}-go").wait(timeout=120)
    return x


def annotations(client, key):
    return client.run_on_scheduler(
        lambda dask_scheduler: dict(dask_scheduler.tasks[key].annotations or {})
    )


def state(client, key):
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.tasks[key].state)


def test_the_mark_is_on_a_task_only_while_it_may_go_to_a_worker(project_dir):
    with ScalableSession(target="local", n_workers=1, threads_per_worker=1, project="marks") as s:
        client = s.client
        with dask.annotate(foo=1):
            future = client.submit(held, 1, "first", key="held-task")
        Event("first-started", client=client).wait(timeout=60)
        assert annotations(client, "held-task") == {"foo": 1, sc.RUNS_ANNOTATION: (s.run_id,)}
        Event("first-go", client=client).set()
        assert future.result() == 1
        # Dask's own test: a finished task's annotations are the user's
        assert annotations(client, "held-task") == {"foo": 1}

        # computed again (as after its worker died): marked again while it runs
        Event("first-go", client=client).clear()
        Event("first-started", client=client).clear()
        client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.transitions(
                {"held-task": "released"}, stimulus_id="test-recompute"
            )
        )
        Event("first-started", client=client).wait(timeout=60)
        assert annotations(client, "held-task") == {"foo": 1, sc.RUNS_ANNOTATION: (s.run_id,)}
        Event("first-go", client=client).set()
        wait_for(lambda: state(client, "held-task") == "memory", timeout=60)
        assert annotations(client, "held-task") == {"foo": 1}
        assert future.result() == 1
    # both executions were the run's on the worker: each has its span made inside it,
    # under its own execution
    lines = [e for e in events(s.run_dir) if e["key"] == "held-task"]
    started = [e["span_id"] for e in lines if e["event"] == "task_started"]
    assert len(started) == 2
    held_parents = sorted(
        span.parent_span_id.hex() for span in trace_spans(s.run_dir) if span.name == "held"
    )
    assert held_parents == sorted(started)
