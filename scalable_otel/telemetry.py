"""The OTel pipeline of one run: tracer, meter and logger providers and their exporters.

Also the run's signals handed to providers of the caller's (`DaskInstrumentor`'s and
`ScalableSession.attach`'s `tracer_provider` and `meter_provider`): `forward_spans_to`
and `mirrored_meter`.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.metrics import NoOpMeter, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan

from . import semconv as sc
from .exporters.backends import CLOSE_WAIT_S, Backends, build_backends
from .exporters.jsonl import (
    JsonlWriter,
    RunDirectoryLogProcessor,
    RunDirectorySpanProcessor,
    WriteErrors,
)
from .exporters.line_logs import LineLogs
from .exporters.settings import ExportSettings
from .ids import service_instance_id
from .recorded_spans import SpanSink
from .version import __version__

logger = logging.getLogger(__name__)

_OFF = {"off", "false", "0", "no", "disabled", "none"}


def telemetry_disabled() -> bool:
    """True when OTEL_SDK_DISABLED=true or SCALABLE_TELEMETRY=off (or false/0/no)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return True
    return os.environ.get("SCALABLE_TELEMETRY", "").strip().lower() in _OFF


class PresetIds(RandomIdGenerator):
    """Random ids, except the run's trace id: the session chose it, and workers know it."""

    def __init__(self, trace_id: int | None = None):
        self._trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id, self._trace_id = self._trace_id, None
        return trace_id or super().generate_trace_id()


@dataclass
class Pipeline:
    """The providers of one run, the run-directory writer and the other exporters.

    The run's own span (made through `tracer()`) and the recorder's spans
    (`recorded_spans.SpanSink`) go to the same `span_processors`, the run directory's
    first. The recorder's events are written to the run directory by `emit_event`, and
    made into SDK log records only when `log_processors` (OTLP's, the caller's) are there
    to read them, as are the failures.jsonl and workers.jsonl lines (`LineLogs`); its
    metrics are recorded only when a reader will collect them."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    writer: JsonlWriter
    ids: PresetIds
    backends: Backends
    span_processors: list
    events: RunDirectoryLogProcessor
    log_processors: list
    metric_readers: list

    def tracer(self):
        return self.tracer_provider.get_tracer(sc.INSTRUMENTATION_SCOPE, __version__)

    def meter(self):
        """The run's meter; a no-op one when no reader collects metrics."""
        if not self.metric_readers:
            return NoOpMeter(sc.INSTRUMENTATION_SCOPE, __version__)
        return self.meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)

    def span_sink(self, run_span) -> SpanSink:
        """Where the recorder's spans go: the run's span processors, in the run span's
        instrumentation scope (one scope in every exporter)."""
        scope = getattr(run_span, "instrumentation_scope", None)
        if scope is None:  # not a span of the SDK's (a sampler left it out)
            scope = InstrumentationScope(sc.INSTRUMENTATION_SCOPE, __version__)
        return SpanSink(self.span_processors, self.tracer_provider.resource, scope, self.ids)

    def emit_event(self, event: str, ts_ns: int, attributes: dict, span_context=None) -> None:
        """One event of the run (resource sample, task measurement, cache lookup): its
        run-directory line, and a log record for the log processors (OTLP's, the caller's)."""
        trace_id = span_id = 0
        if span_context is not None:
            trace_id, span_id = span_context.trace_id, span_context.span_id
        self.events.write_event(event, ts_ns, attributes, trace_id, span_id)
        if self.log_processors:
            ctx = None
            if span_context is not None:
                ctx = trace.set_span_in_context(NonRecordingSpan(span_context))
            self._event_logger.emit(
                timestamp=ts_ns,
                context=ctx,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=event,
                event_name=event,
                attributes=attributes,
            )

    def dropped_logs(self) -> int:
        """The run's log records that did not reach its OTLP backend: those the exporter
        did not deliver, and those of run-directory lines that could not be made into
        one (`LineLogs.failed`)."""
        line_logs = self.writer.on_append
        unmade = line_logs.failed if isinstance(line_logs, LineLogs) else 0
        return self.backends.dropped_logs() + unmade

    @functools.cached_property
    def _event_logger(self):
        return self.logger_provider.get_logger(sc.INSTRUMENTATION_SCOPE, __version__)

    def shutdown(self) -> None:
        """Flush every exporter (a failed backend is not waited for), then close the files."""
        self.backends.closing()
        # Spans, logs and metrics are flushed side by side: a backend that never answers
        # costs the close CLOSE_WAIT_S once, not once for each signal.
        flushes = [
            threading.Thread(target=self._shutdown, args=(provider,), name="scalable-otel-close")
            for provider in (self.tracer_provider, self.logger_provider)
        ]
        for flush in flushes:
            flush.start()
        for finish in self.backends.before_shutdown:  # after the last values, before the end
            try:
                finish()
            except Exception:
                logger.debug("scalable-otel: exporter finish failed", exc_info=True)
        # a metric exporter whose backend hangs is given CLOSE_WAIT_S, not its own timeout
        self._shutdown(self.meter_provider, timeout_millis=CLOSE_WAIT_S * 1000)
        for flush in flushes:
            flush.join()
        self.backends.closed()
        self.writer.close()

    @staticmethod
    def _shutdown(provider, **kwargs) -> None:
        try:
            provider.shutdown(**kwargs)
        except Exception:
            logger.debug("scalable-otel: provider shutdown failed", exc_info=True)


