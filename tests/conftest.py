import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent


def read_jsonl(path):
    """Every line of a JSONL file, parsed (a test wants them all well-formed)."""
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


def events(run_dir, file="tasks.jsonl", event=None):
    lines = read_jsonl(Path(run_dir) / file)
    return [e for e in lines if event is None or e["event"] == event]


def wait_for(condition, timeout=15.0, interval=0.05):
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def project_dir(tmp_path, monkeypatch):
    """An empty project directory as the working directory, with no telemetry settings."""
    for name in (
        "SCALABLE_RUNS_DIR",
        "SCALABLE_CACHE_DIR",
        "SCALABLE_TELEMETRY",
        "OTEL_SDK_DISABLED",
        "SCALABLE_TARGET",
        "SCALABLE_MANIFEST",
        "SLURM_JOB_ID",  # inside an allocation a session would choose a slurm target
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory):
    """A project directory with two runs of examples/quickstart.py (the second hits the cache)."""
    root = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    for _ in range(2):
        subprocess.run(
            [sys.executable, str(REPO / "examples" / "quickstart.py"), "--scenarios", "30"],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
            timeout=240,
        )
    return root


@pytest.fixture(scope="session")
def demo_run(demo_project):
    """The first demo run's directory."""
    from scalable_otel.rundir import list_runs

    return list_runs(demo_project / ".scalable" / "runs")[0]


@pytest.fixture(scope="module")
def cluster():
    """One worker process for the whole module: the clients of each test come and go."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture
def runs_root(project_dir):
    """Where an instrumentor's runs go in a test's project directory."""
    return project_dir / "runs"


@pytest.fixture
def instrumentor():
    """A DaskInstrumentor, uninstrumented again at the end of the test."""
    from scalable_otel.instrumentor import DaskInstrumentor

    instrumentor = DaskInstrumentor()
    yield instrumentor
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()


def unit_run_config(run_dir, **fields):
    """The `RunConfig` of a run recorded straight from records in a unit test."""
    from scalable_otel.recording import RunConfig

    defaults = dict(
        run_dir=str(run_dir),
        run_id="run-20260520T035200Z-unit-a1b2c3d4",
        project="unit",
        target="local",
        provider="local",
        started=100.0,
        flush_interval=0.05,
    )
    return RunConfig(**{**defaults, **fields})
