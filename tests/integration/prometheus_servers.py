"""Real Prometheus and Pushgateway servers for tests (Debian's `prometheus` and
`prometheus-pushgateway`), each on 127.0.0.1, on a free port, with its own temporary
config and storage, stopped by the test that started it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

PROMETHEUS = "prometheus"
PUSHGATEWAY = "prometheus-pushgateway"
SCRAPE_INTERVAL = "1s"
SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "exporters" / "prometheus" / "prometheus.yml"


def require(*binaries: str) -> None:
    """Skip (fail under SCALABLE_CI) when a server binary is not installed."""
    missing = [b for b in binaries if shutil.which(b) is None]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} not found: install Debian's prometheus and "
        "prometheus-pushgateway (apt-get install prometheus prometheus-pushgateway)"
    )
    if os.environ.get("SCALABLE_CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Server:
    """One server process; `url` is its base URL."""

    def __init__(self, name: str, argv, port: int, log: Path):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = open(log, "wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listening(self) -> bool:
        """Whether this process (not another that took the port) listens on the port."""
        try:
            connections = psutil.Process(self.process.pid).net_connections("tcp")
        except psutil.Error:
            return False
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == self.port for c in connections
        )

    def wait_ready(self, timeout: float = 20.0) -> bool:
        """True once /-/ready answers 200; False if the process ended first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if self.listening() and http_get(f"{self.url}/-/ready", timeout=1.0)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        self._log_file.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log_file.close()


def _start(cls, name: str, argv_for_port, log: Path, tries: int = 3):
    """Start a server on a free port; another port if it lost a race for this one."""
    for _ in range(tries):
        port = free_port()
        server = cls(name, argv_for_port(port), port, log)
        if server.wait_ready():
            return server
        tail = server.log_tail()
        server.stop()
    raise AssertionError(f"{name} did not start:\n{tail}")


def start_pushgateway(directory: Path) -> Server:
    directory.mkdir(parents=True, exist_ok=True)
    return _start(
        Server,
        PUSHGATEWAY,
        lambda port: [
            shutil.which(PUSHGATEWAY),
            f"--web.listen-address=127.0.0.1:{port}",
            # Debian's default persists to /var/lib/prometheus/pushgateway.data: not here
            f"--persistence.file={directory / 'pushgateway.data'}",
            "--log.level=warn",
        ],
        directory / "pushgateway.log",
    )


def prometheus_config(
    sdk_targets=(), pushgateway: str | None = None, collector: str | None = None
) -> dict:
    """The shipped exporters/prometheus/prometheus.yml with these targets and a 1 s interval.

    Its jobs are kept as they are (names, honor_labels); a job given no target is left out.
    """
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    targets = {
        "scalable": list(sdk_targets),
        "pushgateway": [pushgateway] if pushgateway else [],
        "collector": [collector] if collector else [],
    }
    jobs = []
    for job in config["scrape_configs"]:
        if targets.get(job["job_name"]):
            job = {k: v for k, v in job.items() if k not in ("scrape_interval", "scrape_timeout")}
            job["static_configs"] = [{"targets": targets[job["job_name"]]}]
            jobs.append(job)
    config["global"] = {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL}
    config["scrape_configs"] = jobs
    return config


class Prometheus(Server):
    def query(self, promql: str) -> list[dict]:
        """The result of an instant query: [{"metric": {labels}, "value": float}, ...]."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http_get(url, timeout=5.0)
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {status} {answer}")
        return [
            {"metric": r["metric"], "value": float(r["value"][1])} for r in answer["data"]["result"]
        ]

    def wait_for(self, promql: str, condition=bool, timeout: float = 15.0) -> list[dict]:
        """Poll a query until `condition(result)` holds; fail with the last result."""
        deadline = time.monotonic() + timeout
        result = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if condition(result):
                return result
            time.sleep(0.2)
        raise AssertionError(f"{promql!r} gave {result} after {timeout}s")


def start_prometheus(directory: Path, config: dict) -> Prometheus:
    directory.mkdir(parents=True, exist_ok=True)
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    return _start(
        Prometheus,
        PROMETHEUS,
        lambda port: [
            shutil.which(PROMETHEUS),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        directory / "prometheus.log",
    )