def build_pipeline(
    directory: Path,
    run_id: str,
    *,
    project: str,
    flush_interval: float,
    trace_id: int | None = None,
    exports: ExportSettings | None = None,
    span_processors=(),
    metric_readers=(),
    log_processors=(),
) -> Pipeline:
    """Providers whose first exporter is the run directory, then those `exports` asks
    for, then any passed in."""
    attributes = {sc.RUN_ID: run_id, sc.PROJECT: project}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[sc.SERVICE_NAME] = sc.DEFAULT_SERVICE_NAME
    # one instance per run, derived from it (the SDK would make a random one per process)
    if sc.SERVICE_INSTANCE_ID not in OTELResourceDetector().detect().attributes:
        attributes[sc.SERVICE_INSTANCE_ID] = service_instance_id(run_id)
    resource = Resource.create(attributes)  # also reads OTEL_RESOURCE_ATTRIBUTES
    # one warning for a full disk, whichever of the run directory's files meets it first
    write_errors = WriteErrors(directory)
    writer = JsonlWriter(directory, flush_interval=flush_interval, errors=write_errors)
    backends = build_backends(
        exports or ExportSettings(otlp_json_file=False),
        directory,
        run_id=run_id,
        project=project,
        flush_interval=flush_interval,
        write_errors=write_errors,
    )
    ids = PresetIds(trace_id)
    tracer_provider = TracerProvider(resource=resource, id_generator=ids)
    processors = [
        RunDirectorySpanProcessor(writer, run_id),
        *backends.span_processors,
        *span_processors,
    ]
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    logger_provider = LoggerProvider(resource=resource)
    log_processors = [*backends.log_processors, *log_processors]
    for processor in log_processors:
        logger_provider.add_log_record_processor(processor)
    if log_processors:
        writer.on_append = LineLogs(
            logger_provider.get_logger(sc.INSTRUMENTATION_SCOPE, __version__)
        )
    readers = [*backends.metric_readers, *metric_readers]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    return Pipeline(
        tracer_provider,
        meter_provider,
        logger_provider,
        writer,
        ids,
        backends,
        processors,
        events=RunDirectoryLogProcessor(writer, run_id),
        log_processors=list(log_processors),
        metric_readers=readers,
    )


# --- tracer_provider: the run's spans to another provider's processors --------------------
class _ForwardingSpanProcessor(SpanProcessor):
    """On the run's provider: hands each span to another provider's span processors."""

    def __init__(self, target):
        self._target = target

    def on_start(self, span, parent_context=None) -> None:
        try:
            self._target.on_start(span, parent_context=parent_context)
        except Exception:
            logger.debug("scalable-otel: a forwarded span processor failed", exc_info=True)

    def on_end(self, span) -> None:
        try:
            self._target.on_end(span)
        except Exception:
            logger.debug("scalable-otel: a forwarded span processor failed", exc_info=True)

    def shutdown(self) -> None:
        # the run ends, not the provider: its exporters get the run's last spans and go on
        self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._target.force_flush(timeout_millis)
        except Exception:
            logger.debug("scalable-otel: a forwarded span processor failed", exc_info=True)
            return False


def forward_spans_to(tracer_provider) -> SpanProcessor | None:
    """A span processor for a run's pipeline that passes every span to the span processors
    of `tracer_provider` (an SDK `TracerProvider`); None, with a warning, for another kind.

    Example::

        processor = forward_spans_to(my_tracer_provider)
        ScalableSession(pipeline=PipelineOptions(span_processors=[processor]))
    """
    # The SDK has no public accessor for a provider's processors; this attribute has held
    # them (a multi-span processor, which add_span_processor extends) since SDK 1.0.
    target = getattr(tracer_provider, "_active_span_processor", None)
    if target is None:
        logger.warning(
            "scalable-otel: tracer_provider %s is not an OpenTelemetry SDK TracerProvider; "
            "the run's spans go to the run directory and the configured exporters only",
            type(tracer_provider).__name__,
        )
        return None
    return _ForwardingSpanProcessor(target)


