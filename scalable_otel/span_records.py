"""Spans made inside tasks on workers, as plain data sent with a worker's batch to the
telemetry process: `span_record` on the worker, `readable_span` there, one format."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.trace import SpanContext, TraceFlags

EXCEPTION_EVENT = "exception"  # the event `Span.record_exception` adds


def span_record(span) -> dict:
    """An ended SDK span as plain JSON-ready data, ids in hex (`readable_span` builds it
    back)."""
    ctx = span.context
    return {
        "name": span.name,
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "start": span.start_time,
        "end": span.end_time,
        "kind": span.kind.value,
        "attributes": dict(span.attributes or {}),
        "events": [[e.name, e.timestamp, dict(e.attributes or {})] for e in span.events],
        "status": [span.status.status_code.value, span.status.description],
        "scope": (
            [span.instrumentation_scope.name, span.instrumentation_scope.version]
            if span.instrumentation_scope is not None
            else ["", None]
        ),
    }


def shifted(record: dict, seconds: float) -> dict:
    """`record` with its start, end and event times moved by `seconds` (a worker's
    estimate of the scheduler's clock ahead of its own).

    >>> shifted({"start": 10, "end": 20, "events": [["e", 15, {}]]}, 1e-9)["events"]
    [['e', 16, {}]]
    """
    delta = round(seconds * 1e9)
    if not delta:
        return record
    return {
        **record,
        "start": record["start"] + delta if record["start"] is not None else None,
        "end": record["end"] + delta if record["end"] is not None else None,
        "events": [[name, ts + delta, attrs] for name, ts, attrs in record["events"]],
    }


def scrubbed(record: dict, scrub: Callable[[str], str]) -> dict:
    """`record` with `scrub` applied to what the SDK makes of an exception: each text
    attribute of its `exception` events (message, stack trace) and its status
    description. The names and attributes user code sets are kept as set.

    >>> record = {"events": [["exception", 1, {"exception.message": "token=abc"}]],
    ...           "status": [2, "ValueError: token=abc"]}
    >>> scrubbed(record, lambda text: text.replace("abc", "[redacted]"))["status"]
    [2, 'ValueError: token=[redacted]']
    """
    events = [
        [name, ts, {k: scrub(v) if isinstance(v, str) else v for k, v in attrs.items()}]
        if name == EXCEPTION_EVENT
        else [name, ts, attrs]
        for name, ts, attrs in record["events"]
    ]
    code, description = record["status"]
    return {**record, "events": events, "status": [code, scrub(description)]}


def readable_span(record: dict, resource):
    """The `ReadableSpan` of a `span_record`, for the run's span processors."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanKind, Status, StatusCode

    flags = TraceFlags(TraceFlags.SAMPLED)
    trace_id = int(record["trace_id"], 16)
    parent = None
    if record["parent_id"]:
        parent = SpanContext(trace_id, int(record["parent_id"], 16), True, flags)
    code, description = record["status"]
    return ReadableSpan(
        name=record["name"],
        context=SpanContext(trace_id, int(record["span_id"], 16), False, flags),
        parent=parent,
        resource=resource,
        attributes=record["attributes"],
        events=[Event(name, attrs, ts) for name, ts, attrs in record["events"]],
        kind=SpanKind(record["kind"]),
        status=Status(StatusCode(code), description),
        start_time=record["start"],
        end_time=record["end"],
        instrumentation_scope=InstrumentationScope(*record["scope"]),
    )
