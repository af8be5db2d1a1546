"""Trace context inside tasks: code running in a task on a worker that uses the plain
OpenTelemetry API makes spans under the span of that execution of the task (its
`execute` span, inside the task's span), in the run's trace.

- **Ids known on both sides.** The span id of each execution of a task (its `execute`
  span) is derived from the run id, the task's key and Dask's id of that execution
  (`execution_span_id`; the scheduler gives a task a new `run_id` each time it sends it
  to a worker, and the worker's `TaskState` holds it), and the run's trace id is chosen
  by the session before anything starts. The telemetry process creates the execute span
  with exactly that id, and a worker computes it from the task it is running, with
  nothing sent: a key run twice (retried, recomputed, submitted again) nests each
  execution's spans under that execution.
- **Context while the task runs.** Dask runs a task's function through
  `distributed.worker._run_task_simple`, after setting `thread_state.key`; it is
  wrapped (once per worker process) to make the execution's span the current span for
  the duration, so `tracer.start_as_current_span(...)` inside the task nests under it.
  The wrapper passes Dask's arguments through unchanged and catches its own failures:
  if a Dask version renames that function or changes it, tasks run and are recorded as
  before, without the context, and `scalable_otel.compat` counts and warns.
- **Where the spans go.** Unless the worker process already has a tracer provider of
  its own, one is set that hands each ended span to the run's worker plugin, which
  sends it with its next batch to the telemetry process: the span reaches the same
  exporters as the run's own spans (the run directory's `traces.otlp.jsonl`, OTLP).
- **One clock.** Dask reports an execution's start and stop on the scheduler's clock:
  the worker's time plus the worker's estimate of how far the scheduler's clock is
  ahead (`time_delay`, which Dask hands its task runner). A span made inside a task is
  moved by that same estimate, so it lies inside its execute span (the estimate's error,
  milliseconds on one host, otherwise puts it beside it: Jaeger flags such a child).
- **Several runs on one worker** (runs sharing a scheduler): a task runs in the
  context of the first run its annotations name (`semconv.RUNS_ANNOTATION`) among the
  runs attached in this process, and an ended span goes to the run whose trace it is
  in. A task no attached run asked for runs with no context.
- **Logs.** Python `logging` records made while a task runs carry `otelTraceID`,
  `otelSpanID` and `otelTraceSampled` (the names of opentelemetry-instrumentation-
  logging), so a format such as `%(otelTraceID)s %(otelSpanID)s` ties them to the trace.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from .. import compat
from .. import semconv as sc
from ..ids import execution_span_id
from ..span_records import shifted, span_record

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_active: dict = {}  # the runs attached in this process: run_id -> (trace_id, sink)
_original_run = None
_provider_set = False
_factory_set = False
_task_end_hooks: list[Callable[[], None]] = []
# Dask's time_delay for the task running in this thread; the last one seen in this
# process for spans that end outside a task
_clock = threading.local()
_last_delay = 0.0


def add_task_end_hook(hook: Callable[[], None]) -> None:
    """Call `hook()` in the task's thread after each task of a run ends (once per hook)."""
    with _lock:
        if hook not in _task_end_hooks:
            _task_end_hooks.append(hook)


def execution_span_context(run_id: str, trace_id: int, key, dask_run_id: int) -> SpanContext:
    """The context of one execution's span, as the telemetry process makes that span."""
    return SpanContext(
        trace_id=trace_id,
        span_id=execution_span_id(run_id, key, dask_run_id),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )


def task_runs(worker, key) -> tuple:
    """The run ids a task's annotations name (set by each run's scheduler plugin)."""
    try:
        annotations = worker.state.tasks[key].annotations
        return tuple((annotations or {}).get(sc.RUNS_ANNOTATION) or ())
    except Exception:  # not a task of this worker, or a Dask with another layout
        return ()


def attach_run(run_id: str, trace_id: int, sink: Callable[[dict], None]) -> None:
    """Give the tasks of `run_id` run in this process its context; ended spans in its
    trace go to `sink`."""
    with _lock:
        _active[run_id] = (trace_id, sink)
        _wrap_task_runner()
        _set_tracer_provider()
        _set_log_record_factory()


def detach_run(run_id: str) -> None:
    """Stop giving tasks the context of `run_id`; other runs attached here go on."""
    with _lock:
        _active.pop(run_id, None)