# --- meter_provider: the run's metrics on another provider's instruments -------------------
class _Tee:
    """A synchronous instrument standing for two: each measurement goes to both."""

    def __init__(self, own, mirror):
        self._own = own
        self._mirror = mirror

    def __getattr__(self, method):
        own, mirror = getattr(self._own, method), getattr(self._mirror, method)

        def measure(*args, **kwargs):
            own(*args, **kwargs)
            try:
                mirror(*args, **kwargs)
            except Exception:
                logger.debug("scalable-otel: a mirrored instrument failed", exc_info=True)

        return measure


class _MetricMirror:
    """The run metrics of this process's runs, on the instruments of one meter.

    An SDK meter keeps the callbacks of an observable instrument's first creation only,
    so each observable instrument is created once here and observes every run: a counter
    reports its runs' sum (the final counts of finished runs kept, so it only grows),
    other observables report the runs still going.
    """

    def __init__(self, meter):
        self._meter = meter
        self._lock = threading.Lock()
        self._instruments: dict = {}  # (method, name) -> instrument
        self._sources: dict = {}  # name -> [(finished_run, callback)]
        self._finished: dict = {}  # name -> {attributes: value} of finished runs (counters)

    def instrument(self, method: str, name: str, args, kwargs):
        with self._lock:
            if (method, name) not in self._instruments:
                create = getattr(self._meter, method)
                self._instruments[method, name] = create(name, *args, **kwargs)
            return self._instruments[method, name]

    def observe(self, method: str, finished_run, name: str, callbacks=None, **kwargs):
        with self._lock:
            self._sources.setdefault(name, []).extend((finished_run, cb) for cb in callbacks or ())
        keep_finished = method == "create_observable_counter"
        callback = functools.partial(self._observe, name, keep_finished)
        return self.instrument(method, name, ([callback],), kwargs)

    def _observe(self, name: str, keep_finished: bool, options):
        with self._lock:
            finished = self._finished.setdefault(name, {})
            totals = dict(finished)
            going = []
            for finished_run, callback in self._sources.get(name, ()):
                done = finished_run()  # checked first: then these values are final
                values = [
                    (frozenset((o.attributes or {}).items()), o.value) for o in callback(options)
                ]
                if not done:
                    going.append((finished_run, callback))
                elif not keep_finished:
                    continue  # a finished run has no workers connected
                for key, value in values:
                    totals[key] = totals.get(key, 0) + value
                    if done:
                        finished[key] = finished.get(key, 0) + value
            self._sources[name] = going
        return [Observation(value, dict(key)) for key, value in totals.items()]


class _MirroredMeter:
    """What a run's recorder gets as its meter when its metrics are mirrored: each
    instrument is made on the run's own meter and on the mirror's (a synchronous one
    becomes a tee; an observable one is also observed there). A mirror that fails is
    left out, with one warning: the run's own metrics are never at stake."""

    def __init__(self, own, mirror: _MetricMirror, finished_run):
        self._own = own
        self._mirror = mirror
        self._finished_run = finished_run
        self._failed = False

    def __getattr__(self, method: str):
        if not method.startswith("create_"):
            raise AttributeError(method)
        create_own = getattr(self._own, method)

        def create(name, *args, **kwargs):
            instrument = create_own(name, *args, **kwargs)
            if self._failed:
                return instrument
            try:
                if method.startswith("create_observable_"):
                    self._mirror.observe(method, self._finished_run, name, *args, **kwargs)
                    return instrument
                return _Tee(instrument, self._mirror.instrument(method, name, args, kwargs))
            except Exception as exc:
                self._failed = True
                logger.warning(
                    "scalable-otel: the run's metrics are not mirrored to meter_provider (%s)",
                    exc,
                )
                return instrument

        return create


_mirrors: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_mirrors_lock = threading.Lock()


def mirrored_meter(meter, meter_provider, finished_run):
    """The meter for a run's recorder that records each of its metrics on `meter` and also
    on a meter of `meter_provider` (scope `scalable_otel`); `finished_run()` tells when
    the run's values are final. On failure, a warning and `meter` itself.

    Example::

        recorder = Recorder(meter=mirrored_meter(pipeline.meter(), my_meter_provider,
                                                 lambda: run_is_over), ...)
    """
    try:
        with _mirrors_lock:
            mirror = _mirrors.get(meter_provider)
            if mirror is None:
                scope = meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)
                mirror = _mirrors[meter_provider] = _MetricMirror(scope)
    except Exception as exc:
        logger.warning(
            "scalable-otel: the run's metrics are not mirrored to meter_provider (%s)", exc
        )
        return meter
    return _MirroredMeter(meter, mirror, finished_run)
