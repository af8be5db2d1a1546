"""Dask releases that moved what scalable-otel relies on, simulated inside a worker process.

Each function changes `distributed.worker` (or the package) in the process it runs in, the
way a future release might, and leaves a Dask that still runs tasks. `MovedDask` runs one
of them on every worker, before the run's own worker plugin is set up.
"""

from __future__ import annotations

import types

from distributed.diagnostics.plugin import WorkerPlugin


def _task_runner_calling(runner) -> types.FunctionType:
    """Dask's `_run_task`, as it is, but finding `_run_task_simple` as `runner`."""
    from distributed import worker

    original = worker._run_task
    own_globals = dict(worker.__dict__, _run_task_simple=runner)
    return types.FunctionType(original.__code__, own_globals, original.__name__)


def renamed() -> None:
    """A release that renames `_run_task_simple` (tasks still run, through the new name)."""
    from distributed import worker

    runner = worker._run_task_simple
    del worker._run_task_simple
    worker._run_task_simple_v2 = runner
    worker._run_task = _task_runner_calling(runner)


def new_signature() -> None:
    """A release whose `_run_task_simple` takes its delay by keyword, with a new argument."""
    from distributed import worker

    runner = worker._run_task_simple

    def _run_task_simple(task, data, *, time_delay, meter=None):
        return runner(task, data, time_delay)

    def call_the_module_s(task, data, time_delay):  # whatever wraps it now: the new way
        return worker.__dict__["_run_task_simple"](task, data, time_delay=time_delay, meter=None)

    worker._run_task_simple = _run_task_simple
    worker._run_task = _task_runner_calling(call_the_module_s)


def failing_context() -> None:
    """Not Dask moving but scalable-otel failing: the task's span context cannot be made."""
    from scalable_otel.instrumentation import task_context

    def execution_span_context(*args, **kwargs):
        raise RuntimeError("no span context today")

    task_context.execution_span_context = execution_span_context


class MovedDask(WorkerPlugin):
    """Runs one of this module's functions on each worker as it starts."""

    name = "tests-moved-dask"

    def __init__(self, how: str):
        self.how = how

    def setup(self, worker) -> None:
        globals()[self.how]()
