"""The OTel pipeline of one run: tracer, meter and logger providers and their exporters."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

from . import semconv as sc
from .exporters.backends import CLOSE_WAIT_S, Backends, build_backends
from .exporters.jsonl import (
    JsonlWriter,
    RunDirectoryLogProcessor,
    RunDirectorySpanProcessor,
    WriteErrors,
)
from .exporters.settings import ExportSettings

logger = logging.getLogger(__name__)

_OFF = {"off", "false", "0", "no", "disabled", "none"}


def telemetry_disabled() -> bool:
    """True when OTEL_SDK_DISABLED=true or SCALABLE_TELEMETRY=off (or false/0/no)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return True
    return os.environ.get("SCALABLE_TELEMETRY", "").strip().lower() in _OFF


class PresetIds(RandomIdGenerator):
    """Random ids, except where the recorder sets the next one: the run's trace id (the
    session chose it, and workers know it) and task span ids (derived from task keys)."""

    def __init__(self, trace_id: int | None = None):
        self._trace_id = trace_id
        self.next_span_id: int | None = None

    def generate_trace_id(self) -> int:
        trace_id, self._trace_id = self._trace_id, None
        return trace_id or super().generate_trace_id()

    def generate_span_id(self) -> int:
        span_id, self.next_span_id = self.next_span_id, None
        return span_id or super().generate_span_id()


@dataclass
class Pipeline:
    """The providers of one run, the run-directory writer and the other exporters."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    writer: JsonlWriter
    ids: PresetIds
    backends: Backends
    span_processors: list

    def tracer(self):
        from . import __version__

        return self.tracer_provider.get_tracer(sc.INSTRUMENTATION_SCOPE, __version__)

    def meter(self):
        from . import __version__

        return self.meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)

    def event_logger(self):
        from . import __version__

        return self.logger_provider.get_logger(sc.INSTRUMENTATION_SCOPE, __version__)

    def export_span(self, span) -> None:
        """An ended span made elsewhere (in a task on a worker), to every span processor."""
        for processor in self.span_processors:
            try:
                processor.on_end(span)
            except Exception:
                logger.debug("scalable-otel: a span processor failed", exc_info=True)

    def shutdown(self) -> None:
        """Flush every exporter (a failed backend is not waited for), then close the files."""
        self.backends.closing()
        # Spans and metrics are flushed side by side: a backend that never answers costs
        # the close CLOSE_WAIT_S once, not once for its spans and again for its metrics.
        spans = threading.Thread(
            target=self._shutdown, args=(self.tracer_provider,), name="scalable-otel-close"
        )
        spans.start()
        self._shutdown(self.logger_provider)
        for finish in self.backends.before_shutdown:  # after the last values, before the end
            try:
                finish()
            except Exception:
                logger.debug("scalable-otel: exporter finish failed", exc_info=True)
        # a metric exporter whose backend hangs is given CLOSE_WAIT_S, not its own timeout
        self._shutdown(self.meter_provider, timeout_millis=CLOSE_WAIT_S * 1000)
        spans.join()
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
        attributes["service.name"] = "scalable-otel"
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
    logger_provider.add_log_record_processor(RunDirectoryLogProcessor(writer, run_id))
    for processor in log_processors:
        logger_provider.add_log_record_processor(processor)
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[*backends.metric_readers, *metric_readers]
    )
    return Pipeline(
        tracer_provider, meter_provider, logger_provider, writer, ids, backends, processors
    )
