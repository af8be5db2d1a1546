"""The run-directory exporter: OTel spans and log events become JSON lines.

`RunDirectorySpanProcessor` turns task, execute and worker spans into
tasks.jsonl, failures.jsonl and workers.jsonl lines as they start and end;
`RunDirectoryLogProcessor` turns resource and cache events into
resources.jsonl and cache.jsonl lines. Both hand lines to one `JsonlWriter`,
which appends them from a background thread every flush interval, so a
`tail -f` shows a run as it goes and a crash loses at most one interval.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import orjson
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from .. import semconv as sc
from ..ids import trace_hex
from ..rundir import (
    CACHE,
    FAILURES,
    JSONL_FILES,
    METRICS,
    RESOURCES,
    TASKS,
    WORKERS,
    iso,
)

logger = logging.getLogger(__name__)

_LOG_EVENT_FILES = {
    sc.RESOURCE_SAMPLE: RESOURCES,
    sc.TASK_RESOURCES: RESOURCES,
    sc.CACHE_LOOKUP: CACHE,
    sc.FINE_METRIC: METRICS,
}


class LineAppender:
    """Appends whole lines to one file opened with O_APPEND (created owner-only).

    A write cut short (a full disk) leaves a fragment; the next write first ends it with
    a newline, so the fragment stays one unreadable line and the lines after it parse.
    `open` and `write` raise OSError; the caller counts and reports.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None
        self.torn = False

    def open(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return self.fd

    def write(self, data: bytes) -> None:
        fd = self.open()
        if self.torn:
            data = b"\n" + data
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
            if view:
                self.torn = True
        self.torn = False

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


class WriteErrors:
    """Write errors in one run directory (a full or read-only disk, a removed directory),
    whichever of its files they hit: the first is logged, once for all the files, and kept
    as `first` (`"<file>: <reason>"`) for run.json."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.first: str | None = None
        self._lock = threading.Lock()

    def report(self, path: Path, exc: OSError) -> None:
        with self._lock:
            if self.first is not None:
                return
            self.first = f"{Path(path).name}: {exc.strerror or exc}"
        logger.warning(
            "scalable-otel: cannot write telemetry to %s (%s); the workflow goes on, "
            "lost lines and spans are counted in run.json",
            self.directory,
            self.first,
        )


class JsonlWriter:
    """Buffered, thread-safe appends of JSON lines to the files of one run directory.

    Lines are written by one `os.write` per file per flush on an O_APPEND
    descriptor, so lines from concurrent writers never interleave. A write
    error (disk full, directory gone) never reaches the workflow: it goes to
    `errors` (logged once for the run directory) and the lost lines are
    counted in `dropped`.
    """

    def __init__(
        self, directory: Path, flush_interval: float = 0.2, errors: WriteErrors | None = None
    ):
        self.directory = Path(directory)
        self.flush_interval = flush_interval
        self.errors = errors or WriteErrors(self.directory)
        self.dropped = 0
        self.written = 0
        # one growing buffer per file, not a list of lines: the line's bytes are freed at
        # once, where keeping 100,000 small objects until the flush cost twice the time
        self._buffers: dict[str, bytearray] = {name: bytearray() for name in JSONL_FILES}
        self._counts: dict[str, int] = dict.fromkeys(JSONL_FILES, 0)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._files = {name: LineAppender(self.directory / name) for name in JSONL_FILES}
        # called with (file, the line's bytes) for every line appended; must not raise
        self.on_append = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scalable-otel-jsonl", daemon=True)
        self._thread.start()

    def append(self, file: str, record: dict) -> None:
        """Queue one record for `file` (one of the run directory's JSONL files)."""
        line = orjson.dumps(record, default=str, option=orjson.OPT_NON_STR_KEYS)
        with self._lock:
            buffer = self._buffers[file]
            buffer += line
            buffer += b"\n"
            self._counts[file] += 1
        if self.on_append is not None:
            self.on_append(file, line)

    def flush(self) -> None:
        """Write every queued line now."""
        with self._flush_lock:
            with self._lock:
                pending = {f: (b, self._counts[f]) for f, b in self._buffers.items() if b}
                for f in pending:
                    self._buffers[f] = bytearray()
                    self._counts[f] = 0
            for file, (data, count) in pending.items():
                self._write(file, data, count)

    def close(self) -> None:
        """Flush and stop; later appends are kept until the next `flush`."""
        self._closed.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.flush()
        for appender in self._files.values():
            appender.close()

    def _run(self) -> None:
        while not self._closed.wait(self.flush_interval):
            self.flush()

    def _write(self, file: str, data: bytes, count: int) -> None:
        try:
            self._files[file].write(data)
            self.written += count
        except OSError as exc:
            self.dropped += count
            self.errors.report(self._files[file].path, exc)


def _attributes(span) -> dict:
    """A span's attributes as a plain dict, for reading only.

    The SDK hands them out as a read-only proxy of its bounded mapping, where
    every lookup is two Python calls; with a dozen fields on each of several
    lines a task, that was a fifth of the exporter's time. The mapping keeps a
    plain dict inside: read that where it is there, copy otherwise.
    """
    inner = getattr(span, "_attributes", None)
    if type(inner) is not dict:  # a RecordedSpan's is one
        inner = getattr(inner, "_dict", None)
    return inner if isinstance(inner, dict) else dict(span.attributes or {})


def _add_ids(line: dict, span: ReadableSpan) -> None:
    """The span's trace, span and parent span ids, in hex, added to `line`."""
    ctx = span.get_span_context()
    line["trace_id"] = trace_hex(ctx.trace_id)
    line["span_id"] = f"{ctx.span_id:016x}"
    parent = span.parent
    if parent is not None:
        line["parent_span_id"] = f"{parent.span_id:016x}"


def _base(event: str, ts_ns: int, run_id: str) -> dict:
    return {
        "schema_version": sc.SCHEMA_VERSION,
        "timestamp": iso(ts_ns / 1e9),
        "event": event,
        "run_id": run_id,
    }


def _args(attrs) -> dict | str | None:
    raw = attrs.get(sc.TASK_ARGS)
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # cut by an attribute length limit: keep the text
        return raw


_END_EVENTS = {sc.STATUS_COMPLETED: sc.TASK_COMPLETED, sc.STATUS_FAILED: sc.TASK_FAILED}


def _task_line(event: str, ts_ns: int, run_id: str, get) -> dict:
    """A task line's first fields, in the schema's order (`get`: its span's attributes'
    `get`); one literal, as a line is built for each task start and end."""
    path = get(sc.GROUP_PATH)
    return {
        "schema_version": sc.SCHEMA_VERSION,
        "timestamp": iso(ts_ns / 1e9),
        "event": event,
        "run_id": run_id,
        "task": get(sc.TASK_NAME),
        "key": get(sc.TASK_KEY),
        "group": get(sc.GROUP_ID),
        "group_path": list(path) if path is not None else None,
    }


class _RunDirectoryProcessor:
    """What the span and log processors share: the writer, the run id, flushing."""

    def __init__(self, writer: JsonlWriter, run_id: str):
        self._writer = writer
        self._run_id = run_id

    def shutdown(self) -> None:
        self._writer.flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self._writer.flush()
        return True


class RunDirectorySpanProcessor(_RunDirectoryProcessor, SpanProcessor):
    """Writes tasks.jsonl, failures.jsonl and workers.jsonl from spans as they start and end."""

    def on_start(self, span: Span, parent_context=None) -> None:
        try:
            attrs = _attributes(span)
            kind = attrs.get(sc.KIND)
            if kind == sc.KIND_TASK:
                get = attrs.get
                line = _task_line(sc.TASK_SUBMITTED, span.start_time, self._run_id, get)
                line["args"] = _args(attrs)
                line["dependencies"] = list(get(sc.TASK_DEPENDENCIES, ()))
                line["reason"] = get(sc.TASK_REASON)
                component = get(sc.TASK_COMPONENT)
                if component:
                    line["component"] = component
                _add_ids(line, span)
                self._writer.append(TASKS, line)
            elif kind == sc.KIND_EXECUTE:
                get = attrs.get
                line = _task_line(sc.TASK_STARTED, span.start_time, self._run_id, get)
                line["worker"] = get(sc.WORKER)
                line["attempt"] = get(sc.TASK_ATTEMPT)
                line["reason"] = get(sc.TASK_REASON)
                line["queue_wait_s"] = get(sc.TASK_QUEUE_WAIT)
                _add_ids(line, span)
                self._writer.append(TASKS, line)
            elif kind == sc.KIND_WORKER:
                line = _base(sc.WORKER_ADDED, span.start_time, self._run_id)
                line.update(_worker_fields(attrs))
                _add_ids(line, span)
                self._writer.append(WORKERS, line)
        except Exception:  # an exporter never raises into the workflow
            self._writer.dropped += 1
            logger.debug("scalable-otel: span start not written", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            attrs = _attributes(span)
            kind = attrs.get(sc.KIND)
            if kind == sc.KIND_TASK:
                self._task_end(span, attrs)
            elif kind == sc.KIND_WORKER:
                event = attrs.get(sc.WORKER_END, sc.WORKER_REMOVED)
                line = _base(event, span.end_time, self._run_id)
                line.update(_worker_fields(attrs))
                line["reason"] = attrs.get(sc.WORKER_END_REASON)
                line["lost_tasks"] = attrs.get(sc.WORKER_LOST_TASKS, 0)
                line["lost_results"] = attrs.get(sc.WORKER_LOST_RESULTS, 0)
                line["uptime_s"] = round((span.end_time - span.start_time) / 1e9, 6)
                _add_ids(line, span)
                self._writer.append(WORKERS, line)
        except Exception:
            self._writer.dropped += 1
            logger.debug("scalable-otel: span end not written", exc_info=True)

    def _task_end(self, span: ReadableSpan, attrs) -> None:
        get = attrs.get
        event = _END_EVENTS.get(get(sc.TASK_STATUS, sc.STATUS_COMPLETED), sc.TASK_CANCELLED)
        line = _task_line(event, span.end_time, self._run_id, get)
        line["args"] = _args(attrs)
        line["worker"] = get(sc.WORKER)
        line["attempt"] = get(sc.TASK_ATTEMPT)
        line["reason"] = get(sc.TASK_REASON)
        line["duration_s"] = get(sc.TASK_DURATION)
        line["queue_wait_s"] = get(sc.TASK_QUEUE_WAIT)
        line["submitted_at"] = iso(span.start_time / 1e9)
        if event == sc.TASK_COMPLETED:
            line["nbytes"] = get(sc.TASK_NBYTES)
            line["result_type"] = get(sc.TASK_RESULT_TYPE)
        _add_ids(line, span)
        if event == sc.TASK_FAILED or span.status.status_code is StatusCode.ERROR:
            failure = {
                "error_type": attrs.get(sc.ERROR_TYPE),
                "error_message": attrs.get(sc.ERROR_MESSAGE),
            }
            cause = attrs.get(sc.TASK_CAUSE_KEY)
            if cause is not None:
                failure["caused_by"] = {"task": attrs.get(sc.TASK_CAUSE_NAME), "key": cause}
            line.update(failure)
            if event == sc.TASK_FAILED:
                record = _task_line(sc.TASK_FAILED, span.end_time, self._run_id, get)
                record["worker"] = line["worker"]
                record["attempt"] = line["attempt"]
                record["reason"] = line["reason"]
                record.update(failure)
                record["traceback"] = attrs.get(sc.ERROR_TRACEBACK)
                _add_ids(record, span)
                self._writer.append(FAILURES, record)
        self._writer.append(TASKS, line)


def _worker_fields(attrs) -> dict:
    fields = {
        "worker": attrs.get(sc.WORKER),
        "worker_name": attrs.get(sc.WORKER_NAME),
        "nthreads": attrs.get(sc.WORKER_NTHREADS),
        "memory_limit": attrs.get(sc.WORKER_MEMORY_LIMIT),
        "host": attrs.get(sc.WORKER_HOST),
        "pid": attrs.get(sc.WORKER_PID),
    }
    for field, attribute in sc.WORKER_DETAILS.items():
        if attribute in attrs:
            fields[field] = attrs[attribute]
    return fields


class RunDirectoryLogProcessor(_RunDirectoryProcessor, LogRecordProcessor):
    """Writes resources.jsonl and cache.jsonl from OTel log events (by `event_name`).

    The run's recorder calls `write_event` directly (the SDK's log record is built only
    when other log processors are there to read it); `on_emit` writes the same line from
    a log record of the SDK's."""

    def on_emit(self, log_record) -> None:
        record = log_record.log_record
        self.write_event(
            record.event_name,
            record.timestamp,
            record.attributes or {},
            record.trace_id,
            record.span_id,
        )

    def write_event(self, event_name, ts_ns: int, attributes, trace_id=0, span_id=0) -> None:
        """One event's line, in the file its name goes to (others are not written)."""
        try:
            file = _LOG_EVENT_FILES.get(event_name)
            if file is None:
                return
            line = _base(event_name, ts_ns, self._run_id)
            line.update(attributes)  # orjson writes a tuple as a list
            if event_name == sc.TASK_RESOURCES:
                line.setdefault("cpus_used", None)  # attributes hold no nulls
                line.setdefault("attempt", None)
            elif event_name == sc.RESOURCE_SAMPLE:
                for name in ("energy_zones", "energy_uj", "energy_range_uj"):
                    line.setdefault(name, None)  # no readable RAPL counter
            elif event_name == sc.FINE_METRIC:
                line.update({k: line.pop(k, None) for k in sc.FINE_METRIC_FIELDS})
            if trace_id:
                line["trace_id"] = trace_hex(trace_id)
                line["span_id"] = f"{span_id:016x}"
            self._writer.append(file, line)
        except Exception:
            self._writer.dropped += 1
            logger.debug("scalable-otel: log event not written", exc_info=True)
