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


PICKLE_MODULES = {"pickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib"}
PICKLE_LOADERS = {"loads", "load", "Unpickler", "open"}  # shelve.open unpickles its values
# The only places that may turn bytes into objects by pickle, each with its reason:
ALLOWED_UNPICKLING = {
    # entries are unpickled only after their HMAC verified (checked below)
    ("scalable_otel/cache.py", "CacheStore.read", "pickle.loads"),
    # `multiprocessing.connection.Connection.recv` unpickles what the other end sent. Both
    # ends of this pipe are one `socket.socketpair()` made by the session's process and
    # passed (`pass_fds`) only to the telemetry process it starts: nothing else can write
    # to it, and what arrives was pickled by our own process or our own child.
    ("scalable_otel/recording.py", "ChildProcessRecording._receive", ".recv()"),
    ("scalable_otel/recording.py", "serve", ".recv()"),
}
# multiprocessing's other ways in (Queue.get, Listener/Client over a network address,
# managers, pools) unpickle too and cannot be told apart by a call's name: none is used.
ALLOWED_MULTIPROCESSING = {("multiprocessing.connection", "Connection")}


def unpickling_calls(path: Path) -> list[tuple[str, str]]:
    """(enclosing function's qualified name, what it calls) for each call in `path` that
    can unpickle: `<pickle-like module>.loads/load/Unpickler`, however it was imported,
    `read_pickle`, and any `.recv()` (a multiprocessing connection's unpickles)."""
    tree = ast.parse(path.read_text())
    modules, functions = {}, {}  # local name -> pickle-like module / (module, loader)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                if node.module.split(".")[0] in PICKLE_MODULES and alias.name in PICKLE_LOADERS:
                    functions[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    found = []

    def visit(node, scope: list[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            scope = [*scope, node.name]
        if isinstance(node, ast.Call):
            func, what = node.func, None
            if isinstance(func, ast.Attribute):
                if func.attr in ("recv", "read_pickle"):
                    what = f".{func.attr}()"
                elif (
                    func.attr in PICKLE_LOADERS
                    and isinstance(func.value, ast.Name)
                    and func.value.id in modules
                ):
                    what = f"{modules[func.value.id]}.{func.attr}"
            elif isinstance(func, ast.Name) and func.id in functions:
                what = functions[func.id]
            if what:
                found.append((".".join(scope) or "<module>", what))
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(tree, [])
    return found


def multiprocessing_imports(path: Path) -> set[tuple[str, str]]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {(a.name, "*") for a in node.names if a.name.startswith("multiprocessing")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("multiprocessing"):
            names |= {(node.module, a.name) for a in node.names}
    return names


def test_only_the_cache_and_the_telemetry_pipe_unpickle():
    """Every call that can turn bytes into objects by pickle, in the whole package, is in
    one of the places named in ALLOWED_UNPICKLING."""
    found, multiprocessing = set(), set()
    for path in sorted((REPO / "scalable_otel").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        found |= {(name, where, what) for where, what in unpickling_calls(path)}
        multiprocessing |= multiprocessing_imports(path)
    assert found == ALLOWED_UNPICKLING
    assert multiprocessing <= ALLOWED_MULTIPROCESSING
    source = Path(REPO / "scalable_otel" / "cache.py").read_text()
    read = source[source.index("    def read(") : source.index("    def load(")]
    assert read.index("signed = self._verified(") < read.index("if signed is None:")
    assert read.index("if signed is None:") < read.index("pickle.loads")
    verified = source[source.index("    def _verified(") :].split("\n\n")[0]
    assert "hmac.compare_digest" in verified and "return None" in verified
    # the telemetry pipe: one socketpair, its other end passed to our own child only
    recording = (REPO / "scalable_otel" / "recording.py").read_text()
    assert recording.count("Connection(") == 1 and "socket.socketpair()" in recording
    assert "pass_fds=[theirs.fileno()]" in recording


def test_the_scan_finds_every_way_to_unpickle(tmp_path):
    """What the scan above must catch (the scan itself can fail)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle as pk\n"
        "import dill\n"
        "from cloudpickle import loads as cl\n"
        "import pandas\n"
        "def a(conn):\n"
        "    return conn.recv()\n"
        "class B:\n"
        "    def c(self, data):\n"
        "        return pk.loads(data), dill.load(data), cl(data), pandas.read_pickle(data)\n"
        "def d(data):\n"
        "    return pk.Unpickler(data), data.recv_bytes(), len(data)\n"
    )
    assert unpickling_calls(sample) == [
        ("a", ".recv()"),
        ("B.c", "pickle.loads"),
        ("B.c", "dill.load"),
        ("B.c", "cloudpickle.loads"),
        ("B.c", ".read_pickle()"),
        ("d", "pickle.Unpickler"),
    ]


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
