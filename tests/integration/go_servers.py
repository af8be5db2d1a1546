"""Real Jaeger v2 and a real OpenTelemetry Collector for tests, built from their Go
modules by `servers/build` (which `.ci/run` runs), each started by the test on
127.0.0.1, on free ports, with its own config and folder.

The binaries are $SCALABLE_JAEGER and $SCALABLE_OTELCOL, else `.ci-servers/bin/jaeger`
and `.ci-servers/bin/otelcol-scalable` under the repository. Without one the tests are
skipped, or fail when $SCALABLE_CI is set. Jaeger runs exporters/jaeger/jaeger.yaml, and
serves its web UI from $SCALABLE_JAEGER_UI when that names a built jaeger-ui folder
(see `require_jaeger_ui`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
from pathlib import Path

import psutil
import pytest
import yaml

from tests.integration.prometheus_servers import free_port, http_get

REPO = Path(__file__).resolve().parents[2]
BUILD = "build them with servers/build (needs Go and the Go module proxy)"


def binary(variable: str, name: str) -> str:
    """The server's binary: $variable, else .ci-servers/bin/<name>; skip (fail under
    SCALABLE_CI) when there is none."""
    explicit = os.environ.get(variable, "").strip()
    path = Path(explicit) if explicit else REPO / ".ci-servers" / "bin" / name
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    message = f"{path} is not an executable: {BUILD}, or set {variable} to its binary"
    if os.environ.get("SCALABLE_CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_until(condition, timeout: float, what: str, describe=lambda: ""):
    """Poll `condition()` until it returns something true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s {describe()}")


