"""Lifecycle records from Dask become OTel spans, span events, log events and metrics.

One `Recorder` per run, fed by the scheduler plugin's record deque (the record
kinds and their fields are declared in `semconv.RECORDS`) and drained by its
own thread every flush interval, so no OTel work runs on Dask's event loop.
State is kept for tasks in flight; a finished task leaves behind an entry in a
small bounded map that late worker reports are matched against, and, while the
scheduler still holds it, what a later execution of its key needs.

Every execution is its own record. A task span covers one life of a key in the run:
its first submission, a submission after the scheduler forgot it (`resubmit`), or a
computation of a result the scheduler had already had (`recompute`; `retry` for a
failed task retried by its client). Each attempt within it is an `execute` span whose id
is derived from Dask's id of that execution, as workers derive it (`ids`). A task's
final line is written the moment its span ends; the worker's measurement of an
execution follows as its own `task_resources` line and as attributes of its execute
span, which alone waits for it.

A task submitted in a `distributed.span` block is a child of that block's group span,
itself a child of its enclosing block's or of the run span. A group span starts with the
first task submission seen in it and stays open until the run ends, when it ends at the
last end of a task in it.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict

import orjson
from opentelemetry.metrics import Observation
from opentelemetry.trace import Status, StatusCode

from . import compat
from . import energy_model as em
from . import semconv as sc
from .args import DEFAULT_REDACTION, Redaction
from .ids import execution_span_id, key_str
from .powercap import CounterTotals
from .rundir import resource_fields

logger = logging.getLogger(__name__)

_RECENT_LIMIT = 10_000
# How long an ended execute span waits for its worker's measurement (a worker's batch
# normally follows its task's end within one flush interval; a dead worker's never comes).
_USAGE_WAIT_S = 5.0


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


def _with_standard(attrs: dict) -> dict:
    """Metric attributes with OpenTelemetry's keys beside ours: a worker's name as
    cicd.worker.name too (the same values: no more series)."""
    if sc.M_WORKER in attrs:
        attrs[sc.M_WORKER_NAME] = attrs[sc.M_WORKER]
    return attrs


def _cicd_worker(address, name=None) -> dict:
    """The cicd.worker.* attributes of a worker on an execute span: its address (Dask's
    id of it) and its name where known. (Its worker span has cicd.worker.url.full too.)"""
    attrs = {sc.CICD_WORKER_ID: address}
    if name is not None:
        attrs[sc.CICD_WORKER_NAME] = str(name)
    return attrs


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
    """One life of a key in the run (one task span) and its current attempt."""

    __slots__ = (
        "span",
        "name",
        "key",
        "submitted",
        "ready",
        "attempt",
        "reason",
        "exec_span",
        "exec_start",
        "worker",
        "run_id",
        "dispatch",
        "described",
    )

    def __init__(self, span, name, key, submitted, attempt, reason, described):
        self.span = span
        self.name = name
        self.key = key
        self.submitted = submitted
        self.ready = None
        self.attempt = attempt  # counted over the key's executions in the run
        self.reason = reason  # why the current attempt runs: None for the key's first
        self.exec_span = None
        self.exec_start = None
        self.worker = None
        self.run_id = None  # Dask's id of the current attempt's execution
        self.dispatch = None  # (t, worker, run_id): the scheduler sent the attempt there
        # (args_json, component, dependency_keys, group): group the innermost _Group or None
        self.described = described

    def attempts_used(self) -> int:
        """Attempts this key has used so far: the current one once it was sent out."""
        if self.exec_span is not None or self.dispatch is not None:
            return self.attempt
        return self.attempt - 1


class _Group:
    """One `distributed.span` block of the run: its group span, open until the run ends,
    and the last end of a task in it (its own or a nested block's)."""

    __slots__ = ("span", "id", "path", "parent", "last_end")

    def __init__(self, span, id_, path, parent):
        self.span = span
        self.id = id_
        self.path = path
        self.parent = parent
        self.last_end = None

    def attributes(self) -> dict:
        return {sc.GROUP_ID: self.id, sc.GROUP_PATH: self.path}

    def ended_task(self, t: float) -> None:
        """A task of this block, or of one nested in it, ended at `t`."""
        group = self
        while group is not None:
            if group.last_end is None or t > group.last_end:
                group.last_end = t
            group = group.parent


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
        spans,
        meter,
        emit_event,
        run_context,
        on_sync=None,
        run_id: str = "",
        span_out=None,
        redaction: Redaction = DEFAULT_REDACTION,
        energy: dict | None = None,
    ):
        self._spans = spans  # recorded_spans.SpanSink: to the run's span processors
        self._redaction = redaction  # secrets cut out of error messages and tracebacks
        self._run_id = run_id
        self._span_out = span_out  # spans made inside tasks, sent by workers
        self._emit_event = emit_event  # (event, time in ns, attributes, span context)
        self._run_ctx = run_context
        self._on_sync_mark = on_sync
        self._tasks: dict = {}
        # (key, Dask run id) -> (ended execute span, its end, deadline for its measurement)
        self._parked: dict = {}
        self._descriptions: dict = {}
        # key -> (name, task span context, attempts used): the last finished tasks
        self._recent: OrderedDict = OrderedDict()
        # (key, Dask run id) -> (name, task span context, attempt): the last executions
        self._executions: OrderedDict = OrderedDict()
        # key -> (name, (args_json, component, dependency_keys), status, attempts used):
        # finished tasks the scheduler still holds, which it may run again (a lost or
        # released result needed again, a failed task retried); dropped when forgotten
        self._held: dict = {}
        # key -> when a held key became ready again: its new life begins when it is sent out
        self._ready_again: dict = {}
        self._recent_errors: OrderedDict = OrderedDict()
        self._workers: dict = {}
        # address -> what its worker plugin said of its process and host (process.*, host.*)
        self._worker_process: dict = {}
        self._groups: dict = {}  # Dask span id -> _Group
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
        # energy so far (the metrics): the constants, each worker's last sample time, the
        # hosts' RAPL counters, and joules by (method, attribute key, worker or host)
        self._energy_constants = energy or em.constants()
        self._last_sample: dict = {}
        self._rapl = CounterTotals()
        self._joules: dict = {}
        # Dask's fine performance metrics: the row's fields but its value -> the value
        self._fine: dict = {}
        # kind -> (its handler, the length of its records)
        self._handlers = {
            kind: (getattr(self, "_on_" + kind), len(spec.fields) + 1)
            for kind, spec in sc.RECORDS.items()
        }
        self._make_instruments(meter)

    def _make_instruments(self, meter) -> None:
        secs = list(sc.SECONDS_BUCKETS)
        task = (sc.M_TASK, sc.M_TASK_NAME)
        function = (sc.M_FUNCTION,)
        counters = (
            (sc.METRIC_TASKS_SUBMITTED, self._counts["submitted"], task, "Tasks submitted"),
            (sc.METRIC_TASKS_COMPLETED, self._counts["completed"], task, "Tasks completed"),
            (sc.METRIC_TASKS_FAILED, self._counts["failed"], task, "Tasks failed"),
            (sc.METRIC_CACHE_HITS, self._cache_counts["hit"], function, "Cache hits"),
            (sc.METRIC_CACHE_MISSES, self._cache_counts["miss"], function, "Cache misses"),
        )
        for name, counts, labels, description in counters:
            unit = "{task}" if labels is task else "{lookup}"
            meter.create_observable_counter(
                name, [self._observe(counts, labels)], unit=unit, description=description
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
        intensity = self._energy_constants[em.CARBON_INTENSITY]
        for name, unit, scale, description in (
            (sc.METRIC_ENERGY, "J", 1.0, "Energy, PUE included: estimated or measured"),
            (sc.METRIC_CARBON, "g", intensity / em.J_PER_KWH, "Carbon emissions (CO2e)"),
        ):
            meter.create_observable_counter(
                name, [self._observe_energy(scale)], unit=unit, description=description
            )

        for name, unit, dask_unit, description in (
            (sc.METRIC_FINE_TIME, "s", "seconds", "Dask's fine performance metrics: time"),
            (sc.METRIC_FINE_BYTES, "By", "bytes", "Dask's fine performance metrics: bytes"),
        ):
            meter.create_observable_counter(
                name, [self._observe_fine(dask_unit)], unit=unit, description=description
            )

    def _observe_fine(self, unit: str):
        """Observations of the fine metrics in `unit`: by prefix, by group (its prefixes
        summed: a bounded set of attributes) and the cluster's."""

        def callback(options):
            totals: dict = {}
            for (scope, context, prefix, _, path, activity, row_unit), value in list(
                self._fine.items()
            ):
                if row_unit != unit:
                    continue
                attrs = [(sc.M_SCOPE, scope), (sc.M_CONTEXT, context), (sc.M_ACTIVITY, activity)]
                if scope == sc.SCOPE_PREFIX:
                    attrs += [(sc.M_TASK, prefix or ""), (sc.M_TASK_NAME, prefix or "")]
                elif scope == sc.SCOPE_GROUP:
                    attrs.append((sc.M_GROUP, "/".join(path or ())))
                attrs = tuple(attrs)
                totals[attrs] = totals.get(attrs, 0.0) + value
            return [Observation(value, dict(attrs)) for attrs, value in totals.items()]

        return callback

    def _observe_energy(self, scale: float):
        def callback(options):
            return [
                Observation(joules * scale, _with_standard({sc.M_METHOD: method, key: value}))
                for (method, key, value), joules in list(self._joules.items())
            ]

        return callback

    def _sample_energy(self, address, name, ts, cpu_percent, rss, limit, host, rapl) -> None:
        """Add a sample's energy to the metrics: the Green Algorithms estimate of the worker
        since its previous sample, and what its host's RAPL counters add (host-wide, so
        several workers of one host count it once)."""
        c = self._energy_constants
        previous = self._last_sample.get(address)
        self._last_sample[address] = ts
        if previous is not None and ts > previous:
            held = limit if limit > 0 else rss
            joules = em.energy_j(ts - previous, cpu_percent / 100.0, held, c)
            key = (sc.ENERGY_ESTIMATED, sc.M_WORKER, name)
            self._joules[key] = self._joules.get(key, 0.0) + joules
        if rapl and host:
            zones, energy, ranges = rapl
            added = self._rapl.add(host, dict(zip(zones, energy)), dict(zip(zones, ranges)))
            key = (sc.ENERGY_MEASURED, sc.M_HOST, host)
            self._joules[key] = self._joules.get(key, 0.0) + added / 1e6 * c[em.PUE]

    @staticmethod
    def _observe(counts: dict, labels: tuple):
        def callback(options):
            return [Observation(n, dict.fromkeys(labels, name)) for name, n in list(counts.items())]

        return callback

    @staticmethod
    def _count(counts: dict, name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    # --- public ----------------------------------------------------------------------
    def describe(
        self,
        key,
        name: str,
        args_json: str | None,
        component: str | None = None,
        function: str | None = None,
    ) -> None:
        """Name a task (with a summary of its arguments, the component it asked for and
        its function's qualified name) before it reaches the scheduler."""
        self._descriptions[key] = (name, args_json, component, function)
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

    def _on_fine_metrics(self, t, rows) -> None:
        """Dask's fine performance metrics that changed: each a metrics.jsonl line (the
        run's total so far; a reader keeps a row's last) and the value its metric reports."""
        width = len(sc.FINE_METRIC_FIELDS)
        for row in rows:
            if len(row) != width:
                raise TypeError(f"a fine metric of {len(row)} fields where {width} are declared")
            line = dict(zip(sc.FINE_METRIC_FIELDS, row))
            path = line["group_path"]
            path = tuple(str(name) for name in path) if path else None
            line["group_path"] = list(path) if path else None
            value = line["value"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"a fine metric's value is {type(value).__name__}")
            self._fine[(*row[:4], path, *row[5:-1])] = value
            # attributes hold no nulls: the writer puts them back
            self._emit(sc.FINE_METRIC, t, {k: v for k, v in line.items() if v is not None}, None)

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
        # innermost first: a block ends no earlier than the blocks nested in it
        for group in sorted(self._groups.values(), key=lambda g: -len(g.path)):
            group.span.end(end_time=_ns(group.last_end if group.last_end is not None else now))
        self._groups.clear()

    def _group(self, t, group) -> _Group | None:
        """The _Group of a submit record's `group` ((ids, names), or None), its group span
        and its enclosing blocks' started at `t` if this is the first task seen in them."""
        if not group:
            return None
        ids, names = group
        parent = None
        for depth, id_ in enumerate(ids):
            id_ = str(id_)
            found = self._groups.get(id_)
            if found is None:
                path = tuple(str(n) for n in names[: depth + 1])
                found = _Group(None, id_, path, parent)
                found.span = self._spans.start(
                    path[-1],
                    parent=parent.span.get_span_context() if parent else self._run_ctx,
                    start_time=_ns(t),
                    attributes={sc.KIND: sc.KIND_GROUP, **found.attributes()},
                )
                self._groups[id_] = found
            parent = found
        return parent

    # --- task records ----------------------------------------------------------------
    def _on_submit(self, t, key, name, dependency_keys, group) -> None:
        if key in self._tasks:
            return
        described = self._descriptions.pop(key, None)
        args_json = component = function = None
        if described is not None:
            name, args_json, component, function = described
        # a key this run ran before: the scheduler forgot it (or released it) in between
        held = self._held.pop(key, None)
        self._ready_again.pop(key, None)
        if held is not None:
            used = held[3]
        else:
            used = self._recent[key][2] if key in self._recent else None
        reason = None if used is None else sc.REASON_RESUBMIT
        described = (args_json, component, dependency_keys, self._group(t, group), function)
        self._begin(t, key, name, described, reason, (used or 0) + 1)

    def _begin(self, t, key, name, described, reason, attempt) -> _Task:
        """Start one life of `key` in the run: its task span (a distinct random id)."""
        args_json, component, dependency_keys, group, function = described
        key_text = key_str(key)
        attrs = {
            sc.KIND: sc.KIND_TASK,
            sc.TASK_NAME: name,
            sc.TASK_KEY: key_text,
            sc.CICD_PIPELINE_TASK_NAME: name,
            sc.CICD_PIPELINE_TASK_RUN_ID: sc.task_run_id(key_text, attempt),
        }
        if function:
            attrs[sc.CODE_FUNCTION_NAME] = function
        parent = self._run_ctx
        if group is not None:
            attrs.update(group.attributes())
            parent = group.span.get_span_context()
        if component:
            attrs[sc.TASK_COMPONENT] = component
        if dependency_keys:
            attrs[sc.TASK_DEPENDENCIES] = tuple(key_str(d) for d in dependency_keys)
        if args_json is not None:
            attrs[sc.TASK_ARGS] = args_json
        if reason:
            attrs[sc.TASK_REASON] = reason
        span = self._spans.start(name, parent=parent, start_time=_ns(t), attributes=attrs)
        task = self._tasks[key] = _Task(span, name, key, t, attempt, reason, described)
        self.submitted += 1
        self._count(self._counts["submitted"], name)
        return task

    def _in_flight(self, t, key) -> _Task | None:
        """The key's task in flight; or, for a finished key the scheduler sends out again
        (its result lost or released and needed again, or the failed task retried), a new
        life of it, from when it became ready again. A key that became ready again but was
        never sent out before the run ended (or it was forgotten) ran no execution: it has
        no new life."""
        task = self._tasks.get(key)
        if task is not None:
            return task
        held = self._held.pop(key, None)
        if held is None:
            return None  # not a task of this run
        name, described, status, used = held
        reason = sc.REASON_RECOMPUTE if status == sc.STATUS_COMPLETED else sc.REASON_RETRY
        ready = self._ready_again.pop(key, t)
        task = self._begin(ready, key, name, described, reason, used + 1)
        self._mark_ready(task, ready)
        return task

    def _on_ready(self, t, key) -> None:
        task = self._tasks.get(key)
        if task is not None:
            self._mark_ready(task, t)
        elif key in self._held:
            self._ready_again.setdefault(key, t)

    def _mark_ready(self, task: _Task, t) -> None:
        if task.ready is None:
            task.ready = t
            task.span.add_event("queued", {sc.TASK_ATTEMPT: task.attempt}, timestamp=_ns(t))

    def _on_processing(self, t, key, worker, run_id) -> None:
        """The scheduler sent the task to a worker: the attempt counts from here, even if
        the worker dies before it reports the start."""
        task = self._in_flight(t, key)
        if task is None:
            return
        self._mark_ready(task, t)
        if task.exec_span is not None or task.dispatch is not None:
            # sent out again without a record of the previous attempt's end (a release
            # Dask gave no worker reason for): that attempt is over, and counted
            self._lose_attempt(task, t, "rescheduled")
            self._mark_ready(task, t)
        task.dispatch = (t, worker, run_id)

    def _start_execution(self, task: _Task, start: float, worker, run_id) -> None:
        if run_id is None and task.dispatch is not None:
            run_id = task.dispatch[2]
        queue_wait = max(0.0, start - (task.ready or task.submitted))
        task.exec_start = start
        task.worker = worker
        task.run_id = run_id
        attrs = {
            sc.KIND: sc.KIND_EXECUTE,
            sc.TASK_NAME: task.name,
            sc.TASK_KEY: key_str(task.key),
            sc.TASK_ATTEMPT: task.attempt,
            sc.TASK_QUEUE_WAIT: round(queue_wait, 6),
        }
        if task.reason:
            attrs[sc.TASK_REASON] = task.reason
        if worker:
            attrs[sc.WORKER] = worker
            attrs.update(self._worker_attributes(worker))
        group = task.described[3]
        if group is not None:
            attrs.update(group.attributes())
        # the id the worker derives for the spans made inside this execution
        span_id = execution_span_id(self._run_id, task.key, run_id) if run_id is not None else None
        task.exec_span = self._spans.start(
            sc.SPAN_EXECUTE,
            parent=task.span.get_span_context(),
            start_time=_ns(start),
            attributes=attrs,
            span_id=span_id,
        )
        self._executions[(task.key, run_id)] = (
            task.name,
            task.span.get_span_context(),
            task.attempt,
        )
        if len(self._executions) > _RECENT_LIMIT:
            self._executions.popitem(last=False)

    def _finish(self, task: _Task, t, worker, start, stop, run_id) -> tuple[float, float]:
        """Make sure the attempt's execute span exists; return (duration on the worker,
        queue wait). An attempt never reported started began, as far as anyone knows, when
        the scheduler sent it out."""
        if start is None:
            if task.exec_start is not None:
                start = task.exec_start
            else:
                start = task.dispatch[0] if task.dispatch is not None else t
        if stop is None:
            stop = t
        if task.exec_span is None:
            self._start_execution(task, start, worker, run_id)
        elif worker and task.exec_span.is_recording():
            task.exec_span.set_attribute(sc.WORKER, worker)
            task.exec_span.set_attributes(self._worker_attributes(worker))
        duration = max(0.0, stop - start)
        queue_wait = max(0.0, start - (task.ready or task.submitted))
        return duration, queue_wait

    def _set_outcome(
        self, task: _Task, worker, duration, queue_wait, status, result, executed=True, extra=None
    ) -> None:
        attrs = extra or {}
        attrs.update(
            {
                sc.TASK_STATUS: status,
                sc.CICD_PIPELINE_TASK_RUN_RESULT: result,
                sc.TASK_ATTEMPT: task.attempt,
                sc.TASK_DURATION: round(duration, 6),
                sc.TASK_QUEUE_WAIT: round(queue_wait, 6),
            }
        )
        if worker:
            attrs[sc.WORKER] = worker
        if task.reason:
            attrs[sc.TASK_REASON] = task.reason
        task.span.set_attributes(attrs)
        if executed:
            attrs = {sc.M_TASK: task.name, sc.M_TASK_NAME: task.name}
            self._m_queue.record(queue_wait, attrs)
            attrs[sc.M_RESULT] = result
            self._m_duration.record(duration, attrs)

    @staticmethod
    def _group_ended(task: _Task, t: float) -> None:
        group = task.described[3]
        if group is not None:
            group.ended_task(t)

    def _remember(self, task: _Task, status: str) -> None:
        used = task.attempts_used()
        self._recent[task.key] = (task.name, task.span.get_span_context(), used)
        self._recent.move_to_end(task.key)
        if len(self._recent) > _RECENT_LIMIT:
            self._recent.popitem(last=False)
        if status != sc.STATUS_CANCELLED:
            self._held[task.key] = (task.name, task.described, status, used)

    def _on_done(self, t, key, worker, start, stop, nbytes, typename, run_id) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        duration, queue_wait = self._finish(task, t, worker, start, stop, run_id)
        self._park(task, _ns(stop if stop is not None else t))
        extra = {}
        if nbytes is not None:
            extra[sc.TASK_NBYTES] = int(nbytes)
        if typename:
            extra[sc.TASK_RESULT_TYPE] = str(typename)
        self._set_outcome(
            task, worker, duration, queue_wait, sc.STATUS_COMPLETED, sc.RESULT_SUCCESS, extra=extra
        )
        end = max(t, stop or t)
        task.span.end(end_time=_ns(end))  # its task_completed line, at once
        self._group_ended(task, end)
        self.completed += 1
        self._count(self._counts["completed"], task.name)
        self._remember(task, sc.STATUS_COMPLETED)

    def _on_error(
        self, t, key, worker, start, stop, exception_text, traceback_text, run_id
    ) -> None:
        task = self._tasks.pop(key, None)
        if task is None:
            return
        exception_text = self._redaction.scrub(exception_text)
        traceback_text = self._redaction.scrub(traceback_text)
        etype, message = error_type(exception_text), error_message(exception_text)
        duration, queue_wait = self._finish(task, t, worker, start, stop, run_id)
        status = Status(StatusCode.ERROR, f"{etype}: {message}")
        task.exec_span.set_status(status)
        task.exec_span.set_attribute(sc.ERROR_TYPE, etype)
        self._park(task, _ns(stop if stop is not None else t))
        end = max(t, stop) if stop is not None else t  # worker clocks may run slightly ahead
        # a task every worker running it died under failed through no fault of its own
        killed = etype.rsplit(".", 1)[-1] == "KilledWorker"
        result = sc.RESULT_ERROR if killed else sc.RESULT_FAILURE
        self._fail(
            task, end, etype, message, traceback_text or "", worker, duration, queue_wait, result
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
        self._fail(task, t, etype, message, "", None, 0.0, queue_wait, sc.RESULT_SKIP, False)

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
        result: str,
        executed: bool = True,
    ):
        span = task.span
        self._set_outcome(task, worker, duration, queue_wait, sc.STATUS_FAILED, result, executed)
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
        span.end(end_time=_ns(t))  # its task_failed line, at once
        self._group_ended(task, t)
        self.failed += 1
        self._count(self._counts["failed"], task.name)
        self._recent_errors[task.key] = (etype, message)
        if len(self._recent_errors) > _RECENT_LIMIT:
            self._recent_errors.popitem(last=False)
        self._remember(task, sc.STATUS_FAILED)

    def _on_requeue(self, t, key, finish_state, stimulus_id, run_id) -> None:
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
        if task.exec_span is None and task.dispatch is None:
            task.ready = None
            return  # never sent to a worker, as far as the records say: not an attempt
        self._lose_attempt(task, t, reason, run_id)

    def _lose_attempt(self, task: _Task, t, reason: str, run_id=None) -> None:
        """End the current attempt as lost (its span waits for its measurement) and count
        it; the next attempt is a retry."""
        if task.exec_span is None:  # never reported started: from when it was sent out
            _, worker, dispatched_id = task.dispatch
            self._start_execution(task, task.dispatch[0], worker, run_id or dispatched_id)
        task.exec_span.set_status(Status(StatusCode.ERROR, f"attempt lost: {reason}"))
        self._park(task, _ns(t))
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
        task.reason = sc.REASON_RETRY
        task.ready = None
        task.exec_span = task.exec_start = task.worker = task.run_id = task.dispatch = None

    def _on_forgotten(self, t, key) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            self._end_cancelled(task, t, "released before it finished")
        else:
            self._held.pop(key, None)  # never run again unless submitted again
            self._ready_again.pop(key, None)

    def _end_cancelled(self, task: _Task, t, reason: str) -> None:
        if task.exec_span is not None:
            task.exec_span.end(end_time=_ns(t))
        task.span.set_attribute(sc.TASK_STATUS, sc.STATUS_CANCELLED)
        task.span.set_attribute(sc.CICD_PIPELINE_TASK_RUN_RESULT, sc.RESULT_CANCELLATION)
        task.span.set_attribute(sc.TASK_ATTEMPT, task.attempt)
        if task.reason:
            task.span.set_attribute(sc.TASK_REASON, task.reason)
        if task.worker:
            task.span.set_attribute(sc.WORKER, task.worker)
        task.span.set_status(Status(StatusCode.UNSET))
        task.span.add_event("cancelled", {"reason": reason}, timestamp=_ns(t))
        task.span.end(end_time=_ns(t))
        self._group_ended(task, t)
        self.cancelled += 1
        self._remember(task, sc.STATUS_CANCELLED)

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
            **_cicd_worker(address, name),
            sc.CICD_WORKER_URL_FULL: address,
        }
        if pid:
            attrs[sc.WORKER_PID] = attrs[sc.PROCESS_PID] = int(pid)
        attrs.update(self._worker_process.pop(address, ()))
        for key, value in (details or {}).items():  # e.g. the Slurm job id and its request
            if key in sc.WORKER_DETAILS and value is not None:
                attrs[sc.WORKER_DETAILS[key]] = value
        span = self._spans.start(
            sc.SPAN_WORKER, parent=self._run_ctx, start_time=_ns(t), attributes=attrs
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
        self._worker_process.pop(address, None)
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
            span.set_attribute(sc.ERROR_TYPE, sc.WORKER_ERROR_TYPE)
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end(end_time=_ns(t))

    def _on_worker_batch(self, t, address, payload) -> None:
        worker = self._workers.get(address)
        name = payload.get("name", "")
        if payload.get("closing") and worker is not None:
            worker.closing = True
        if payload.get("lost"):
            self._worker_lost(address, payload["lost"])
        if payload.get("process"):
            self._process_of(address, worker, payload["process"])
        for key, start, *run_id in payload.get("started", ()):
            task = self._tasks.get(_as_key(key))
            run_id = run_id[0] if run_id else None
            if task is None or task.exec_span is not None:
                continue
            dispatched = task.dispatch[2] if task.dispatch is not None else None
            if run_id is not None and dispatched is not None and run_id < dispatched:
                continue  # an earlier execution's report, later than its end
            self._start_execution(task, start, address, run_id)
        for key, start, stop, cpu_s, peak, shared, *run_id in payload.get("usage", ()):
            run_id = run_id[0] if run_id else None
            self._task_usage(_as_key(key), address, name, start, stop, cpu_s, peak, shared, run_id)
        for ts, cpu_percent, rss, mem_percent, limit, *more in payload.get("samples", ()):
            host, rapl = (more + [None, None])[:2]  # absent from an older worker plugin
            attrs = {
                "worker": address,
                "worker_name": name,
                "cpu_percent": cpu_percent,
                "memory_bytes": int(rss),
                "memory_percent": mem_percent,
                "memory_limit": int(limit),
                "host": str(host or ""),
            }
            if rapl:
                attrs["energy_zones"], attrs["energy_uj"], attrs["energy_range_uj"] = rapl
            self._emit(sc.RESOURCE_SAMPLE, ts, attrs, None)
            self._sample_energy(address, name, ts, cpu_percent, int(rss), int(limit), host, rapl)
            labels = {sc.M_WORKER: name, sc.M_WORKER_NAME: name}
            self._m_worker_cpu.set(cpu_percent / 100.0, labels)
            self._m_worker_mem.set(int(rss), labels)
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

    def _process_of(self, address, worker, described: dict) -> None:
        """What a worker's plugin says of its process and host, on its worker span (or kept
        for the span if the worker's addition has not been seen yet)."""
        attrs = {k: v for k, v in described.items() if k in sc.WORKER_PROCESS_ATTRIBUTES}
        if worker is not None:
            worker.span.set_attributes(attrs)
        elif len(self._worker_process) < 10_000:  # workers whose addition never comes
            self._worker_process[address] = attrs

    def _worker_attributes(self, address) -> dict:
        """The cicd.worker.* attributes of a worker of the run, by its address."""
        worker = self._workers.get(address)
        return _cicd_worker(address, worker.name if worker is not None else None)

    def _context_of(self, key):
        """(name, task span context, attempt) of the key's task in flight or last ended."""
        task = self._tasks.get(key)
        if task is not None:
            return task.name, task.span.get_span_context(), task.attempt
        return self._recent.get(key, (None, None, None))

    def _park(self, task: _Task, end_ns: int) -> None:
        """Hold the current attempt's ended execute span until its worker's measurement of
        it arrives; the task's own span, and its line, never wait for it.

        The worker sends what the execution cost (CPU, peak memory) in its next batch,
        after the scheduler has seen it end; on the span the measurement costs an
        attribute. Executions are told apart by Dask's run id: an earlier attempt's
        measurement, arriving late, is never taken for a later one's.
        """
        deadline = time.monotonic() + _USAGE_WAIT_S
        parked_key = (task.key, task.run_id)
        earlier = self._parked.pop(parked_key, None)
        if earlier is not None:  # never replaced while open
            earlier[0].end(end_time=earlier[1])
        self._parked[parked_key] = (task.exec_span, end_ns, deadline)

    def _end_parked(self, every: bool = False) -> None:
        """End the spans whose measurement is overdue (a lost worker), or all of them."""
        now = time.monotonic()
        while self._parked:
            key, (span, end_ns, deadline) = next(iter(self._parked.items()))
            if not every and deadline > now:
                break
            del self._parked[key]
            span.end(end_time=end_ns)

    def _task_usage(self, key, address, name, start, stop, cpu_s, peak, shared, run_id) -> None:
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
        parked = self._parked.pop((key, run_id), None) if run_id is not None else None
        if parked is not None:
            span, end_ns, _ = parked
            span.set_attributes(usage)
            span.end(end_time=end_ns)
        execution = self._executions.get((key, run_id)) if run_id is not None else None
        task_name, ctx, attempt = execution or self._context_of(key)
        if task_name is not None:
            line = {"task": task_name, "key": key_str(key), "worker": address}
            if attempt is not None:
                line["attempt"] = attempt
            line.update((k, v) for k, v in resource_fields(usage).items() if v is not None)
            self._emit(sc.TASK_RESOURCES, stop, line, ctx)

    def _on_cache(self, lookup: dict) -> None:
        key = _as_key(lookup.get("key"))
        task_name, ctx, _ = self._context_of(key) if key is not None else (None, None, None)
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
        self._emit_event(event, _ns(t), attrs, span_ctx)
