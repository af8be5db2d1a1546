"""A run's metrics for Prometheus: a scrape endpoint while it runs, a Pushgateway at its end.

`prometheus_export(settings, job=..., grouping=...)` gives the run's MeterProvider one
more metric reader, OpenTelemetry's `PrometheusMetricReader`, registered in a
`CollectorRegistry` of the run's own (never prometheus_client's global one: several
sessions may run in one process). Then:

- with `settings.prometheus_port`, an HTTP server on `settings.prometheus_host` serves
  that registry at `url` (`http://127.0.0.1:PORT/metrics`; port 0 takes a free port and
  `url` names the real one). A port already in use costs one warning, not the run.
- with `settings.pushgateway_url`, `finish()` pushes the run's final values to the
  Pushgateway under `job` and the `grouping` labels (the run id and project), so that a
  batch run shorter than a scrape interval still reaches Prometheus, and each run's
  final values are kept beside the others'. Scrape the Pushgateway with
  `honor_labels: true`.

Names follow OpenTelemetry's Prometheus translation (dots become underscores, `_total`
on counters, the unit as a suffix: `s` -> `_seconds`, `By` -> `_bytes`, unit `1` and
`{...}` dropped; histograms as `_bucket`, `_sum`, `_count`). The resource is on
`target_info`; its run id and project are also copied onto every series as the labels
`scalable_run_id` and `scalable_project`, so that a query or a dashboard can pick one run
out of many, scraped or pushed alike.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit
from wsgiref.simple_server import WSGIRequestHandler, make_server

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricReader
from prometheus_client import CollectorRegistry, make_wsgi_app, push_to_gateway
from prometheus_client.exposition import ThreadingWSGIServer, basic_auth_handler, default_handler

from .. import semconv as sc
from ..args import redact_url
from .settings import ExportSettings

logger = logging.getLogger(__name__)

# Resource attributes copied onto every series as labels (besides target_info).
PROMOTED_RESOURCE_ATTRIBUTES = frozenset({sc.RUN_ID, sc.PROJECT})
PUSH_TIMEOUT_S = 10.0
_POLL_INTERVAL_S = 0.05  # how soon the HTTP server's loop sees a shutdown request


class _RunRegistry(CollectorRegistry):
    """A registry that collects one caller at a time.

    The OTel reader's collector hands each collection to whichever caller drains its
    queue first: a scrape and the final push at the same moment could otherwise leave
    one of them empty.
    """

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._collect_lock = threading.Lock()

    def collect(self) -> Iterable:
        with self._collect_lock:
            metrics = list(super().collect())
        yield from metrics


def _label_name(key: str) -> str:
    """A valid Prometheus label name, as the OTel exporter makes one of an attribute key."""
    name = re.sub(r"[^a-zA-Z0-9_]+", "_", str(key))
    return f"_{name[1:]}" if name[:1].isdigit() else name


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def _gateway_and_handler(url: str):
    """The Pushgateway URL without credentials, and a handler sending them if it had any."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.username is None:
        return url, default_handler
    user, password = parts.username, parts.password or ""

    def handler(url, method, timeout, headers, data):
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    scheme, at, rest = url.partition("://")
    netloc, slash, path = (rest if at else scheme).partition("/")
    bare = f"{netloc.rpartition('@')[2]}{slash}{path}"
    return (f"{scheme}://{bare}" if at else bare), handler


def _url_host(host: str) -> str:
    """The host to put in the scrape URL: a wildcard address means this machine."""
    if host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def _serve(registry: CollectorRegistry, host: str, port: int):
    """An HTTP server for the registry on host:port, in a daemon thread."""
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    httpd = make_server(
        sockaddr[0], port, make_wsgi_app(registry), Server, handler_class=_QuietHandler
    )
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": _POLL_INTERVAL_S},
        name="scalable-otel-prometheus",
        daemon=True,
    )
    thread.start()
    return httpd, thread


class PrometheusExport:
    """A run's Prometheus reader, its scrape endpoint (if any) and its final push (if any).

    `reader` goes into the run's `MeterProvider(metric_readers=[...])`; `finish()` is
    called once when the run ends, after its last values were recorded and before the
    MeterProvider shuts down.
    """

    def __init__(
        self,
        settings: ExportSettings,
        *,
        job: str,
        grouping: dict[str, str],
    ) -> None:
        self.registry = _RunRegistry()
        self.reader: MetricReader = PrometheusMetricReader(
            registry=self.registry,
            resource_attribute_filter=PROMOTED_RESOURCE_ATTRIBUTES.__contains__,
        )
        self.job = job
        self.grouping = {_label_name(k): str(v) for k, v in grouping.items() if v is not None}
        self.pushgateway_url = settings.pushgateway_url or None
        self.url: str | None = None
        self._httpd = None
        self._thread = None
        self._finished = False
        if settings.prometheus_port is not None:
            host = settings.prometheus_host or "127.0.0.1"
            try:
                self._httpd, self._thread = _serve(
                    self.registry, host, int(settings.prometheus_port)
                )
            except OSError as exc:  # in use, no such address, not permitted
                logger.warning(
                    "scalable-otel: no Prometheus endpoint on %s:%s (%s); the run goes on "
                    "without it",
                    host,
                    settings.prometheus_port,
                    exc.strerror or exc,
                )
            else:
                port = self._httpd.server_address[1]
                self.url = f"http://{_url_host(host)}:{port}/metrics"

    def push(self) -> bool:
        """Push the current values to the Pushgateway (replacing this run's group).

        True when pushed; False, with one warning naming the URL, when it failed.
        """
        if not self.pushgateway_url:
            return False
        gateway, handler = _gateway_and_handler(self.pushgateway_url)
        try:
            push_to_gateway(
                gateway,
                job=self.job,
                registry=self.registry,
                grouping_key=self.grouping,
                timeout=PUSH_TIMEOUT_S,
                handler=handler,
            )
        except Exception as exc:
            logger.warning(
                "scalable-otel: could not push the run's metrics to the Pushgateway at %s: %s",
                redact_url(self.pushgateway_url),
                getattr(exc, "reason", None) or exc,
            )
            return False
        return True

    def finish(self) -> None:
        """Push the final values if a Pushgateway is set, then stop the endpoint.

        Called once, before the MeterProvider shuts down; never raises.
        """
        if self._finished:
            return
        self._finished = True
        try:
            self.push()
        except Exception:  # push() warns already; nothing else may escape
            logger.debug("scalable-otel: Prometheus push failed", exc_info=True)
        self.close()

    def close(self) -> None:
        """Stop the scrape endpoint (no push). Safe to call more than once."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        try:
            httpd.shutdown()
            httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=2.0)
        except Exception:
            logger.warning(
                "scalable-otel: could not stop the Prometheus endpoint at %s",
                self.url,
                exc_info=True,
            )


def prometheus_export(
    settings: ExportSettings, *, job: str, grouping: dict[str, str]
) -> PrometheusExport | None:
    """The run's Prometheus export, or None when neither an endpoint nor a Pushgateway is set.

    `job` names the run's group on the Pushgateway (its `job` label); `grouping` adds the
    labels that keep each run's final values apart there (names are made valid label
    names). `{semconv.RUN_ID: run_id, semconv.PROJECT: project}` gives the labels
    `scalable_run_id` and `scalable_project`, the same that every series carries anyway.
    """
    if settings.prometheus_port is None and not settings.pushgateway_url:
        return None
    return PrometheusExport(settings, job=job, grouping=grouping)
