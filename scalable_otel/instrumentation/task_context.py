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
  If a Dask version renames that function, tasks run as before, without the context
  (and one warning says so).
- **Where the spans go.** Unless the worker process already has a tracer provider of
  its own, one is set that hands each ended span to the run's worker plugin, which
  sends it with its next batch to the telemetry process: the span reaches the same
  exporters as the run's own spans (the run directory's `traces.otlp.jsonl`, OTLP).
- **Logs.** Python `logging` records made while a task runs carry `otelTraceID`,
  `otelSpanID` and `otelTraceSampled` (the names of opentelemetry-instrumentation-
  logging), so a format such as `%(otelTraceID)s %(otelSpanID)s` ties them to the trace.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from opentelemetry import context, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from ..ids import execution_span_id
from ..span_records import span_record

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_active: dict = {}  # the run attached in this process: run_id, trace_id, sink
_original_run = None
_provider_set = False
_factory_set = False
_task_end_hooks: list[Callable[[], None]] = []


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


def _dask_run_id(dask_worker, key) -> int | None:
    """Dask's id of the execution of `key` this worker is running (None if unknown)."""
    try:
        return dask_worker.get_worker().state.tasks[key].run_id
    except Exception:  # not in a worker's task, or a Dask without run ids
        return None


def attach_run(run_id: str, trace_id: int, sink: Callable[[dict], None]) -> None:
    """Give tasks run in this process the context of `run_id`; ended spans go to `sink`."""
    with _lock:
        _active.update(run_id=run_id, trace_id=trace_id, sink=sink)
        _wrap_task_runner()
        _set_tracer_provider()
        _set_log_record_factory()


def detach_run(run_id: str) -> None:
    """Stop giving tasks the context of `run_id` (another session may have taken over)."""
    with _lock:
        if _active.get("run_id") == run_id:
            _active.clear()


def _wrap_task_runner() -> None:
    global _original_run
    if _original_run is not None:
        return
    try:
        from distributed import worker as dask_worker

        original = dask_worker._run_task_simple
    except (ImportError, AttributeError):
        logger.warning(
            "scalable-otel: this Dask version has no _run_task_simple: "
            "spans made inside tasks will not nest under their task's span"
        )
        return

    def run_task_in_context(task, data, time_delay):
        run = _active.copy()
        key = getattr(dask_worker.thread_state, "key", None)
        dask_run_id = _dask_run_id(dask_worker, key) if run and key is not None else None
        if dask_run_id is None:
            return original(task, data, time_delay)
        context_ = execution_span_context(run["run_id"], run["trace_id"], key, dask_run_id)
        span = NonRecordingSpan(context_)
        token = context.attach(trace.set_span_in_context(span))
        try:
            return original(task, data, time_delay)
        finally:
            context.detach(token)
            for hook in _task_end_hooks:
                try:
                    hook()
                except Exception:  # telemetry never breaks the task
                    logger.debug("scalable-otel: task end hook failed", exc_info=True)

    dask_worker._run_task_simple = run_task_in_context
    _original_run = original


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
        sink = _active.get("sink")
        if sink is None:
            return
        try:
            sink(span_record(span))
        except Exception:  # telemetry never breaks the task
            logger.debug("scalable-otel: span from a task not kept", exc_info=True)

    def _on_ending(self, span) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


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
