"""Where a run's telemetry goes besides its run directory: `ExportOptions` (what the user
asks for) resolved against OpenTelemetry's standard environment variables into
`ExportSettings` (what the run uses).

The settings are plain data: the session decides them in the user's process and the
run's telemetry process builds the exporters from them. Each option left at None comes
from its variable:

- OTLP endpoint: `otlp_endpoint`, else `OTEL_EXPORTER_OTLP_ENDPOINT`; per signal
  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` and
  `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`.
- OTLP protocol: `otlp_protocol`, else `OTEL_EXPORTER_OTLP_PROTOCOL` (and its
  `_TRACES_`/`_METRICS_`/`_LOGS_` forms): `grpc` or `http/protobuf` (the default).
  Headers and timeout have the same per-signal forms.
- OTLP headers: `otlp_headers`, else `OTEL_EXPORTER_OTLP_HEADERS`
  (`key=value,key2=value2`, URL-encoded values).
- Traces exporter: `traces_exporter`, else `OTEL_TRACES_EXPORTER`: `otlp` or `none`.
- Metrics exporter: `metrics_exporter`, else `OTEL_METRICS_EXPORTER`: any of `otlp`,
  `prometheus`, `none`, comma-separated.
- Logs exporter: `logs_exporter`, else `OTEL_LOGS_EXPORTER`: `otlp` or `none` (the run's
  events, failures and worker changes as OTel log records).
- Prometheus scrape endpoint: `prometheus_port`, else `SCALABLE_PROMETHEUS_PORT`; it
  listens on 127.0.0.1 unless `prometheus_host`/`SCALABLE_PROMETHEUS_HOST` says otherwise.
- Prometheus Pushgateway: `pushgateway_url`, else `SCALABLE_PUSHGATEWAY_URL`.
- The run directory's `traces.otlp.jsonl` (every span in OTLP's JSON file encoding, what
  `scalable export --otlp` replays): on unless `otlp_file=False` or
  `SCALABLE_OTLP_FILE=off` (encoding costs the telemetry process about 0.4 ms a span).

A bad option written in code fails where it is written (`ExportOptions(otlp_protocol=
"grcp")` raises a ValueError naming it); a bad variable of the environment turns the
run's exporters off with one warning, never the workflow.

Unlike the SDK's own default (`otlp` to localhost), OTLP is on only when an endpoint is
set or `OTEL_TRACES_EXPORTER`/`OTEL_METRICS_EXPORTER`/`OTEL_LOGS_EXPORTER` asks for it:
a laptop with no collector gets no connection errors. `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES` go on every signal's resource; `OTEL_SDK_DISABLED=true` turns
telemetry off altogether. Headers are secrets (API keys): they reach the exporters and
nothing else, never the run directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from urllib.parse import unquote

from ..args import redact_url

GRPC = "grpc"
HTTP = "http/protobuf"
PROTOCOLS = (GRPC, HTTP)
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
TRACES_EXPORTERS = frozenset({"otlp", "none"})
METRICS_EXPORTERS = frozenset({"otlp", "prometheus", "none"})
LOGS_EXPORTERS = frozenset({"otlp", "none"})


class SettingsError(ValueError):
    """An exporter setting that cannot be used (a one-line message naming it)."""


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """Where a run's spans, metrics and log records go besides its run directory.

    Example::

        from scalable_otel import ExportOptions, ScalableSession

        exports = ExportOptions(otlp_endpoint="http://127.0.0.1:4317", otlp_protocol="grpc")
        with ScalableSession(target="local", exports=exports) as session:
            ...

    Each option left at None comes from its environment variable, as OpenTelemetry's
    SDK reads them:

    - `otlp_endpoint`: the OTLP endpoint; $OTEL_EXPORTER_OTLP_ENDPOINT (per signal:
      $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
      $OTEL_EXPORTER_OTLP_LOGS_ENDPOINT). An endpoint turns OTLP on; with none,
      nothing is sent.
    - `otlp_protocol`: "grpc" or "http/protobuf"; $OTEL_EXPORTER_OTLP_PROTOCOL (per
      signal: $OTEL_EXPORTER_OTLP_LOGS_PROTOCOL...), else http/protobuf.
    - `otlp_headers`: a mapping of header names to values (API keys: never written to
      disk, nor shown by `repr`); $OTEL_EXPORTER_OTLP_HEADERS (`key=value,key2=value2`;
      per signal: $OTEL_EXPORTER_OTLP_LOGS_HEADERS...). The timeout is
      $OTEL_EXPORTER_OTLP_TIMEOUT (per signal: $OTEL_EXPORTER_OTLP_LOGS_TIMEOUT...), in ms.
    - `traces_exporter`: "otlp" or "none"; $OTEL_TRACES_EXPORTER.
    - `metrics_exporter`: "otlp", "prometheus" or "none", comma-separated;
      $OTEL_METRICS_EXPORTER.
    - `logs_exporter`: "otlp" or "none"; $OTEL_LOGS_EXPORTER. The run's events (cache
      lookups, resource samples, fine metrics), each failures.jsonl line and each
      workers.jsonl line as OTel log records with their trace and span ids.
    - `prometheus_port`: serve the metrics for Prometheus to scrape (0 picks a free
      port); $SCALABLE_PROMETHEUS_PORT.
    - `prometheus_host`: the address that endpoint listens on;
      $SCALABLE_PROMETHEUS_HOST, else 127.0.0.1.
    - `pushgateway_url`: push the metrics' final values when the run ends;
      $SCALABLE_PUSHGATEWAY_URL.
    - `otlp_file`: False leaves out the run directory's `traces.otlp.jsonl` (what
      `scalable export --otlp` replays); $SCALABLE_OTLP_FILE=off.

    A bad option raises a ValueError or TypeError naming it; a bad variable turns the
    run's exporters off with one warning.
    """

    otlp_endpoint: str | None = None
    otlp_protocol: str | None = None
    otlp_headers: Mapping[str, str] | None = field(default=None, repr=False)
    traces_exporter: str | None = None
    metrics_exporter: str | None = None
    logs_exporter: str | None = None
    prometheus_port: int | None = None
    prometheus_host: str | None = None
    pushgateway_url: str | None = None
    otlp_file: bool | None = None

    def __post_init__(self) -> None:
        for name in (
            "otlp_endpoint",
            "otlp_protocol",
            "traces_exporter",
            "metrics_exporter",
            "logs_exporter",
            "prometheus_host",
            "pushgateway_url",
        ):
            _check_type(name, getattr(self, name), str, "a string")
        if self.otlp_protocol is not None and self.otlp_protocol not in PROTOCOLS:
            raise SettingsError(
                f"ExportOptions(otlp_protocol={self.otlp_protocol!r}): use "
                f"{' or '.join(repr(p) for p in PROTOCOLS)}"
            )
        _exporters(self.traces_exporter, TRACES_EXPORTERS, "ExportOptions(traces_exporter=...)")
        _exporters(self.metrics_exporter, METRICS_EXPORTERS, "ExportOptions(metrics_exporter=...)")
        _exporters(self.logs_exporter, LOGS_EXPORTERS, "ExportOptions(logs_exporter=...)")
        if self.otlp_headers is not None:
            if not isinstance(self.otlp_headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.otlp_headers.items()
            ):
                raise TypeError(
                    "ExportOptions(otlp_headers=...) must map header names to string values"
                )
            object.__setattr__(self, "otlp_headers", dict(self.otlp_headers))
        port = self.prometheus_port
        if port is not None:
            if isinstance(port, bool) or not isinstance(port, int):
                raise TypeError(
                    f"ExportOptions(prometheus_port=...) must be an int, not {type(port).__name__}"
                )
            if not 0 <= port <= 65535:
                raise SettingsError(f"ExportOptions(prometheus_port={port}) is not a port number")
        _check_type("otlp_file", self.otlp_file, bool, "True, False or None")

    def __repr__(self) -> str:
        return _redacted_repr(self, ("otlp_endpoint", "pushgateway_url"))


def _redacted_repr(obj, urls: tuple[str, ...]) -> str:
    """The dataclass's repr with its URLs shown by `redact_url` and no hidden fields."""
    shown = []
    for item in fields(obj):
        if not item.repr:
            continue
        value = getattr(obj, item.name)
        if item.name in urls and isinstance(value, str):
            value = redact_url(value)
        shown.append(f"{item.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(shown)})"


def _check_type(name: str, value, kind: type, what: str) -> None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"ExportOptions({name}=...) must be {what}, not {type(value).__name__}")


