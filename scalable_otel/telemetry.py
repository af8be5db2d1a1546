"""The OTel pipeline of one run: tracer, meter and logger providers and their exporters."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from . import semconv as sc
from .exporters.jsonl import JsonlWriter, RunDirectoryLogProcessor, RunDirectorySpanProcessor

logger = logging.getLogger(__name__)

_OFF = {"off", "false", "0", "no", "disabled", "none"}


def telemetry_disabled() -> bool:
    """True when OTEL_SDK_DISABLED=true or SCALABLE_TELEMETRY=off (or false/0/no)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return True
    return os.environ.get("SCALABLE_TELEMETRY", "").strip().lower() in _OFF


@dataclass
class Pipeline:
    """The providers of one run and the run-directory writer behind them."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    writer: JsonlWriter

    def tracer(self):
        from . import __version__

        return self.tracer_provider.get_tracer(sc.INSTRUMENTATION_SCOPE, __version__)

    def meter(self):
        from . import __version__

        return self.meter_provider.get_meter(sc.INSTRUMENTATION_SCOPE, __version__)

    def event_logger(self):
        from . import __version__

        return self.logger_provider.get_logger(sc.INSTRUMENTATION_SCOPE, __version__)

    def shutdown(self) -> None:
        """Flush every exporter, then close the run directory's files."""
        for provider in (self.tracer_provider, self.logger_provider, self.meter_provider):
            try:
                provider.shutdown()
            except Exception:
                logger.debug("scalable-otel: provider shutdown failed", exc_info=True)
        self.writer.close()


def build_pipeline(
    directory: Path,
    run_id: str,
    *,
    project: str,
    flush_interval: float,
    span_processors=(),
    metric_readers=(),
    log_processors=(),
) -> Pipeline:
    """Providers whose first exporter is the run directory; more can be passed in."""
    attributes = {sc.RUN_ID: run_id, sc.PROJECT: project}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "scalable-otel"
    resource = Resource.create(attributes)  # also reads OTEL_RESOURCE_ATTRIBUTES
    writer = JsonlWriter(directory, flush_interval=flush_interval)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(RunDirectorySpanProcessor(writer, run_id))
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(RunDirectoryLogProcessor(writer, run_id))
    for processor in log_processors:
        logger_provider.add_log_record_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=list(metric_readers))
    return Pipeline(tracer_provider, meter_provider, logger_provider, writer)
