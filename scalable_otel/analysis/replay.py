"""Send a recorded run's spans to an OTLP endpoint, with their original ids and times.

A run records its spans in `traces.otlp.jsonl` (OTLP/JSON, one `ExportTraceServiceRequest`
a line; see `scalable_otel.exporters.otlp_json`). `replay(run_dir)` parses each line back
into that request and sends it as it is, over OTLP/HTTP (protobuf) or OTLP/gRPC, so the
backend shows the run as if it had been exported live: same trace id, span ids, parents,
start and end times, attributes, events and status. A run made without a collector can
be looked at in Jaeger, Tempo, Phoenix or any OTLP backend later.

- Endpoint, protocol and headers default to OpenTelemetry's variables, as a session's
  exporters read them (`OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`, `..._PROTOCOL`,
  `..._HEADERS`; see `scalable_otel.exporters.settings`); with none set, OTLP/HTTP to
  `http://localhost:4318/v1/traces`.
- OTLP/HTTP posts to the endpoint as given when it ends with `/v1/traces`, else to
  `<endpoint>/v1/traces`. OTLP/gRPC uses the endpoint's host and port: `http://` is
  plaintext, `https://` TLS; without a scheme TLS unless `OTEL_EXPORTER_OTLP_INSECURE`
  (or `OTEL_EXPORTER_OTLP_TRACES_INSECURE`) is `true`, as the OTLP gRPC exporter does.
- Lines that do not parse (a torn last line of a crashed run, a corrupt line) are
  skipped and counted in `bad_lines`. A line bigger than 3 MiB of protobuf is sent as
  several requests (gRPC servers refuse messages over 4 MiB by default).
- Retryable answers (HTTP 429, 502, 503, 504; gRPC UNAVAILABLE, RESOURCE_EXHAUSTED,
  DEADLINE_EXCEEDED, ABORTED) and connection failures are retried twice (after 0.5 s and
  1 s); then, as for any other error status, `ReplayError` says in one line which
  endpoint failed and how, and how many requests had been sent before.
- Spans the backend reports as rejected (OTLP partial success) are counted in
  `rejected_spans`. Sending the same run twice sends its spans twice: whether the
  backend keeps both copies is up to the backend.

Why this module opens `traces.otlp.jsonl` itself, not through `load.Run`: the file is
the OTLP exporter's, not one of the run's event files that the answers read. Each line
is a request sent as it was recorded: nothing of `Run` applies to it (no counts rule,
no Scalable 2.0 beta names, no columnar copy), and its lines are OTLP/JSON, decoded by
the exporter's own `decode_otlp_json` (tests/test_layers.py names it as an exception).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ..args import redact_url
from ..errors import ScalableError
from ..exporters.otlp_json import TRACES_FILE, decode_otlp_json
from ..exporters.settings import GRPC, HTTP, ExportOptions, SettingsError, export_settings

__all__ = ["MAX_REQUEST_BYTES", "TRACES_FILE", "ReplayError", "replay", "resolve_endpoint"]

MAX_REQUEST_BYTES = 3 * 1024 * 1024
RETRY_DELAYS_S = (0.5, 1.0)
_HTTP_RETRYABLE = {429, 502, 503, 504}
_GRPC_RETRYABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"}
_TRACES_PATH = "/v1/traces"


class ReplayError(ScalableError):
    """A run's spans could not be sent; the one-line message names the endpoint."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_endpoint(
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: dict | None = None,
    env=None,
) -> tuple[str, str, dict[str, str]]:
    """(URL or gRPC endpoint, protocol, headers) from the arguments, else the OTLP
    variables of `env` (default `os.environ`)."""
    try:
        options = ExportOptions(
            traces_exporter="otlp",  # on, whatever OTEL_TRACES_EXPORTER says
            metrics_exporter="none",  # not asked: its variables must not fail a replay
            prometheus_port=0,
            otlp_protocol=protocol,
            otlp_headers=None if headers is None else {str(k): str(v) for k, v in headers.items()},
        )
        settings = export_settings(options, env)
    except SettingsError as exc:
        raise ReplayError(f"cannot send spans: {exc}") from None
    target = settings.otlp_traces
    url = target.endpoint
    if endpoint:
        url = endpoint.strip()
        if target.protocol == HTTP:
            url = url.rstrip("/")
            if not url.endswith(_TRACES_PATH):
                url += _TRACES_PATH
    if target.protocol == HTTP and urlsplit(url).scheme not in ("http", "https"):
        raise ReplayError(
            f"OTLP/HTTP endpoint {redact_url(url)} must start with http:// or https://"
        )
    return url, target.protocol, {str(k).lower(): str(v) for k, v in target.headers.items()}


