"""Spans of what already happened: the recorder's task, execute and worker spans.

The recorder learns of each task's life from Dask's records, after the fact, and makes
two spans for every task from values it made itself. Through the SDK's tracer each span
cost a sampler decision, a context, a lock and the cleaning of every attribute, about a
third of the telemetry process's time. Here they are made directly: a `RecordedSpan` is
an OpenTelemetry API span (the recorder sets attributes, adds events, ends it) and an SDK
`ReadableSpan` (what span processors and exporters read), handed to the run's span
processors at its start and at its end, as the SDK's tracer hands its own spans.

What the SDK would do to a span that matters here is kept: its sampling follows its
parent's (a child of an unsampled run span is unsampled; every processor still gets it,
and those that export check the flag, as the SDK's do); attribute values are kept to what
OTLP carries (a sequence becomes a tuple, None and other types are left out); text is cut
at `OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT` / `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT` when set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

logger = logging.getLogger(__name__)

_PLAIN = (str, bool, int, float)
_UNSET = Status(StatusCode.UNSET)


class SpanSink:
    """Makes `RecordedSpan`s and hands them to `processors` (SDK span processors).

    Example::

        sink = SpanSink(processors, resource, InstrumentationScope("scalable_otel"))
        span = sink.start("task", parent=run_span.get_span_context(), start_time=t_ns,
                          attributes={"scalable.task.name": "sim"})
        span.set_attribute("scalable.task.status", "completed")
        span.end(end_time=t_end_ns)   # every processor's on_end gets it
    """

    def __init__(
        self,
        processors: Sequence,
        resource,
        scope: InstrumentationScope,
        ids: IdGenerator | None = None,
    ):
        self.processors = list(processors)
        self.resource = resource
        self.scope = scope
        self._ids = ids or RandomIdGenerator()
        limits = SpanLimits()
        self.max_length = limits.max_span_attribute_length

    def start(
        self,
        name: str,
        *,
        parent: SpanContext,
        start_time: int,
        attributes: dict,
        span_id: int | None = None,
    ) -> RecordedSpan:
        """A started span, child of `parent` (in its trace, sampled as it is)."""
        context = SpanContext(
            parent.trace_id,
            span_id or self._ids.generate_span_id(),
            False,
            parent.trace_flags,
            parent.trace_state,
        )
        span = RecordedSpan(self, name, context, parent, start_time, self.clean(attributes))
        for processor in self.processors:
            try:
                processor.on_start(span, parent_context=None)
            except Exception:  # one failing processor never stops the others or the run
                logger.debug("scalable-otel: a span processor failed", exc_info=True)
        return span

    def ended(self, span: ReadableSpan) -> None:
        """An ended span (the recorder's, or one made in a task on a worker), to every
        span processor."""
        for processor in self.processors:
            try:
                processor.on_end(span)
            except Exception:
                logger.debug("scalable-otel: a span processor failed", exc_info=True)

    def clean(self, attributes: Mapping) -> dict:
        """`attributes` kept to what OTLP carries (see the module docstring)."""
        for value in attributes.values():
            if type(value) not in _PLAIN or (self.max_length is not None and type(value) is str):
                break
        else:
            return dict(attributes)  # the usual case: plain values, no length limit
        cleaned = {}
        for key, value in attributes.items():
            value = self.value(value)
            if value is not None:
                cleaned[key] = value
        return cleaned

    def value(self, value):
        """One attribute value as OTLP carries it, or None to leave it out."""
        if isinstance(value, str):
            limit = self.max_length
            return value if limit is None else value[:limit]
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
            items = [self.value(v) for v in value]
            kinds = {type(v) for v in items}
            if None not in kinds and len(kinds) <= 1:
                return tuple(items)
        if value is not None:
            logger.debug("scalable-otel: attribute value of type %s left out", type(value))
        return None


class _RecordedEvent(Event):
    dropped_attributes = 0


class RecordedSpan(trace_api.Span, ReadableSpan):
    """A span the recorder makes, read by span processors as the SDK's own spans are.

    Its attributes, events and status live in the fields `ReadableSpan`'s properties read
    (`tests/test_canaries.py` checks that they still do)."""

    # nothing is dropped from a recorded span: said here, where the SDK's properties would
    # ask whether its attributes are a bounded mapping, once per span and exporter
    dropped_attributes = dropped_events = dropped_links = 0

    def __init__(self, sink: SpanSink, name, context, parent, start_time, attributes: dict):
        ReadableSpan.__init__(
            self,
            name=name,
            context=context,
            parent=parent,
            resource=sink.resource,
            attributes=attributes,
            events=[],
            kind=SpanKind.INTERNAL,
            status=_UNSET,
            start_time=start_time,
            instrumentation_scope=sink.scope,
        )
        self._sink = sink

    # --- the API span ------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value) -> None:
        if self._end_time is None:
            if type(value) not in _PLAIN or self._sink.max_length is not None:
                value = self._sink.value(value)
                if value is None:
                    return
            self._attributes[key] = value

    def set_attributes(self, attributes: Mapping) -> None:
        if self._end_time is None:
            self._attributes.update(self._sink.clean(attributes))

    def add_event(self, name: str, attributes=None, timestamp: int | None = None) -> None:
        if self._end_time is None:
            cleaned = self._sink.clean(attributes) if attributes else {}
            self._events.append(_RecordedEvent(name, cleaned, timestamp))

    def add_link(self, context, attributes=None) -> None:
        pass  # the recorder's spans have no links

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status, description: str | None = None) -> None:
        if self._end_time is not None:
            return
        if not isinstance(status, Status):
            status = Status(status, description)
        if status.status_code is StatusCode.UNSET or self._status.status_code is StatusCode.OK:
            return  # as the SDK: UNSET never replaces, OK is final
        self._status = status

    def record_exception(self, exception, attributes=None, timestamp=None, escaped=False):
        attrs = {
            "exception.type": type(exception).__name__,
            "exception.message": str(exception),
            "exception.escaped": str(escaped),
        }
        attrs.update(attributes or {})
        self.add_event("exception", attrs, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """End it (once) and hand it to every span processor."""
        if self._end_time is not None:
            return
        self._end_time = end_time if end_time is not None else time.time_ns()
        self._sink.ended(self)

    def __repr__(self) -> str:
        return f'RecordedSpan(name="{self._name}", context={self._context})'