class GoServer:
    """One server process started from a config file; `ports` are what it listens on."""

    name = "server"

    def __init__(self, argv, ports: dict[str, int], folder: Path, env=None):
        self.argv = list(argv)
        self.ports = ports
        self.folder = folder
        self.log = folder / f"{self.name}.log"
        self.env = env or {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self._spawn()

    def _spawn(self) -> None:
        self._log_file = open(self.log, "ab")
        self._log_start = self._log_file.tell()  # where this process's lines begin
        self.process = subprocess.Popen(
            self.argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,
            env=self.env,
        )

    def listening(self) -> bool:
        """Whether this process (not another that took a port) listens on all its ports."""
        try:
            connections = psutil.Process(self.process.pid).net_connections("tcp")
        except psutil.Error:
            return False
        ours = {c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN}
        return set(self.ports.values()) <= ours

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """True once it listens on every port; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.listening():
                return True
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def url(self, port_name: str) -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log_file.close()


def _start(cls, binary_path: str, config_for_ports, port_names, folder: Path, tries: int = 3):
    """Start a server with free ports; other ports if it lost a race for one."""
    folder.mkdir(parents=True, exist_ok=True)
    tail = ""
    for attempt in range(tries):
        ports = {name: free_port() for name in port_names}
        config = folder / f"{cls.name}-{attempt}.yaml"
        config.write_text(yaml.safe_dump(config_for_ports(ports), sort_keys=False))
        server = cls([binary_path, "--config", str(config)], ports, folder)
        if server.wait_ready():
            return server
        tail = server.log_tail()
        server.stop()
    raise AssertionError(f"{cls.name} did not start:\n{tail}")


# --- Jaeger --------------------------------------------------------------------------------
# Jaeger's web UI is not in its Go module (a Jaeger built from it serves a placeholder
# page) and no registry these machines reach serves it: npm has no @jaegertracing/jaeger-ui
# and the Go module proxy refuses github.com/jaegertracing/jaeger-ui. Built by hand from
# its repository (exporters/jaeger/README.md), it is found through $SCALABLE_JAEGER_UI.
NO_JAEGER_UI = (
    "Jaeger's web UI is not built: its Go module serves a placeholder page and no package "
    "registry has the UI; build jaeger-ui (exporters/jaeger/README.md) and set "
    "SCALABLE_JAEGER_UI to its build folder"
)


def jaeger_ui_assets() -> Path | None:
    """Jaeger's built web UI: $SCALABLE_JAEGER_UI, when it holds an index.html."""
    explicit = os.environ.get("SCALABLE_JAEGER_UI", "").strip()
    path = Path(explicit) if explicit else None
    return path if path is not None and (path / "index.html").is_file() else None


def require_jaeger_ui() -> Path:
    """The UI's assets; skip without them, on CI too (see NO_JAEGER_UI)."""
    path = jaeger_ui_assets()
    if path is None:
        pytest.skip(NO_JAEGER_UI)
    return path


SHIPPED_JAEGER_CONFIG = REPO / "exporters" / "jaeger" / "jaeger.yaml"


def jaeger_config(ports: dict[str, int]) -> dict:
    """exporters/jaeger/jaeger.yaml (Jaeger v2 all-in-one: OTLP in, memory storage, the
    query API and UI) on these loopback ports, with the real UI when
    `jaeger_ui_assets()` finds it."""
    at = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    config = yaml.safe_load(SHIPPED_JAEGER_CONFIG.read_text())
    protocols = config["receivers"]["otlp"]["protocols"]
    protocols["grpc"]["endpoint"] = at["grpc"]
    protocols["http"]["endpoint"] = at["http"]
    extensions = config["extensions"]
    extensions["healthcheckv2"]["http"]["endpoint"] = at["health"]
    query = extensions["jaeger_query"]
    query["http"]["endpoint"] = at["query"]
    query["grpc"]["endpoint"] = at["query_grpc"]
    assets = jaeger_ui_assets()
    if assets is not None:
        query["ui"] = {"assets_path": str(assets.resolve())}
    return config


class Jaeger(GoServer):
    """Jaeger v2: `otlp_http` and `otlp_grpc` take spans; `api` reads them back."""

    name = "jaeger"

    @property
    def otlp_http(self) -> str:
        return self.url("http")

    @property
    def otlp_grpc(self) -> str:
        return self.url("grpc")

    @property
    def ui(self) -> str:
        return self.url("query")

    def api(self, path: str, **params) -> dict:
        """One answer of Jaeger's query API (`/api/...`), as JSON."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.ui}/api/{path}{query}", timeout=10.0)
        if status != 200:
            raise AssertionError(f"Jaeger /api/{path} answered {status}: {body[:300]!r}")
        return json.loads(body)

    def trace(self, trace_id_hex: str, spans: int, timeout: float = 30.0) -> dict:
        """The trace of that id once it holds at least `spans` spans (Jaeger's JSON:
        {"traceID", "spans": [...], "processes": {...}})."""

        def found():
            status, body = http_get(f"{self.ui}/api/traces/{trace_id_hex}", timeout=10.0)
            if status != 200:
                return None
            data = json.loads(body).get("data") or []
            return data[0] if data and len(data[0]["spans"]) >= spans else None

        return wait_until(found, timeout, f"{spans} spans of trace {trace_id_hex} in Jaeger")


def start_jaeger(folder: Path) -> Jaeger:
    return _start(
        Jaeger,
        binary("SCALABLE_JAEGER", "jaeger"),
        jaeger_config,
        ("grpc", "http", "query", "query_grpc", "health"),
        folder,
    )


@pytest.fixture
def jaeger(tmp_path):
    server = start_jaeger(tmp_path / "jaeger")
    yield server
    server.stop()


# --- the OpenTelemetry Collector -----------------------------------------------------------
class Collector(GoServer):
    """The Collector built by servers/build, run with a config the test gives."""

    name = "otelcol"

    def restart(self, timeout: float = 60.0) -> None:
        """Start it again on the same ports with the same config (after `stop`)."""
        self._spawn()
        if not self.wait_ready(timeout):
            raise AssertionError(f"the Collector did not start again:\n{self.log_tail()}")


def start_collector(folder: Path, config_for_ports, port_names=("grpc", "http")) -> Collector:
    """A Collector whose config is `config_for_ports({name: port})`; it is ready once it
    listens on every named port. Its own metrics are off (no port 8888)."""

    def config(ports):
        result = config_for_ports(ports)
        telemetry = result.setdefault("service", {}).setdefault("telemetry", {})
        telemetry.setdefault("metrics", {"level": "none"})
        telemetry.setdefault("logs", {"level": "warn"})
        return result

    return _start(
        Collector, binary("SCALABLE_OTELCOL", "otelcol-scalable"), config, port_names, folder
    )


def otlp_receiver(ports: dict[str, int]) -> dict:
    """The Collector's OTLP receiver on the `grpc` and `http` ports."""
    return {
        "otlp": {
            "protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{ports['grpc']}"},
                "http": {"endpoint": f"127.0.0.1:{ports['http']}"},
            }
        }
    }


