"""The exporters of a run besides its run directory, built from `ExportSettings` in the
run's telemetry process: OTLP (traces, metrics and logs, gRPC or HTTP), Prometheus (a
scrape endpoint, a Pushgateway), and the spans in OTLP's JSON file encoding.

A backend that is down or slow never slows the workflow or the run directory: spans and
log records wait in bounded queues and are sent from background threads; after a failed
send (or a refused connection: each OTLP endpoint is tried once when the run starts) one
warning names the endpoint; while it refuses connections (one is tried before each send)
nothing is sent to it, so neither the exporters' retries nor the close wait for it; one
that accepts again (restarted mid-run) gets the batches after, the run's last ones
included; and no backend is waited for more than `CLOSE_WAIT_S`. Spans and log records
offered to OTLP but not confirmed sent are counted (`dropped_spans`, `dropped_logs`; in
run.json `telemetry_spans_dropped`, `telemetry_logs_dropped`): a batch that failed is
counted lost even when later ones succeed, as the SDK's exporters do not send it again.
"""

from __future__ import annotations

import importlib
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .. import compat
from .. import semconv as sc
from ..args import DEFAULT_REDACTION, redact_url
from .settings import GRPC, HTTP, ExportSettings, OtlpTarget

logger = logging.getLogger(__name__)

CLOSE_WAIT_S = 3.0
QUEUE_SPANS = 20_000
QUEUE_LOGS = 20_000
METRIC_INTERVAL_S = 5.0

# The SDK logs each dropped span and each failed batch; one warning of ours says it all.
for _noisy in ("opentelemetry.exporter.otlp", "opentelemetry.sdk._shared_internal"):
    logging.getLogger(_noisy).setLevel(logging.CRITICAL)


@dataclass
class Backends:
    """What the pipeline adds to its providers, and what it calls when the run ends."""

    span_processors: list = field(default_factory=list)
    metric_readers: list = field(default_factory=list)
    log_processors: list = field(default_factory=list)
    before_shutdown: list[Callable[[], None]] = field(default_factory=list)
    guards: list = field(default_factory=list)
    span_files: list = field(default_factory=list)  # OtlpJsonSpanProcessor
    where: dict = field(default_factory=dict)

    def dropped_spans(self) -> int:
        """Spans an exporter was given but did not deliver (OTLP) or write (the file)."""
        sent = sum(g.dropped for g in self.guards if g.signal == "traces")
        return sent + sum(f.dropped for f in self.span_files)

    def dropped_logs(self) -> int:
        """Log records the OTLP exporter was given but did not deliver."""
        return sum(g.dropped for g in self.guards if g.signal == "logs")

    def closing(self) -> None:
        for guard in self.guards:
            guard.closing = True

    def closed(self) -> None:
        """Say once, for a backend that never answered, what it did not get."""
        for guard in self.guards:
            guard.closed()


class _Guard:
    """Counts what an exporter sends, warns once when it fails, and stops waiting for a
    failed endpoint once the run is closing."""

    def __init__(self, signal: str, where: str, address: tuple[str, int] | None = None):
        self.signal, self.where = signal, where
        self.address = address  # tried before a send while the backend is down
        self.offered = self.sent = 0
        self.failed = False
        self.sent_any = False
        self.closing = False
        self._warned = False
        self._back_at_close: bool | None = None
        self._lock = threading.Lock()

    @property
    def dropped(self) -> int:
        return max(0, self.offered - self.sent)

    def offer(self, count: int = 1) -> None:
        with self._lock:
            self.offered += count

    def skip(self) -> bool:
        """Whether to fail a send at once: the backend failed and refuses a connection
        now. While it is down each send first tries one TCP connection (the exporters
        would retry a refused one for their whole timeout, and a close would wait for
        that); once the run is closing, it is tried once: a backend that came back gets
        the run's last spans and records, one still down is not waited for."""
        if not self.failed:
            return False
        if self.address is None:
            return self.closing
        if not self.closing:
            return not _accepts(self.address)
        with self._lock:
            if self._back_at_close is None:
                self._back_at_close = _accepts(self.address)
            return not self._back_at_close

    def closed(self) -> None:
        counted = self.signal in _COUNTED
        with self._lock:
            lost = self.dropped if counted else not self.sent_any
            if self._warned or not lost:
                return
            self._warned = True
        what = f"{self.dropped} {_COUNTED[self.signal]} were" if counted else "metrics were"
        logger.warning(
            "scalable-otel: OTLP %s to %s did not answer before the run ended; %s not "
            "delivered (the run directory is complete)",
            self.signal,
            self.where,
            what,
        )

    def result(self, ok: bool, count: int, reason: str = "") -> None:
        with self._lock:
            if ok:
                self.sent += count
                self.sent_any = True
                self.failed = False  # back up: the close waits for it again
                return
            self.failed = True
            if self._warned:
                return
            self._warned = True
        logger.warning(
            "scalable-otel: OTLP %s to %s failed%s; they are dropped (the run directory "
            "is complete)",
            self.signal,
            self.where,
            f" ({reason})" if reason else "",
        )