@dataclass
class OtlpTarget:
    """One signal's OTLP destination."""

    endpoint: str
    protocol: str = HTTP
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 10.0

    def describe(self) -> str:
        """The destination without its headers nor the credentials of its URL (for
        messages and run.json)."""
        return f"{redact_url(self.endpoint)} ({self.protocol})"

    def __repr__(self) -> str:
        return _redacted_repr(self, ("endpoint",))


@dataclass
class ExportSettings:
    """Where a run's spans, metrics and log records go besides the run directory."""

    otlp_traces: OtlpTarget | None = None
    otlp_metrics: OtlpTarget | None = None
    otlp_logs: OtlpTarget | None = None
    prometheus_port: int | None = None
    prometheus_host: str = "127.0.0.1"
    pushgateway_url: str | None = None
    # spans in OTLP's JSON file encoding, in the run directory (what `export --otlp` replays)
    otlp_json_file: bool = True

    def __repr__(self) -> str:
        return _redacted_repr(self, ("pushgateway_url",))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ExportSettings:
        data = dict(data)
        for name in ("otlp_traces", "otlp_metrics", "otlp_logs"):
            if data.get(name) is not None:
                data[name] = OtlpTarget(**data[name])
        return cls(**data)

    def describe(self) -> dict:
        """What is on, without secrets (for run.json)."""
        out = {}
        if self.otlp_traces:
            out["otlp_traces"] = self.otlp_traces.describe()
        if self.otlp_metrics:
            out["otlp_metrics"] = self.otlp_metrics.describe()
        if self.otlp_logs:
            out["otlp_logs"] = self.otlp_logs.describe()
        if self.prometheus_port is not None:
            out["prometheus"] = f"{self.prometheus_host}:{self.prometheus_port}"
        if self.pushgateway_url:
            out["pushgateway"] = redact_url(self.pushgateway_url)
        return out


