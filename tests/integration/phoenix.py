"""Arize Phoenix as a real OTLP trace receiver for tests, on 127.0.0.1 only.

    from tests.integration.phoenix import phoenix   # noqa: F401  (the fixture)

    def test_something(phoenix):
        ...export to phoenix.http_endpoint (OTLP/HTTP) or phoenix.grpc_endpoint...
        spans = phoenix.spans(trace_id_hex, expect=3)   # OTLP/JSON span dicts

The binary is $SCALABLE_PHOENIX, else .ci-venvs/phoenix/bin/phoenix under the repository,
else `phoenix` on PATH. Without one the tests are skipped, or fail when $SCALABLE_CI is
set. Install it in a virtual environment of its own (~850 MB; its pins must not
constrain ours):

    python -m venv .ci-venvs/phoenix && .ci-venvs/phoenix/bin/pip install arize-phoenix

One Phoenix serves a whole test session (it takes 10-25 s to start and ~450 MB); each
test reads back only its own trace ids. Phoenix keeps one copy of a span id (a second
export of the same span is accepted and ignored), reads `x-project-name` only over HTTP,
and gives times back as floating-point seconds (within a microsecond).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
INSTALL = "python -m venv .ci-venvs/phoenix && .ci-venvs/phoenix/bin/pip install arize-phoenix"
START_TIMEOUT_S = 90.0


def phoenix_binary() -> str | None:
    """Where the `phoenix` command is, or None."""
    explicit = os.environ.get("SCALABLE_PHOENIX", "").strip()
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    local = REPO / ".ci-venvs" / "phoenix" / "bin" / "phoenix"
    if os.access(local, os.X_OK):
        return str(local)
    return shutil.which("phoenix")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Phoenix:
    """A running `phoenix serve`: its OTLP endpoints and a reader of the spans it keeps."""

    def __init__(self, process: subprocess.Popen, port: int, grpc_port: int, log: Path):
        self.process = process
        self.port = port
        self.grpc_port = grpc_port
        self.log = log
        self.base_url = f"http://127.0.0.1:{port}"
        self.http_endpoint = f"{self.base_url}/v1/traces"  # OTLP/HTTP protobuf
        self.grpc_endpoint = f"http://127.0.0.1:{grpc_port}"  # OTLP/gRPC, plaintext
        self._session = requests.Session()

    def healthy(self) -> bool:
        try:
            return self._session.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def fetch(self, trace_id_hex: str, project: str = "default") -> list[dict]:
        """The spans Phoenix holds for one trace now (OTLP/JSON dicts), [] when none."""
        spans: list[dict] = []
        cursor = None
        while True:
            params = {"trace_id": trace_id_hex, "limit": 1000}
            if cursor:
                params["cursor"] = cursor
            response = self._session.get(
                f"{self.base_url}/v1/projects/{project}/spans/otlpv1", params=params, timeout=10
            )
            if response.status_code == 404:  # no such project: nothing arrived yet
                return spans
            response.raise_for_status()
            body = response.json()
            spans.extend(body.get("data") or [])
            cursor = body.get("next_cursor")
            if not cursor:
                return spans

    def spans(
        self,
        trace_id_hex: str,
        project: str = "default",
        expect: int = 1,
        timeout: float = 20.0,
    ) -> list[dict]:
        """Poll until at least `expect` spans of the trace have arrived; fail after
        `timeout` seconds, saying how many did."""
        deadline = time.monotonic() + timeout
        spans: list[dict] = []
        while True:
            spans = self.fetch(trace_id_hex, project)
            if len(spans) >= expect:
                return spans
            if self.process.poll() is not None:
                raise AssertionError(f"phoenix exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(spans)} of {expect} spans of trace {trace_id_hex} reached phoenix "
                    f"(project {project}) within {timeout} s"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        self._session.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_phoenix(binary: str, workdir: Path) -> Phoenix:
    """Start `phoenix serve` on free loopback ports and wait until it is healthy."""
    port, grpc_port = free_port(), free_port()
    while grpc_port == port:
        grpc_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update(
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        PHOENIX_WORKING_DIR=str(workdir),
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    log = workdir / "phoenix.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [binary, "serve"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Phoenix(process, port, grpc_port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.healthy():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"phoenix did not become healthy on port {port}:\n{tail}")
        time.sleep(0.2)
    return server


_shared: dict = {"server": None, "users": 0}


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory):
    """A running Phoenix for the test session (see the module docstring).

    Each test module that imports the fixture gets its own session-scoped copy of it
    from pytest; they share one server, stopped when the last of them is torn down.
    """
    binary = phoenix_binary()
    if binary is None:
        explicit = os.environ.get("SCALABLE_PHOENIX", "").strip()
        message = (
            f"SCALABLE_PHOENIX={explicit} is not an executable"
            if explicit
            else "Arize Phoenix (a real OTLP trace receiver) is not installed"
        ) + f": {INSTALL} (or set SCALABLE_PHOENIX to its phoenix binary)"
        if os.environ.get("SCALABLE_CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = _shared["server"]
    if server is None or server.process.poll() is not None:
        try:
            server = start_phoenix(binary, tmp_path_factory.mktemp("phoenix"))
        except RuntimeError as exc:
            pytest.fail(str(exc))
        _shared["server"] = server
    _shared["users"] += 1
    try:
        yield server
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["server"] = None
            server.stop()
