"""Lifecycle records from Dask become OTel spans, span events, log events and metrics.

One `Recorder` per run, fed by the scheduler plugin's record deque (the record
kinds and their fields are declared in `semconv.RECORDS`) and drained by its
own thread every flush interval, so no OTel work runs on Dask's event loop.
State is kept only for tasks in flight; a finished task leaves behind nothing
but an entry in a small bounded map that late worker reports are matched
against.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict

import orjson
from opentelemetry import trace
from opentelemetry.metrics import Observation
from opentelemetry.trace import NonRecordingSpan, Status, StatusCode

from . import compat
from . import semconv as sc
from .args import DEFAULT_REDACTION, Redaction
from .ids import key_str, task_span_id
from .rundir import resource_fields

logger = logging.getLogger(__name__)

_RECENT_LIMIT = 10_000
_USAGE_WAIT_S = 5.0  # a worker's batch normally follows its task's end within 0.2 s


def _measures(parked: tuple, address: str, stop: float) -> bool:
    """Whether a worker's measurement is of the attempt that ended a parked task: it ran
    on that attempt's worker and ended after that attempt began (an earlier attempt on
    the same worker ended before)."""
    _, _, _, worker, start = parked
    if worker is not None and address != worker:
        return False
    return start is None or stop > start


# Fields of a record holding a Dask key, or a list of them: msgpack turns tuple keys into
# lists on their way from a scheduler in another process.
_KEY_FIELDS = {
    kind: (
        tuple(i for i, field in enumerate(spec.fields, 1) if field.endswith("key")),
        tuple(i for i, field in enumerate(spec.fields, 1) if field.endswith("keys")),
    )
    for kind, spec in sc.RECORDS.items()
}

_ERROR_TYPE = re.compile(r"^([A-Za-z_][\w.]*)\(")
_CLOSING_STATES = frozenset({"closing", "closing_gracefully", "closed"})


def _ns(t: float) -> int:
    return int(t * 1e9)


def _as_key(value):
    """Undo msgpack's tuple-to-list on keys that came back from a worker."""
    if isinstance(value, list):
        return tuple(_as_key(v) for v in value)
    return value


def error_type(exception_text: str | None) -> str:
    """The exception's class name from Dask's `repr` of it."""
    m = _ERROR_TYPE.match(exception_text or "")
    return m.group(1) if m else "Exception"


def error_message(exception_text: str | None) -> str:
    text = exception_text or ""
    m = _ERROR_TYPE.match(text)
    if m and text.endswith(")"):
        inner = text[m.end() : -1]
        if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
            inner = inner[1:-1]
        return inner
    return text


class _Task:
    __slots__ = (
        "span",
        "name",
        "key",
        "submitted",
        "ready",
        "attempt",
        "exec_span",
        "exec_start",
        "worker",
    )

    def __init__(self, span, name, key, submitted):
        self.span = span
        self.name = name
        self.key = key
        self.submitted = submitted
        self.ready = None
        self.attempt = 1
        self.exec_span = None
        self.exec_start = None
        self.worker = None


class _Worker:
    __slots__ = ("span", "name", "closing")

    def __init__(self, span, name):
        self.span = span
        self.name = name
        self.closing = False