def _span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def _split(request: ExportTraceServiceRequest, limit: int) -> Iterator[ExportTraceServiceRequest]:
    """The request itself, or several of at most about `limit` bytes holding its spans
    under copies of their resource and scope (a span bigger than that goes alone)."""
    if request.ByteSize() <= limit:
        yield request
        return
    part, size = ExportTraceServiceRequest(), 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            holder = None
            for span in ss.spans:
                span_size = span.ByteSize() + 8
                if size and size + span_size > limit:
                    yield part
                    part, size, holder = ExportTraceServiceRequest(), 0, None
                if holder is None:
                    new_rs = part.resource_spans.add()
                    new_rs.resource.CopyFrom(rs.resource)
                    new_rs.schema_url = rs.schema_url
                    holder = new_rs.scope_spans.add()
                    holder.scope.CopyFrom(ss.scope)
                    holder.schema_url = ss.schema_url
                    size += rs.resource.ByteSize() + ss.scope.ByteSize() + 16
                holder.spans.add().CopyFrom(span)
                size += span_size
    if size:
        yield part


def _rejected(response: ExportTraceServiceResponse | None) -> int:
    if response is None or not response.HasField("partial_success"):
        return 0
    return int(response.partial_success.rejected_spans)


class _HttpSender:
    def __init__(self, url: str, headers: dict[str, str], timeout_s: float):
        import requests

        self._requests = requests
        self.url, self.timeout_s = url, timeout_s
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.session.headers["Content-Type"] = "application/x-protobuf"

    def send(self, body: bytes) -> tuple[int | None, str | None, bool, float | None]:
        """(rejected spans, error, retryable, retry after seconds)"""
        requests = self._requests
        try:
            response = self.session.post(self.url, data=body, timeout=self.timeout_s)
        except requests.exceptions.Timeout:
            return None, f"no answer within {self.timeout_s:g} s", True, None
        except requests.exceptions.ConnectionError as exc:
            return None, _connection_reason(exc), True, None
        except requests.exceptions.RequestException as exc:
            return None, _one_line(f"{type(exc).__name__}: {exc}"), False, None
        if 200 <= response.status_code < 300:
            try:
                parsed = ExportTraceServiceResponse.FromString(response.content)
            except Exception:  # a JSON or empty body: nothing to count
                parsed = None
            return _rejected(parsed), None, False, None
        reason = f"HTTP {response.status_code} {response.reason or ''}".strip()
        text = _error_text(response)
        if text == (response.reason or ""):
            text = ""
        retry_after = None
        try:
            retry_after = min(float(response.headers.get("Retry-After", "")), 5.0)
        except ValueError:
            pass
        return (
            None,
            f"{reason}: {text}" if text else reason,
            response.status_code in _HTTP_RETRYABLE,
            retry_after,
        )

    def close(self) -> None:
        self.session.close()


def _error_text(response) -> str:
    """What an error answer says: OTLP/HTTP sends a protobuf `google.rpc.Status`."""
    kind = response.headers.get("Content-Type", "")
    if "protobuf" in kind:
        try:
            from google.rpc.status_pb2 import Status

            return _one_line(Status.FromString(response.content).message, 200)
        except Exception:
            return ""
    if kind.startswith("text/") or "json" in kind:
        return _one_line(response.text or "", 200)
    return ""


def _connection_reason(exc: Exception) -> str:
    """'Connection refused' rather than urllib3's paragraph."""
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    if match:
        return match.group(1).strip()
    return _one_line(f"connection failed ({type(exc).__name__})")


def _grpc_target(endpoint: str, env) -> tuple[str, bool]:
    """(host:port, use TLS) as the OTLP gRPC exporter reads an endpoint."""
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ReplayError(
                f"OTLP/gRPC endpoint {redact_url(endpoint)} must be host:port, http://host:port "
                "(plaintext) or https://host:port (TLS)"
            )
        return parts.netloc, parts.scheme == "https"
    insecure = env.get("OTEL_EXPORTER_OTLP_TRACES_INSECURE") or env.get(
        "OTEL_EXPORTER_OTLP_INSECURE", ""
    )
    return endpoint.rstrip("/"), insecure.strip().lower() != "true"


