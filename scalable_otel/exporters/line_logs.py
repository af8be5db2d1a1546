"""The run directory's failures.jsonl and workers.jsonl lines as OTel log records.

`LineLogs` is the `JsonlWriter`'s append hook: each line of those files, as the bytes
written, becomes one log record, so a log backend holds what the files hold (tracebacks
redacted as they are in the file). The record's attributes are the line's fields, a
failure's also OpenTelemetry's `exception.type`, `exception.message` and
`exception.stacktrace`; its event name is the line's `event`, its time the line's
`timestamp`, its trace and span ids the line's, its severity ERROR for a failure, WARN
for a worker crash, INFO otherwise, and its body a sentence saying what happened.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import orjson
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from .. import semconv as sc
from ..rundir import FAILURES, WORKERS, parse_datetime

logger = logging.getLogger(__name__)

FILES = frozenset({FAILURES, WORKERS})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SEVERITY = {
    sc.TASK_FAILED: SeverityNumber.ERROR,
    sc.WORKER_CRASHED: SeverityNumber.WARN,
}


class LineLogs:
    """Emits a log record on `otel_logger` for each failures.jsonl and workers.jsonl line
    (call it with the file's name and the line's bytes; other files are ignored)."""

    def __init__(self, otel_logger):
        self._logger = otel_logger
        self.failed = 0

    def __call__(self, file: str, line: bytes) -> None:
        if file not in FILES:
            return
        try:
            self._logger.emit(**log_record_fields(orjson.loads(line)))
        except Exception:  # the line is written whatever its log record does
            self.failed += 1
            logger.debug("scalable-otel: a line's log record was not made", exc_info=True)


def log_record_fields(line: dict) -> dict:
    """The keyword arguments of `Logger.emit` for one run-directory line.

    >>> fields = log_record_fields({"timestamp": "2026-05-20T03:52:00.500000Z",
    ...     "event": "worker_added", "worker": "tcp://127.0.0.1:1"})
    >>> fields["body"], fields["timestamp"], fields["severity_text"]
    ('worker tcp://127.0.0.1:1 added', 1779249120500000000, 'INFO')
    """
    event = line.get("event")
    attributes = dict(line)
    if event == sc.TASK_FAILED:
        attributes[sc.EXCEPTION_TYPE] = line.get("error_type")
        attributes[sc.EXCEPTION_MESSAGE] = line.get("error_message")
        attributes[sc.EXCEPTION_STACKTRACE] = line.get("traceback")
    severity = _SEVERITY.get(event, SeverityNumber.INFO)
    return {
        "timestamp": _ns(line.get("timestamp")),
        "context": _context(line),
        "severity_number": severity,
        "severity_text": severity.name,
        "body": _body(line),
        "attributes": attributes,
        "event_name": event,
    }


def _ns(stamp) -> int | None:
    moment = parse_datetime(stamp)
    if moment is None:
        return None
    return (moment - _EPOCH) // _MICROSECOND * 1000


_MICROSECOND = datetime.resolution  # timedelta(microseconds=1)


def _context(line: dict):
    try:
        trace_id, span_id = int(line["trace_id"], 16), int(line["span_id"], 16)
    except (KeyError, TypeError, ValueError):
        return None
    span = NonRecordingSpan(SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED)))
    return trace.set_span_in_context(span)


def _body(line: dict) -> str:
    event, worker = line.get("event"), line.get("worker")
    if event == sc.TASK_FAILED:
        where = f" on {worker}" if worker else ""
        attempt = line.get("attempt")
        tried = f" (attempt {attempt})" if attempt and attempt > 1 else ""
        return (
            f"task {line.get('task')} failed{where}{tried}: "
            f"{line.get('error_type')}: {line.get('error_message')}"
        )
    if event == sc.WORKER_ADDED:
        return f"worker {worker} added"
    reason = line.get("reason")
    because = f" ({reason})" if reason else ""
    if event == sc.WORKER_CRASHED:
        lost = line.get("lost_tasks") or 0
        return f"worker {worker} crashed{because}; {lost} tasks lost with it"
    if event == sc.WORKER_REMOVED:
        return f"worker {worker} removed{because}"
    return str(event)