def _run_of_task(dask_worker, key) -> tuple | None:
    """(run_id, trace_id, Dask's id of this execution or None) of the run a task of this
    worker runs for, or None. One look-up of the task's state: this runs for every task."""
    if not _active:
        return None
    try:
        ts = dask_worker.get_worker().state.tasks[key]
        runs = (ts.annotations or {}).get(sc.RUNS_ANNOTATION) or ()
    except Exception:  # not in a worker's task, or a Dask with another layout
        return None
    for run_id in runs:
        attached = _active.get(run_id)
        if attached is not None:
            return run_id, attached[0], getattr(ts, "run_id", None)
    return None


def _wrap_task_runner() -> None:
    """Wrap Dask's task runner once per process; a Dask without it runs tasks as before."""
    global _original_run
    if _original_run is not None:
        return
    try:
        from distributed import worker as dask_worker

        original = dask_worker._run_task_simple
        if not callable(original):
            raise TypeError(f"a {type(original).__name__}, not a function")
    except Exception as exc:
        compat.fell_back(compat.RUN_TASK, exc)
        return

    # Whatever Dask passes goes through unchanged: a new signature costs the context at
    # worst (tests/test_canaries.py says so), never the task.
    @functools.wraps(original)
    def run_task_in_context(*args, **kwargs):
        entered, token = _enter_task(dask_worker)
        before = _set_time_delay(args, kwargs) if entered else None
        try:
            return original(*args, **kwargs)
        finally:
            if entered:
                _clock.delay = before
                _leave_task(token)

    dask_worker._run_task_simple = run_task_in_context
    _original_run = original


def _set_time_delay(args, kwargs) -> float | None:
    """Keep Dask's `time_delay` argument (`_run_task_simple(task, data, time_delay)`) for
    the spans this task makes; returns the one kept before (a task within a task)."""
    global _last_delay
    before = getattr(_clock, "delay", None)
    delay = kwargs.get("time_delay", args[2] if len(args) > 2 else None)
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        _clock.delay = _last_delay = float(delay)
    return before


def _enter_task(dask_worker) -> tuple[bool, object]:
    """(whether a run's task is starting, the context token to detach); never raises."""
    try:
        key = getattr(getattr(dask_worker, "thread_state", None), "key", None)
        run = _run_of_task(dask_worker, key) if key is not None else None
        if run is None:
            return False, None
    except Exception as exc:
        compat.fell_back(compat.RUN_TASK, exc)
        return False, None
    try:
        run_id, trace_id, dask_run_id = run
        if dask_run_id is None:  # Dask names no execution: the task runs without context
            raise LookupError("the worker's TaskState has no run_id")
        span = NonRecordingSpan(execution_span_context(run_id, trace_id, key, dask_run_id))
        return True, context.attach(trace.set_span_in_context(span))
    except Exception as exc:
        compat.fell_back(compat.RUN_TASK, exc)
        return True, None


def _leave_task(token) -> None:
    if token is not None:
        try:
            context.detach(token)
        except Exception as exc:
            compat.fell_back(compat.RUN_TASK, exc)
    for hook in _task_end_hooks:
        try:
            hook()
        except Exception:  # telemetry never breaks the task
            logger.debug("scalable-otel: task end hook failed", exc_info=True)


def _set_tracer_provider() -> None:
    """A provider for user code, if the process has none: ended spans go to the run."""
    global _provider_set
    if _provider_set:
        return
    _provider_set = True
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return  # the user set their own: their spans still nest under the task spans
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(_ToRun())
    trace.set_tracer_provider(provider)


class _ToRun:
    """Span processor: each ended span, as plain data, to the attached run's sink."""

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span) -> None:
        sink = _sink_of(span)
        if sink is None:
            return
        try:
            delay = getattr(_clock, "delay", None)
            sink(shifted(span_record(span), _last_delay if delay is None else delay))
        except Exception:  # telemetry never breaks the task
            logger.debug("scalable-otel: span from a task not kept", exc_info=True)

    def _on_ending(self, span) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _sink_of(span):
    """The sink of the run whose trace `span` is in, or None."""
    trace_id = span.get_span_context().trace_id
    for run_trace_id, sink in list(_active.values()):
        if run_trace_id == trace_id:
            return sink
    return None


def _set_log_record_factory() -> None:
    global _factory_set
    if _factory_set:
        return
    _factory_set = True
    previous = logging.getLogRecordFactory()

    def record_with_trace(*args, **kwargs):
        record = previous(*args, **kwargs)
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.otelTraceID = format(ctx.trace_id, "032x")
            record.otelSpanID = format(ctx.span_id, "016x")
            record.otelTraceSampled = ctx.trace_flags.sampled
        else:
            record.otelTraceID, record.otelSpanID, record.otelTraceSampled = "0", "0", False
        return record

    logging.setLogRecordFactory(record_with_trace)