class _GrpcSender:
    def __init__(self, endpoint: str, headers: dict[str, str], timeout_s: float, env):
        import grpc
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
            TraceServiceStub,
        )

        self._grpc = grpc
        target, secure = _grpc_target(endpoint, env)
        if secure:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials())
        else:
            self.channel = grpc.insecure_channel(target)
        self.stub = TraceServiceStub(self.channel)
        self.metadata = tuple(headers.items()) or None
        self.timeout_s = timeout_s
        # a plaintext receiver answers a TLS handshake with an unhelpful error
        self.hint = (
            " (an endpoint without a scheme uses TLS: write http://HOST:PORT for plaintext)"
            if secure and "://" not in endpoint
            else ""
        )

    def send(self, request: ExportTraceServiceRequest):
        try:
            response = self.stub.Export(request, metadata=self.metadata, timeout=self.timeout_s)
        except self._grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            name = getattr(code, "name", "ERROR")
            details = exc.details() if hasattr(exc, "details") else str(exc)
            error = _one_line(f"gRPC {name}: {details}") + self.hint
            return None, error, name in _GRPC_RETRYABLE, None
        return _rejected(response), None, False, None

    def close(self) -> None:
        self.channel.close()


def replay(
    run_dir: str | os.PathLike,
    endpoint: str | None = None,
    protocol: str | None = None,
    headers: dict | None = None,
    timeout_s: float = 10.0,
) -> dict:
    """Send the spans a run recorded in `traces.otlp.jsonl` to an OTLP endpoint.

    Arguments left as None come from the OTLP environment variables (see the module
    docstring). Returns what was sent: `run_id`, `endpoint` (the URL or gRPC endpoint
    used), `protocol`, `requests`, `spans`, `bad_lines` (lines skipped) and
    `rejected_spans` (spans the backend said it refused).

    Raises `ReplayError` (one line naming the endpoint) when the run has no such file,
    the endpoint cannot be reached or answers with an error.

    >>> replay(".scalable/runs/run-20261128T175439Z-quickstart-1a02c988",
    ...        "http://127.0.0.1:4318")                                  # doctest: +SKIP
    {'run_id': 'run-20261128T175439Z-quickstart-1a02c988',
     'endpoint': 'http://127.0.0.1:4318/v1/traces', 'protocol': 'http/protobuf',
     'requests': 4, 'spans': 92, 'bad_lines': 0, 'rejected_spans': 0}
    """
    env = os.environ
    run_dir = Path(run_dir)
    url, protocol, headers = resolve_endpoint(endpoint, protocol, headers, env)
    shown = redact_url(url)  # what messages and the result name
    path = run_dir / TRACES_FILE
    if not path.is_file():
        raise ReplayError(
            f"nothing sent to {shown}: {run_dir.name} has no {TRACES_FILE} "
            "(a run recorded without the OTLP/JSON span file, or not a run directory)"
        )
    result = {
        "run_id": run_dir.name,
        "endpoint": shown,
        "protocol": protocol,
        "requests": 0,
        "spans": 0,
        "bad_lines": 0,
        "rejected_spans": 0,
    }
    if protocol == GRPC:
        sender = _GrpcSender(url, headers, timeout_s, env)
    else:
        sender = _HttpSender(url, headers, timeout_s)
    try:
        with open(path, "rb") as lines:
            for raw in lines:
                if not raw.strip():
                    continue
                try:
                    request = decode_otlp_json(raw)
                except ValueError:
                    result["bad_lines"] += 1
                    continue
                for part in _split(request, MAX_REQUEST_BYTES):
                    count = _span_count(part)
                    if not count:
                        continue
                    result["rejected_spans"] += _send(sender, part, url, protocol, result)
                    result["requests"] += 1
                    result["spans"] += count
    except OSError as exc:
        raise ReplayError(
            f"stopped sending to {shown}: cannot read {path} ({exc.strerror or exc})"
        ) from None
    finally:
        sender.close()
    return result


def _send(sender, request: ExportTraceServiceRequest, url: str, protocol: str, done) -> int:
    """Send one request, retrying what may pass later; the spans it rejected."""
    payload = request.SerializeToString() if protocol == HTTP else request
    for attempt in range(len(RETRY_DELAYS_S) + 1):
        rejected, error, retryable, retry_after = sender.send(payload)
        if error is None:
            return rejected or 0
        if not retryable or attempt == len(RETRY_DELAYS_S):
            break
        time.sleep(retry_after if retry_after is not None else RETRY_DELAYS_S[attempt])
    before = f" ({done['requests']} requests of {done['spans']} spans were sent before)"
    raise ReplayError(
        f"cannot send spans to {redact_url(url)} ({protocol}): {error}"
        + (before if done["requests"] else "")
    )