_COUNTED = {"traces": "spans", "logs": "log records"}


def _accepts(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=min(1.0, CLOSE_WAIT_S)).close()
        return True
    except OSError:
        return False


class _GuardedExporter:
    """A span (or, with `results` the SDK's log export results, log record) exporter
    whose sends are counted by its guard."""

    def __init__(self, exporter, guard: _Guard, results=None):
        if results is None:
            from opentelemetry.sdk.trace.export import SpanExportResult as results
        self._exporter, self._guard, self._results = exporter, guard, results

    def export(self, batch):
        results = self._results
        if self._guard.skip():
            return results.FAILURE
        try:
            result = self._exporter.export(batch)
            reason = ""
        except Exception as exc:
            result, reason = results.FAILURE, type(exc).__name__
        ok = result == results.SUCCESS
        self._guard.result(ok, len(batch), reason or ("" if ok else "no success reply"))
        return result

    def shutdown(self):
        try:
            self._exporter.shutdown()
        except Exception:
            pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _CountingProcessor:
    """A BatchSpanProcessor (or BatchLogRecordProcessor) that counts the spans (log
    records) it is offered, and is not waited for longer than CLOSE_WAIT_S when the run
    ends."""

    def __init__(self, inner, guard: _Guard):
        self._inner, self._guard = inner, guard

    def on_start(self, span, parent_context=None):
        self._inner.on_start(span, parent_context=parent_context)

    def _on_ending(self, span):
        pass

    def on_end(self, span):
        self._guard.offer()
        self._inner.on_end(span)

    def on_emit(self, log_record):  # as a LogRecordProcessor
        self._guard.offer()
        self._inner.on_emit(log_record)

    def enabled(self, *args, **kwargs) -> bool:
        return self._inner.enabled(*args, **kwargs)

    def shutdown(self):
        self._guard.closing = True
        # The SDK's shutdown may wait 30 s for a slow export: wait CLOSE_WAIT_S at most.
        done = threading.Thread(target=self._inner.shutdown, daemon=True)
        done.start()
        done.join(CLOSE_WAIT_S)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(min(timeout_millis, int(CLOSE_WAIT_S * 1000)))


_OTLP_EXPORTERS = {
    ("traces", GRPC): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter"),
    ("traces", HTTP): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter"),
    ("metrics", GRPC): (
        "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
        "OTLPMetricExporter",
    ),
    ("metrics", HTTP): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
    ),
    ("logs", GRPC): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter"),
    ("logs", HTTP): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter"),
}


def _otlp_exporter(target: OtlpTarget, signal: str):
    """The SDK's OTLP exporter of `signal` ("traces", "metrics", "logs") for `target`."""
    module, name = _OTLP_EXPORTERS[(signal, target.protocol)]
    kwargs = {"endpoint": target.endpoint, "headers": target.headers or None}
    if target.protocol == GRPC:
        kwargs["insecure"] = target.endpoint.startswith("http://")
    return getattr(importlib.import_module(module), name)(timeout=target.timeout_s, **kwargs)


def _probe(target: OtlpTarget, guard: _Guard) -> None:
    """Try one TCP connection to the endpoint, in the background. The exporters retry a
    refused connection for their whole timeout, so a backend that is down would otherwise
    first fail at the close and cost it CLOSE_WAIT_S; one that refuses now is known to be
    down (until a send succeeds) and is not waited for. One that accepts is left alone."""
    address = _host_port(target)
    if address is None:
        return

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=CLOSE_WAIT_S).close()
        except OSError as exc:
            guard.result(False, 0, f"cannot connect: {exc.strerror or exc}")

    threading.Thread(target=connect, name="scalable-otel-otlp-probe", daemon=True).start()


def _host_port(target: OtlpTarget) -> tuple[str, int] | None:
    """(host, port) of an OTLP endpoint URL, or None for one that names no TCP address."""
    endpoint = target.endpoint if "://" in target.endpoint else f"//{target.endpoint}"
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    return (host, port) if host and port else None  # without a port: not tried


def _guarded_metric_exporter(exporter, guard: _Guard):
    """An OTLP metric exporter wrapped with a `_Guard`, keeping its preferences."""
    from opentelemetry.sdk.metrics.export import MetricExporter

    class GuardedMetricExporter(_GuardedMetrics, MetricExporter):
        pass

    # The SDK keeps an exporter's preferences in private attributes only; without them
    # the wrapper has the SDK's defaults (cumulative), which every OTLP backend reads.
    try:
        preferences = {
            "preferred_temporality": exporter._preferred_temporality,
            "preferred_aggregation": exporter._preferred_aggregation,
        }
    except AttributeError as exc:
        compat.fell_back(compat.PREFERRED_TEMPORALITY, exc)
        preferences = {}
    wrapped = GuardedMetricExporter(**preferences)
    wrapped._exporter, wrapped._guard = exporter, guard
    return wrapped