class Recorder:
    """Turns one run's lifecycle records into OTel signals."""

    def __init__(
        self,
        *,
        tracer,
        meter,
        event_logger,
        run_span,
        on_sync=None,
        run_id: str = "",
        ids=None,
        span_out=None,
        redaction: Redaction = DEFAULT_REDACTION,
    ):
        self._tracer = tracer
        self._redaction = redaction  # secrets cut out of error messages and tracebacks
        self._run_id = run_id
        self._ids = ids  # PresetIds: a task span gets the id its workers derive from its key
        self._span_out = span_out  # spans made inside tasks, sent by workers
        self._events = event_logger
        self._run_ctx = trace.set_span_in_context(run_span)
        self._on_sync_mark = on_sync
        self._tasks: dict = {}
        # key -> (ended task, end time, deadline for its usage, worker, start of the attempt)
        self._parked: dict = {}
        self._descriptions: dict = {}
        self._recent: OrderedDict = OrderedDict()
        self._recent_errors: OrderedDict = OrderedDict()
        self._workers: dict = {}
        self._memory_restarts: dict = {}  # address -> RSS its nanny saw, until it is removed
        self.closing = False  # set when the session shuts Dask down: removals are not crashes
        self.synced: set = set()
        self.submitted = self.completed = self.failed = self.cancelled = 0
        self.cache_hits = self.cache_misses = 0
        # Counts per task name, reported by observable counters at collection time:
        # an add() per task would cost as much as the task's span.
        self._counts = {kind: {} for kind in ("submitted", "completed", "failed")}
        self._cache_counts = {"hit": {}, "miss": {}}
        self.unhandled = 0  # records no handler took (run.json's telemetry_records_unhandled)
        self.fallbacks: dict[str, int] = {}  # run.json's telemetry_fallbacks: compat names
        # address -> (batches it failed to send, spans made in tasks it dropped), as its
        # latest batch says: running totals, so a lost batch loses no count
        self._worker_losses: dict = {}
        # kind -> (its handler, the length of its records)
        self._handlers = {
            kind: (getattr(self, "_on_" + kind), len(spec.fields) + 1)
            for kind, spec in sc.RECORDS.items()
        }
        self._make_instruments(meter)

    def _make_instruments(self, meter) -> None:
        secs = list(sc.SECONDS_BUCKETS)
        counters = (
            (sc.METRIC_TASKS_SUBMITTED, self._counts["submitted"], sc.M_TASK, "Tasks submitted"),
            (sc.METRIC_TASKS_COMPLETED, self._counts["completed"], sc.M_TASK, "Tasks completed"),
            (sc.METRIC_TASKS_FAILED, self._counts["failed"], sc.M_TASK, "Tasks failed"),
            (sc.METRIC_CACHE_HITS, self._cache_counts["hit"], sc.M_FUNCTION, "Cache hits"),
            (sc.METRIC_CACHE_MISSES, self._cache_counts["miss"], sc.M_FUNCTION, "Cache misses"),
        )
        for name, counts, label, description in counters:
            unit = "{task}" if label == sc.M_TASK else "{lookup}"
            meter.create_observable_counter(
                name, [self._observe(counts, label)], unit=unit, description=description
            )
        meter.create_observable_up_down_counter(
            sc.METRIC_WORKERS_ACTIVE,
            [lambda options: [Observation(len(self._workers))]],
            unit="{worker}",
            description="Workers connected",
        )
        self._m_duration = meter.create_histogram(
            sc.METRIC_TASK_DURATION,
            unit="s",
            description="Task execution time on the worker",
            explicit_bucket_boundaries_advisory=secs,
        )
        self._m_queue = meter.create_histogram(
            sc.METRIC_TASK_QUEUE_WAIT,
            unit="s",
            description="Time from a task being ready to a worker starting it",
            explicit_bucket_boundaries_advisory=secs,
        )
        self._m_worker_cpu = meter.create_gauge(
            sc.METRIC_WORKER_CPU, unit="1", description="Worker CPU use, 1.0 = one CPU"
        )
        self._m_worker_mem = meter.create_gauge(
            sc.METRIC_WORKER_MEMORY, unit="By", description="Worker process resident memory"
        )

    @staticmethod
    def _observe(counts: dict, label: str):
        def callback(options):
            return [Observation(n, {label: name}) for name, n in list(counts.items())]

        return callback

    @staticmethod
    def _count(counts: dict, name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    # --- public ----------------------------------------------------------------------
    def describe(self, key, name: str, args_json: str | None, component: str | None = None) -> None:
        """Name a task (with a summary of its arguments and the component it asked for)
        before it reaches the scheduler."""
        self._descriptions[key] = (name, args_json, component)
        if len(self._descriptions) > 100_000:  # keys that never arrive (deduplicated)
            self._descriptions.pop(next(iter(self._descriptions)))

    def handle(self, records) -> None:
        """Turn records (kinds and fields: `semconv.RECORDS`) into OTel signals."""
        handlers = self._handlers
        for record in records:
            try:
                handler, size = handlers[record[0]]
                if len(record) != size:
                    raise TypeError(f"{len(record) - 1} fields where {size - 1} are declared")
                handler(*record[1:])
            except Exception as exc:  # one bad record never stops the recorder
                self._not_handled(record, exc)
        self._end_parked()

    def _not_handled(self, record, exc: Exception) -> None:
        """Count a record no handler took; the first of the run is worth one warning."""
        self.unhandled += 1
        if self.unhandled > 1:
            return
        try:
            kind = record[0]
        except Exception:
            kind = type(record).__name__
        reason = "unknown kind" if isinstance(exc, KeyError) and exc.args == (kind,) else exc
        logger.warning(
            "scalable-otel: a %r record was not handled (%s); this and any later ones are "
            "counted in run.json's telemetry_records_unhandled",
            self._redaction.scrub(str(kind)),
            self._redaction.scrub(str(reason)),
        )

    def _on_fallback(self, t, name) -> None:
        self._fell_back({name: 1}, "the scheduler")

    def _fell_back(self, counts, where: str) -> None:
        """Count fallbacks to recording less (`scalable_otel.compat`); warn at each new name."""
        before = set(self.fallbacks)
        compat.merge(self.fallbacks, counts)
        for name in sorted(set(self.fallbacks) - before):
            logger.warning(
                "scalable-otel: on %s, %s has moved or failed: tasks run and are "
                "recorded, but %s (counted in run.json's telemetry_fallbacks)",
                where,
                name,
                compat.LOST.get(name, "less is recorded"),
            )

    @property
    def worker_batches_lost(self) -> int:
        """Batches the workers failed to send (run.json's telemetry_worker_batches_lost)."""
        return sum(batches for batches, _ in self._worker_losses.values())

    @property
    def task_spans_dropped(self) -> int:
        """Spans made in tasks that workers dropped beyond their cap
        (run.json's telemetry_task_spans_dropped)."""
        return sum(spans for _, spans in self._worker_losses.values())

    def _worker_lost(self, address, lost) -> None:
        try:
            batches, spans = (int(n) for n in lost)
        except (TypeError, ValueError):
            return
        before = (self.worker_batches_lost, self.task_spans_dropped)
        self._worker_losses[address] = (batches, spans)
        if batches and not before[0]:
            logger.warning(
                "scalable-otel: a worker failed to send its telemetry; lost batches are "
                "counted in run.json's telemetry_worker_batches_lost"
            )
        if spans and not before[1]:
            logger.warning(
                "scalable-otel: a worker dropped spans made in tasks beyond its cap; they are "
                "counted in run.json's telemetry_task_spans_dropped"
            )

    def _on_sync(self, t, token) -> None:
        self.synced.add(token)
        if self._on_sync_mark is not None:
            self._on_sync_mark(token)

    def _on_closing(self, t) -> None:
        self.closing = True

    def close(self, now: float) -> None:
        """End what is still open: tasks as cancelled, workers as removed."""
        self.closing = True
        self._end_parked(every=True)
        for key in list(self._tasks):
            self._end_cancelled(self._tasks.pop(key), now, "run ended before the task")
        for address in list(self._workers):
            self._on_worker_removed(now, address, 0, "", 0)

    # --- task records ----------------------------------------------------------------
    def _on_submit(self, t, key, name, dependency_keys) -> None:
        if key in self._tasks:
            return
        described = self._descriptions.pop(key, None)
        args_json = component = None
        if described is not None:
            name, args_json, component = described
        attrs = {sc.KIND: sc.KIND_TASK, sc.TASK_NAME: name, sc.TASK_KEY: key_str(key)}
        if component:
            attrs[sc.TASK_COMPONENT] = component
        if dependency_keys:
            attrs[sc.TASK_DEPENDENCIES] = [key_str(d) for d in dependency_keys]
        if args_json is not None:
            attrs[sc.TASK_ARGS] = args_json
        if self._ids is not None:
            self._ids.next_span_id = task_span_id(self._run_id, key)
        span = self._tracer.start_span(
            name, context=self._run_ctx, start_time=_ns(t), attributes=attrs
        )
        self._tasks[key] = _Task(span, name, key, t)
        self.submitted += 1
        self._count(self._counts["submitted"], name)

    def _on_ready(self, t, key) -> None:
        task = self._tasks.get(key)
        if task is not None and task.ready is None:
            task.ready = t
            task.span.add_event("queued", {sc.TASK_ATTEMPT: task.attempt}, timestamp=_ns(t))

    def _start_execution(self, task: _Task, start: float, worker: str | None) -> None:
        queue_wait = max(0.0, start - (task.ready or task.submitted))
        task.exec_start = start
        task.worker = worker
        attrs = {
            sc.KIND: sc.KIND_EXECUTE,
            sc.TASK_NAME: task.name,
            sc.TASK_KEY: key_str(task.key),
            sc.TASK_ATTEMPT: task.attempt,
            sc.TASK_QUEUE_WAIT: round(queue_wait, 6),
        }
        if worker:
            attrs[sc.WORKER] = worker
        task.exec_span = self._tracer.start_span(
            sc.SPAN_EXECUTE,
            context=trace.set_span_in_context(task.span),
            start_time=_ns(start),
            attributes=attrs,
        )

    def _finish(self, task: _Task, t, worker, start, stop) -> tuple[float, float]:
        """End the execution span; return (duration on the worker, queue wait)."""
        if start is None:
            start = task.exec_start if task.exec_start is not None else t
        if stop is None:
            stop = t
        if task.exec_span is None:
            self._start_execution(task, start, worker)
        elif worker and task.exec_span.is_recording():
            task.exec_span.set_attribute(sc.WORKER, worker)
        duration = max(0.0, stop - start)
        queue_wait = max(0.0, start - (task.ready or task.submitted))
        return duration, queue_wait

    def _set_outcome(
        self, task: _Task, worker, duration, queue_wait, status, executed=True, extra=None
    ) -> None:
        attrs = extra or {}
        attrs.update(
            {
                sc.TASK_STATUS: status,
                sc.TASK_ATTEMPT: task.attempt,
                sc.TASK_DURATION: round(duration, 6),
                sc.TASK_QUEUE_WAIT: round(queue_wait, 6),
            }
        )
        if worker:
            attrs[sc.WORKER] = worker
        task.span.set_attributes(attrs)
        if executed:
            attrs = {sc.M_TASK: task.name}
            self._m_duration.record(duration, attrs)
            self._m_queue.record(queue_wait, attrs)

    def _remember(self, task: _Task) -> None:
        self._recent[task.key] = (task.name, task.span.get_span_context())
        if len(self._recent) > _RECENT_LIMIT:
            self._recent.popitem(last=False)

    def _on_done(self, t, key, worker, start, stop, nbytes, typename) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        duration, queue_wait = self._finish(task, t, worker, start, stop)
        task.exec_span.end(end_time=_ns(stop if stop is not None else t))
        extra = {}
        if nbytes is not None:
            extra[sc.TASK_NBYTES] = int(nbytes)
        if typename:
            extra[sc.TASK_RESULT_TYPE] = str(typename)
        self._set_outcome(task, worker, duration, queue_wait, sc.STATUS_COMPLETED, extra=extra)
        self._park(task, _ns(max(t, stop or t)), worker, start)
        self.completed += 1
        self._count(self._counts["completed"], task.name)
        self._remember(task)

    def _on_error(self, t, key, worker, start, stop, exception_text, traceback_text) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        exception_text = self._redaction.scrub(exception_text)
        traceback_text = self._redaction.scrub(traceback_text)
        etype, message = error_type(exception_text), error_message(exception_text)
        duration, queue_wait = self._finish(task, t, worker, start, stop)
        status = Status(StatusCode.ERROR, f"{etype}: {message}")
        task.exec_span.set_status(status)
        task.exec_span.end(end_time=_ns(stop if stop is not None else t))
        end = max(t, stop) if stop is not None else t  # worker clocks may run slightly ahead
        self._fail(
            task, end, etype, message, traceback_text or "", worker, duration, queue_wait, start
        )

    def _on_dep_error(self, t, key, blame_key, blame_name) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        etype, message = self._recent_errors.get(blame_key, ("Exception", ""))
        blame_name = self._recent.get(blame_key, (blame_name,))[0] or blame_name
        if blame_key is not None:
            task.span.set_attribute(sc.TASK_CAUSE_KEY, key_str(blame_key))
            task.span.set_attribute(sc.TASK_CAUSE_NAME, blame_name or "")
            message = f"dependency {blame_name} ({key_str(blame_key)}) failed: {message}"
        queue_wait = max(0.0, t - (task.ready or task.submitted))
        self._fail(task, t, etype, message, "", None, 0.0, queue_wait, executed=False)

    def _fail(
        self,
        task,
        t,
        etype,
        message,
        traceback_text,
        worker,
        duration,
        queue_wait,
        start=None,
        executed: bool = True,
    ):
        span = task.span
        self._set_outcome(task, worker, duration, queue_wait, sc.STATUS_FAILED, executed)
        span.set_attribute(sc.ERROR_TYPE, etype)
        span.set_attribute(sc.ERROR_MESSAGE, message)
        span.set_attribute(sc.ERROR_TRACEBACK, traceback_text)
        span.add_event(
            "exception",
            {
                "exception.type": etype,
                "exception.message": message,
                "exception.stacktrace": traceback_text,
            },
            timestamp=_ns(t),
        )
        span.set_status(Status(StatusCode.ERROR, f"{etype}: {message}"))
        if executed:
            self._park(task, _ns(t), worker, start)
        else:
            span.end(end_time=_ns(t))
        self.failed += 1
        self._count(self._counts["failed"], task.name)
        self._recent_errors[task.key] = (etype, message)
        if len(self._recent_errors) > _RECENT_LIMIT:
            self._recent_errors.popitem(last=False)
        self._remember(task)

    def _on_requeue(self, t, key, finish_state, stimulus_id) -> None:
        """A task left a worker without a result: a retry, a lost worker, or a release."""
        task = self._tasks.get(key)
        if task is None:
            return
        # Dask says why in the stimulus id: an error with retries left is "task-erred-…",
        # a lost worker "handle-worker-cleanup-…"; a client's release names neither.
        if stimulus_id.startswith("task-erred"):
            reason = "retried"
        elif "worker" in stimulus_id:
            reason = "worker lost"
        else:
            return  # released by the client: the task ends as cancelled when forgotten
        task.ready = None
        if task.exec_span is None and reason == "worker lost":
            return  # never seen starting on the lost worker: not counted as an attempt
        if task.exec_span is not None:
            task.exec_span.set_status(Status(StatusCode.ERROR, f"attempt lost: {reason}"))
            task.exec_span.end(end_time=_ns(t))
        task.span.add_event(
            sc.EVENT_ATTEMPT_LOST,
            {
                sc.TASK_ATTEMPT: task.attempt,
                sc.WORKER: task.worker or "",
                "reason": reason,
            },
            timestamp=_ns(t),
        )
        task.attempt += 1
        task.exec_span = task.exec_start = task.worker = None

    def _on_forgotten(self, t, key) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            self._end_cancelled(task, t, "released before it finished")

    def _end_cancelled(self, task: _Task, t, reason: str) -> None:
        if task.exec_span is not None:
            task.exec_span.end(end_time=_ns(t))
        task.span.set_attribute(sc.TASK_STATUS, sc.STATUS_CANCELLED)
        task.span.set_attribute(sc.TASK_ATTEMPT, task.attempt)
        if task.worker:
            task.span.set_attribute(sc.WORKER, task.worker)
        task.span.set_status(Status(StatusCode.UNSET))
        task.span.add_event("cancelled", {"reason": reason}, timestamp=_ns(t))
        task.span.end(end_time=_ns(t))
        self.cancelled += 1

    # --- worker records ---------------------------------------------------------------
    def _on_worker_added(
        self, t, address, name, nthreads, memory_limit, host, pid, details
    ) -> None:
        if address in self._workers:
            return
        attrs = {
            sc.KIND: sc.KIND_WORKER,
            sc.WORKER: address,
            sc.WORKER_NAME: str(name),
            sc.WORKER_NTHREADS: int(nthreads or 0),
            sc.WORKER_MEMORY_LIMIT: int(memory_limit or 0),
            sc.WORKER_HOST: host or "",
        }
        if pid:
            attrs[sc.WORKER_PID] = int(pid)
        for key, value in (details or {}).items():  # e.g. the Slurm job id and its request
            if key in sc.WORKER_DETAILS and value is not None:
                attrs[sc.WORKER_DETAILS[key]] = value
        span = self._tracer.start_span(
            sc.SPAN_WORKER, context=self._run_ctx, start_time=_ns(t), attributes=attrs
        )
        self._workers[address] = _Worker(span, str(name))

    def _on_worker_status(self, t, address, status) -> None:
        worker = self._workers.get(address)
        if worker is not None and status in _CLOSING_STATES:
            worker.closing = True

    def _on_worker_memory_restart(self, t, address, rss) -> None:
        """The worker's nanny terminates it for going over its memory limit."""
        self._memory_restarts[address] = rss
        if len(self._memory_restarts) > 1000:  # workers that were never removed
            self._memory_restarts.pop(next(iter(self._memory_restarts)))

    def _on_worker_removed(self, t, address, lost_tasks, stimulus_id, lost_results) -> None:
        worker = self._workers.pop(address, None)
        rss = self._memory_restarts.pop(address, None)
        if worker is None:
            return
        crashed = not (worker.closing or self.closing)
        span = worker.span
        span.set_attribute(sc.WORKER_END, sc.WORKER_CRASHED if crashed else sc.WORKER_REMOVED)
        span.set_attribute(sc.WORKER_LOST_TASKS, int(lost_tasks or 0))
        span.set_attribute(sc.WORKER_LOST_RESULTS, int(lost_results or 0))
        reason = "connection to the worker lost" if crashed else "closed"
        if rss is not None:
            reason = (
                f"memory limit exceeded (RSS {int(rss or 0) / 2**20:.0f} MiB): terminated and "
                "restarted by its nanny"
            )
        if stimulus_id:
            reason += f" ({stimulus_id.rsplit('-', 1)[0]})"
        span.set_attribute(sc.WORKER_END_REASON, reason)
        if crashed:
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end(end_time=_ns(t))

    def _on_worker_batch(self, t, address, payload) -> None:
        worker = self._workers.get(address)
        name = payload.get("name", "")
        if payload.get("closing") and worker is not None:
            worker.closing = True
        if payload.get("lost"):
            self._worker_lost(address, payload["lost"])
        for key, start in payload.get("started", ()):
            task = self._tasks.get(_as_key(key))
            if task is not None and task.exec_span is None:
                self._start_execution(task, start, address)
        for key, start, stop, cpu_s, peak, shared in payload.get("usage", ()):
            self._task_usage(_as_key(key), address, name, start, stop, cpu_s, peak, shared)
        for ts, cpu_percent, rss, mem_percent, limit in payload.get("samples", ()):
            attrs = {
                "worker": address,
                "worker_name": name,
                "cpu_percent": cpu_percent,
                "memory_bytes": int(rss),
                "memory_percent": mem_percent,
                "memory_limit": int(limit),
            }
            self._emit(sc.RESOURCE_SAMPLE, ts, attrs, None)
            self._m_worker_cpu.set(cpu_percent / 100.0, {sc.M_WORKER: name})
            self._m_worker_mem.set(int(rss), {sc.M_WORKER: name})
        for lookup in payload.get("cache", ()):
            self._on_cache(lookup)
        if payload.get("fallbacks"):
            self._fell_back(payload["fallbacks"], name or address)
        if self._span_out is not None and payload.get("spans"):
            try:
                spans = orjson.loads(payload["spans"])
            except orjson.JSONDecodeError:
                spans = []
            for record in spans:
                try:
                    self._span_out(record)
                except Exception:
                    logger.debug("scalable-otel: span from a task not exported", exc_info=True)

    def _context_of(self, key):
        task = self._tasks.get(key)
        if task is not None:
            return task.name, task.span.get_span_context()
        return self._recent.get(key, (None, None))

    def _park(self, task: _Task, end_ns: int, worker=None, start=None) -> None:
        """Hold an ended task's span until its worker's measurement of it arrives.

        The worker sends what the task cost (CPU, peak memory) in its next batch,
        after the scheduler has seen the task end; on the span the measurement
        costs an attribute, where a separate event would cost as much as a span.
        `worker` and `start` are those of the attempt that ended the task: an earlier
        attempt's measurement, arriving late, must not be taken for it.
        """
        deadline = time.monotonic() + _USAGE_WAIT_S
        self._parked[task.key] = (task, end_ns, deadline, worker or None, start)

    def _end_parked(self, every: bool = False) -> None:
        """End the spans whose measurement is overdue (a lost worker), or all of them."""
        now = time.monotonic()
        while self._parked:
            key, (task, end_ns, deadline, _, _) = next(iter(self._parked.items()))
            if not every and deadline > now:
                break
            del self._parked[key]
            task.span.end(end_time=end_ns)

    def _task_usage(self, key, address, name, start, stop, cpu_s, peak, shared) -> None:
        wall = max(stop - start, 1e-9)
        usage = {
            sc.WORKER_NAME: name,
            sc.TASK_CPU_SECONDS: cpu_s,
            sc.TASK_PEAK_MEMORY: int(peak),
            sc.TASK_WALL: round(wall, 6),
            sc.TASK_CPU_SHARED: bool(shared),
        }
        # too short a task for its CPU share to mean anything
        if wall >= 0.05:
            usage[sc.TASK_CPUS_USED] = round(cpu_s / wall, 3)
        parked = self._parked.get(key)
        if parked is not None and _measures(parked, address, stop):
            del self._parked[key]
            task, end_ns = parked[0], parked[1]
            task.span.set_attributes(usage)
            task.span.end(end_time=end_ns)
            return
        # an attempt that was retried, or a measurement later than its task's span
        task_name, ctx = self._context_of(key)
        if task_name is not None:
            line = {"task": task_name, "key": key_str(key), "worker": address}
            line.update((k, v) for k, v in resource_fields(usage).items() if v is not None)
            self._emit(sc.TASK_RESOURCES, stop, line, ctx)

    def _on_cache(self, lookup: dict) -> None:
        key = _as_key(lookup.get("key"))
        task_name, ctx = self._context_of(key) if key is not None else (None, None)
        attrs = {k: v for k, v in lookup.items() if v is not None and k != "t"}
        if key is not None:
            attrs["key"] = key_str(key)
        if task_name:
            attrs["task"] = task_name
        self._emit(sc.CACHE_LOOKUP, lookup.get("t") or time.time(), attrs, ctx)
        function = str(lookup.get("function", ""))
        if lookup.get("result") == "hit":
            self.cache_hits += 1
            self._count(self._cache_counts["hit"], function)
        else:
            self.cache_misses += 1
            self._count(self._cache_counts["miss"], function)

    def _on_forwarded(self, t, batch) -> None:
        """A batch of records from a scheduler in another process (keys came as lists)."""
        records = []
        for record in batch:
            record = list(record)
            key_fields = _KEY_FIELDS.get(record[0]) if record else None
            if key_fields is not None and len(record) == len(sc.RECORDS[record[0]].fields) + 1:
                keys, key_lists = key_fields
                for i in keys:
                    record[i] = _as_key(record[i])
                for i in key_lists:
                    record[i] = [_as_key(k) for k in record[i]]
            records.append(record)
        self.handle(records)

    def _emit(self, event: str, t: float, attrs: dict, span_ctx) -> None:
        ctx = trace.set_span_in_context(NonRecordingSpan(span_ctx)) if span_ctx else None
        self._events.emit(timestamp=_ns(t), context=ctx, event_name=event, attributes=attrs)