def read_otlp_json_lines(path: Path) -> list[dict]:
    """The file exporter's OTLP JSON lines (one export request a line) written whole so
    far ([] before any). The exporter writes a request, then its newline, through a
    buffer flushed at any byte: the last line may be a whole request still waiting for
    its newline, or a torn one (not read until it is whole)."""
    if not path.exists():
        return []
    *whole, last = path.read_bytes().split(b"\n")
    requests = [json.loads(raw) for raw in whole if raw.strip()]
    if last.strip():
        try:
            requests.append(json.loads(last))
        except ValueError:  # torn: an object's prefix is never a whole JSON object
            pass
    return requests


# --- a shipped Collector config, run as it is ----------------------------------------------
COLLECTOR_READY = "Everything is ready"
# The Collector's own metrics would listen on 127.0.0.1:8888 in every Collector: off.
NO_OWN_METRICS = "yaml:service::telemetry::metrics::level: none"


class ShippedCollector(Collector):
    """The Collector run with config files as they are (`--config` each, then
    NO_OWN_METRICS), their `${env:NAME}` set by the test in `env`."""

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """True once it listens on every port and its log says it is ready (a config with
        no ports, such as a filelog receiver's, has only the latter); False if it ended."""
        if not super().wait_ready(timeout):
            return False

        def ready():
            if self.process.poll() is not None:
                return "ended"
            self._log_file.flush()
            with open(self.log, "rb") as log:
                log.seek(self._log_start)
                return COLLECTOR_READY.encode() in log.read() and "ready"

        return wait_until(ready, timeout, "the Collector's ready line", self.log_tail) == "ready"


def start_shipped_collector(
    folder: Path, config_files, env_for_ports, port_names=(), tries: int = 3
) -> ShippedCollector:
    """A Collector running the given config files as they are, with the environment
    variables `env_for_ports({name: free port})` (beside ours, without OTEL_*)."""
    binary_path = binary("SCALABLE_OTELCOL", "otelcol-scalable")
    folder.mkdir(parents=True, exist_ok=True)
    argv = [binary_path]
    for config in config_files:
        argv += ["--config", str(config)]
    argv += ["--config", NO_OWN_METRICS]
    tail = ""
    for _ in range(tries):
        ports = {name: free_port() for name in port_names}
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(env_for_ports(ports))
        server = ShippedCollector(argv, ports, folder, env)
        if server.wait_ready():
            return server
        tail = server.log_tail()
        server.stop()
    raise AssertionError(f"the Collector did not start:\n{tail}")


def log_records(path: Path) -> list[dict]:
    """Every log record of a file exporter's OTLP JSON lines, each with its `resource`
    attributes (as plain values) beside the record's own fields."""
    records = []
    for request in read_otlp_json_lines(path):
        for resource_logs in request.get("resourceLogs", []):
            resource = attributes(resource_logs.get("resource", {}).get("attributes", []))
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    records.append({**record, "resource": resource})
    return records


def attributes(key_values: list[dict]) -> dict:
    """OTLP JSON attributes ([{"key", "value"}]) as a plain dict."""
    return {kv["key"]: any_value(kv.get("value", {})) for kv in key_values}


def any_value(value: dict):
    """An OTLP JSON AnyValue as the plain value (None for an empty one)."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [any_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return attributes(value["kvlistValue"].get("values", []))
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def collector_complaints(server: GoServer) -> list[str]:
    """The warning and error lines of a Collector's log (a deprecated key, a failed
    export, ...)."""
    server._log_file.flush()
    lines = server.log.read_text(errors="replace").splitlines()
    return [line for line in lines if "\twarn\t" in line or "\terror\t" in line]
