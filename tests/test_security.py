"""Security defaults, checked on a real run: owner-only files whatever the umask, no
environment or secret argument in what is written, and nothing unpickled that the SDK
did not write and verify. Secrets planted in every other place a run takes them from
(span exceptions in tasks, URLs, headers), checked in every file, export, OTLP receiver
and print: tests/test_secrets_everywhere.py."""

import ast
import os
import stat
from pathlib import Path

import pytest

from scalable_otel import RecordingOptions, Redaction, ScalableSession, cacheable
from scalable_otel.analysis.export import export_parquet
from scalable_otel.analysis.html import write_html_report
from scalable_otel.args import REDACTED
from scalable_otel.exporters.columnar import write_columnar_copy
from tests import workloads
from tests.conftest import REPO, events

ENV_SECRET = "env-secret-4f1c9e"
ARG_SECRET = "arg-secret-77ab21"


@cacheable
def cached_square(x):
    return x * x


@pytest.fixture
def open_umask():
    """A umask that would leave new files readable and writable by everyone."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.fixture
def recorded(project_dir, open_umask, monkeypatch):
    monkeypatch.setenv("SCALABLE_PROJECT_TOKEN", ENV_SECRET)
    monkeypatch.setenv("DATABASE_URL", f"postgres://ann:{ENV_SECRET}@db/x")
    with ScalableSession(
        n_workers=1, threads_per_worker=1, recording=RecordingOptions(flush_interval=0.05)
    ) as session:
        futures = session.map(workloads.add, [1, 2], [3, 4])
        session.submit(workloads.add, 5, b=ARG_SECRET.__len__()).result()
        session.submit(workloads.inc, 1, pure=False).result()
        assert session.gather(futures) == [4, 6]
        secret_call = session.submit(workloads.connect, "db", password=ARG_SECRET)
        assert secret_call.result() == "connected to db"
        assert cached_square(3) == 9 and cached_square(3) == 9
        failing = session.submit(workloads.fail_connecting, f"https://ann:{ARG_SECRET}@example.org")
        with pytest.raises(ConnectionError):
            failing.result()
    write_columnar_copy(session.run_dir, min_bytes=0)  # the copy made for large runs
    # what the user exports, into folders that do not exist yet
    write_html_report(session.run_dir, project_dir / ".scalable" / "reports" / "run.html")
    export_parquet(session.run_dir, project_dir / ".scalable" / "exports" / "parquet")
    return session


def test_run_files_and_folders_are_for_their_owner_only(recorded):
    root = recorded.run_dir.parent.parent  # .scalable
    paths = [p for p in root.rglob("*")]
    paths += [recorded.cache_dir, *recorded.cache_dir.rglob("*")]
    assert any(p.name == "tasks.jsonl" for p in paths)
    assert any(p.suffix == ".parquet" for p in paths)
    assert any(p.suffix == ".entry" for p in paths)
    assert any(p.suffix == ".html" for p in paths)
    for path in [recorded.run_dir.parent, *paths]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_no_environment_value_or_secret_argument_is_written(recorded):
    written = b"".join(p.read_bytes() for p in recorded.run_dir.rglob("*") if p.is_file())
    for secret in (ENV_SECRET, ARG_SECRET):
        assert secret.encode() not in written
    assert b"SCALABLE_PROJECT_TOKEN" not in written and b"DATABASE_URL" not in written
    assert b'"password":"[redacted]"' in (recorded.run_dir / "tasks.jsonl").read_bytes()
    (failure,) = events(recorded.run_dir, "failures.jsonl")
    assert "https://ann:[redacted]@example.org" in failure["error_message"]


def test_only_the_cache_unpickles_and_only_after_verifying():
    """Every call that turns bytes into objects by pickle, in the whole package."""
    loaders = {"loads", "load", "Unpickler"}
    found = []
    for path in sorted((REPO / "scalable_otel").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in loaders
                and isinstance(node.value, ast.Name)
                and node.value.id in {"pickle", "cloudpickle", "dill", "marshal", "shelve"}
            ):
                found.append((path.relative_to(REPO).as_posix(), node.lineno))
    assert [file for file, _ in found] == ["scalable_otel/cache.py"]
    source = Path(REPO / "scalable_otel" / "cache.py").read_text()
    load = source[source.index("    def load(") : source.index("    def save(")]
    assert load.index("hmac.compare_digest") < load.index("pickle.loads")


def test_the_user_redacts_more_and_it_reaches_errors_too(project_dir):
    with ScalableSession(
        n_workers=1,
        threads_per_worker=1,
        redaction=Redaction(names=["patient_id"], values=[r"MRN-\d{6}"]),
    ) as session:
        assert session.submit(workloads.add, 1, 2).result() == 3
        ward = session.submit(workloads.connect, "MRN-123456 ward 3")
        failing = session.submit(workloads.fail_connecting, "db for MRN-654321")
        with pytest.raises(ConnectionError):
            failing.result()
        ward.result()
    quiet_args = Redaction(record_args=False)
    with ScalableSession(n_workers=1, threads_per_worker=1, redaction=quiet_args) as quiet:
        assert quiet.submit(workloads.add, 1, 2).result() == 3
    written = b"".join(p.read_bytes() for p in session.run_dir.rglob("*") if p.is_file())
    assert b"MRN-123456" not in written and b"MRN-654321" not in written
    (failure,) = events(session.run_dir, "failures.jsonl")
    assert failure["error_message"] == "cannot reach db for [redacted]"
    submitted = events(session.run_dir, event="task_submitted")
    assert {"host": REDACTED} in [e["args"] for e in submitted]
    assert [e["args"] for e in events(quiet.run_dir, event="task_submitted")] == [None]


def test_a_patient_id_argument_is_redacted_by_name(project_dir):
    def admit(patient_id, ward):
        return ward

    redaction = Redaction(names=["patient_id"])
    with ScalableSession(n_workers=1, threads_per_worker=1, redaction=redaction) as s:
        assert s.submit(workloads.add, 1, 2).result() == 3
        s.submit(admit, "p-17", "B").result()
    args = {e["task"]: e["args"] for e in events(s.run_dir, event="task_submitted")}
    assert args["admit"] == {"patient_id": REDACTED, "ward": "B"}