class _GuardedMetrics:
    _exporter = None
    _guard: _Guard

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        from opentelemetry.sdk.metrics.export import MetricExportResult

        if self._guard.skip():
            return MetricExportResult.FAILURE
        try:
            result = self._exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            reason = ""
        except Exception as exc:
            result, reason = MetricExportResult.FAILURE, type(exc).__name__
        ok = result == MetricExportResult.SUCCESS
        self._guard.result(ok, 0, reason or ("" if ok else "no success reply"))
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        try:
            self._exporter.shutdown(timeout_millis=min(timeout_millis, CLOSE_WAIT_S * 1000))
        except Exception:
            pass


def build_backends(
    settings: ExportSettings,
    run_dir: Path,
    *,
    run_id: str,
    project: str,
    flush_interval: float,
    write_errors=None,
) -> Backends:
    """The exporters `settings` ask for; one that cannot be built is skipped with a warning.
    `write_errors` (the run directory's `WriteErrors`) gets the errors writing its files."""
    backends = Backends()
    if settings.otlp_json_file:
        _add(
            backends,
            "traces.otlp.jsonl",
            lambda: _otlp_json(backends, run_dir, flush_interval, write_errors),
        )
    if settings.otlp_traces is not None:
        _add(backends, "OTLP traces", lambda: _otlp_traces(backends, settings.otlp_traces))
    if settings.otlp_metrics is not None:
        _add(backends, "OTLP metrics", lambda: _otlp_metrics(backends, settings.otlp_metrics))
    if settings.otlp_logs is not None:
        _add(backends, "OTLP logs", lambda: _otlp_logs(backends, settings.otlp_logs))
    if settings.prometheus_port is not None or settings.pushgateway_url:
        _add(
            backends,
            "Prometheus",
            lambda: _prometheus(backends, settings, run_id=run_id, project=project),
        )
    return backends


def _add(backends: Backends, what: str, build: Callable[[], None]) -> None:
    try:
        build()
    except Exception as exc:
        # an exporter's error may quote its endpoint, credentials and all
        reason = DEFAULT_REDACTION.scrub(str(exc))
        logger.warning("scalable-otel: %s export is off for this run (%s)", what, reason)


def _otlp_json(backends: Backends, run_dir: Path, flush_interval: float, write_errors) -> None:
    from .otlp_json import TRACES_FILE, OtlpJsonSpanProcessor

    processor = OtlpJsonSpanProcessor(
        run_dir / TRACES_FILE, flush_interval=flush_interval, write_errors=write_errors
    )
    backends.span_processors.append(processor)
    backends.span_files.append(processor)


def _otlp_traces(backends: Backends, target: OtlpTarget) -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    guard = _Guard("traces", target.describe(), _host_port(target))
    exporter = _GuardedExporter(_otlp_exporter(target, "traces"), guard)
    processor = BatchSpanProcessor(exporter, max_queue_size=QUEUE_SPANS)
    backends.span_processors.append(_CountingProcessor(processor, guard))
    backends.guards.append(guard)
    backends.where["otlp_traces"] = target.describe()
    _probe(target, guard)


def _otlp_metrics(backends: Backends, target: OtlpTarget) -> None:
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    guard = _Guard("metrics", target.describe(), _host_port(target))
    exporter = _guarded_metric_exporter(_otlp_exporter(target, "metrics"), guard)
    backends.metric_readers.append(
        PeriodicExportingMetricReader(
            exporter,
            export_interval_millis=METRIC_INTERVAL_S * 1000,
            export_timeout_millis=min(target.timeout_s, CLOSE_WAIT_S) * 1000,
        )
    )
    backends.guards.append(guard)
    backends.where["otlp_metrics"] = target.describe()
    _probe(target, guard)


def _otlp_logs(backends: Backends, target: OtlpTarget) -> None:
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult

    guard = _Guard("logs", target.describe(), _host_port(target))
    exporter = _GuardedExporter(_otlp_exporter(target, "logs"), guard, LogRecordExportResult)
    processor = BatchLogRecordProcessor(exporter, max_queue_size=QUEUE_LOGS)
    backends.log_processors.append(_CountingProcessor(processor, guard))
    backends.guards.append(guard)
    backends.where["otlp_logs"] = target.describe()
    _probe(target, guard)


def _prometheus(backends: Backends, settings: ExportSettings, *, run_id: str, project: str):
    from .prometheus import prometheus_export

    export = prometheus_export(
        settings, job="scalable", grouping={sc.RUN_ID: run_id, sc.PROJECT: project}
    )
    if export is None:
        return
    backends.metric_readers.append(export.reader)
    backends.before_shutdown.append(export.finish)
    if export.url:
        backends.where["prometheus"] = export.url
    if settings.pushgateway_url:
        backends.where["pushgateway"] = redact_url(settings.pushgateway_url)