def parse_headers(text: str | None) -> dict[str, str]:
    """`key=value,key2=value2` (values URL-encoded), as OTEL_EXPORTER_OTLP_HEADERS."""
    headers = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise SettingsError(
                "OTLP headers must be key=value pairs separated by commas "
                f"(got a part without '=' in {len(part)} characters)"
            )
        headers[unquote(name.strip()).lower()] = unquote(value.strip())
    return headers


def _env(name: str, env) -> str | None:
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def _exporters(value: str | None, allowed: frozenset[str], name: str) -> set[str] | None:
    if value is None:
        return None
    chosen = {v.strip().lower() for v in value.split(",") if v.strip()}
    unknown = chosen - allowed
    if unknown:
        raise SettingsError(
            f"{name}: unknown exporter {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(allowed))})"
        )
    return chosen


def _signal_endpoint(base: str | None, signal_path: str, protocol: str) -> str:
    """The endpoint of one signal from the general endpoint, as the OTLP spec joins them."""
    if protocol == GRPC:
        return base or DEFAULT_GRPC_ENDPOINT
    base = (base or DEFAULT_HTTP_ENDPOINT).rstrip("/")
    return f"{base}/{signal_path}"


def _target(signal: str, path: str, options: ExportOptions, env) -> OtlpTarget | None:
    upper = signal.upper()
    explicit = options.otlp_endpoint
    specific = _env(f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT", env)
    general = _env("OTEL_EXPORTER_OTLP_ENDPOINT", env)
    protocol = (
        options.otlp_protocol
        or _env(f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", env)
        or _env("OTEL_EXPORTER_OTLP_PROTOCOL", env)
        or HTTP
    )
    if protocol not in PROTOCOLS:
        raise SettingsError(
            f"OTLP protocol {protocol!r} is not supported (use {' or '.join(PROTOCOLS)})"
        )
    if explicit:
        endpoint = _signal_endpoint(explicit, path, protocol)
    elif specific:
        endpoint = specific  # a per-signal endpoint is used as given
    else:
        endpoint = _signal_endpoint(general, path, protocol)
    headers = options.otlp_headers
    if headers is None:
        headers = parse_headers(
            _env(f"OTEL_EXPORTER_OTLP_{upper}_HEADERS", env)
            or _env("OTEL_EXPORTER_OTLP_HEADERS", env)
        )
    timeout = _env(f"OTEL_EXPORTER_OTLP_{upper}_TIMEOUT", env) or _env(
        "OTEL_EXPORTER_OTLP_TIMEOUT", env
    )
    try:
        timeout_s = float(timeout) / 1000.0 if timeout else 10.0  # the variable is in ms
    except ValueError:
        raise SettingsError(
            f"OTEL_EXPORTER_OTLP_{upper}_TIMEOUT or OTEL_EXPORTER_OTLP_TIMEOUT must be "
            f"milliseconds, not {timeout!r}"
        ) from None
    return OtlpTarget(endpoint, protocol, dict(headers), timeout_s)


def export_settings(options: ExportOptions | None = None, env=None) -> ExportSettings:
    """The settings from `options` (None: not given), else the environment `env`
    (default `os.environ`); a bad variable raises SettingsError.

    >>> env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}
    >>> export_settings(env=env).otlp_traces.endpoint
    'http://otel:4318/v1/traces'
    """
    options = ExportOptions() if options is None else options
    env = os.environ if env is None else env
    traces = _exporters(
        options.traces_exporter or _env("OTEL_TRACES_EXPORTER", env),
        TRACES_EXPORTERS,
        "OTEL_TRACES_EXPORTER",
    )
    metrics = _exporters(
        options.metrics_exporter or _env("OTEL_METRICS_EXPORTER", env),
        METRICS_EXPORTERS,
        "OTEL_METRICS_EXPORTER",
    )
    logs = _exporters(
        options.logs_exporter or _env("OTEL_LOGS_EXPORTER", env),
        LOGS_EXPORTERS,
        "OTEL_LOGS_EXPORTER",
    )
    endpoint_set = bool(options.otlp_endpoint or _env("OTEL_EXPORTER_OTLP_ENDPOINT", env))
    trace_endpoint = endpoint_set or bool(_env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env))
    metric_endpoint = endpoint_set or bool(_env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", env))
    log_endpoint = endpoint_set or bool(_env("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", env))
    want_traces = "otlp" in traces if traces is not None else trace_endpoint
    want_metrics = "otlp" in metrics if metrics is not None else metric_endpoint
    want_logs = "otlp" in logs if logs is not None else log_endpoint

    port = options.prometheus_port
    if port is None and _env("SCALABLE_PROMETHEUS_PORT", env):
        try:
            port = int(_env("SCALABLE_PROMETHEUS_PORT", env))
        except ValueError:
            raise SettingsError("SCALABLE_PROMETHEUS_PORT must be a port number") from None
    if port is None and metrics is not None and "prometheus" in metrics:
        port = 9464  # the port OTel's Prometheus exporter listens on by default
    if port is not None and not 0 <= int(port) <= 65535:
        raise SettingsError(f"Prometheus port {port} is not a port number")
    return ExportSettings(
        otlp_traces=_target("traces", "v1/traces", options, env) if want_traces else None,
        otlp_metrics=_target("metrics", "v1/metrics", options, env) if want_metrics else None,
        otlp_logs=_target("logs", "v1/logs", options, env) if want_logs else None,
        prometheus_port=int(port) if port is not None else None,
        prometheus_host=options.prometheus_host
        or _env("SCALABLE_PROMETHEUS_HOST", env)
        or "127.0.0.1",
        pushgateway_url=options.pushgateway_url or _env("SCALABLE_PUSHGATEWAY_URL", env),
        otlp_json_file=_otlp_file(options.otlp_file, env),
    )


def _otlp_file(arg: bool | None, env) -> bool:
    if arg is not None:
        return bool(arg)
    value = (_env("SCALABLE_OTLP_FILE", env) or "on").lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise SettingsError(f"SCALABLE_OTLP_FILE must be on or off, not {value!r}")
