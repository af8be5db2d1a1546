"""Every command's exit code for a missing run, a bad argument and an unreadable file, as
docs/reliability.md ("Exit codes") lists them: 2 and one line on stderr, `Error: ...`.
`scalable demo` takes no run: its cases are a bad argument and a runs directory it cannot
write; Ctrl-C during it exits with 130.

A file is made unreadable two ways: a folder where the file belongs, and mode 000. As
root, mode 000 alone does not stop a read, so the command then runs in a process whose
bounding set lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: root still, with the
permission checks of an ordinary user.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from scalable_otel.cli import main
from tests.conftest import wait_for

NO_SUCH_RUN = "run-20990101T000000Z-nosuch-00000000"
CLOSED_PORT = "http://127.0.0.1:9"  # nothing is sent: every case fails before


def families(run: str, root: Path, out: Path) -> dict[str, list[str]]:
    """One invocation of each command family on the run `run` under `root`."""
    where = ["--runs-dir", str(root)]
    return {
        "report": ["report", run, *where],
        "report --compare": ["report", "--compare", run, run, *where],
        "report --compare --fail-if-slower": ["report", "--compare", run, run, *where]
        + ["--fail-if-slower", "10", "--format", "markdown"],
        "report --html": ["report", run, "--html", str(out / "report.html"), *where],
        "report --critical-path": ["report", run, "--critical-path", *where],
        "report --time-breakdown": ["report", run, "--time-breakdown", *where],
        "runs": ["runs", *where],
        "trends": ["trends", *where],
        "trends --fail-on-regression": ["trends", "--fail-on-regression", *where]
        + ["--format", "markdown"],
        "advise": ["advise", "--all", *where],
        "whatif": ["whatif", run, "--workers", "4", *where],
        "export --parquet": ["export", "--parquet", run, "--out", str(out / "parquet"), *where],
        "export --otlp": ["export", "--otlp", run, "--endpoint", CLOSED_PORT, *where],
        "watch": ["watch", run, "--once", *where],
    }


# the file each family cannot do without
NEEDS = {"advise": "resources.jsonl", "export --otlp": "traces.otlp.jsonl"}


def one_line_error(exit_code: int, stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    assert exit_code == 2, (exit_code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    return lines[0]


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return one_line_error(result.exit_code, result.stderr)


@pytest.fixture
def root(tmp_path, demo_run) -> Path:
    """A runs directory holding a copy of a real run (safe to damage)."""
    shutil.copytree(demo_run, tmp_path / "runs" / demo_run.name)
    return tmp_path / "runs"


# --- a missing run ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(families("x", Path(), Path())))
def test_a_missing_run(family, root, tmp_path):
    args = families(NO_SUCH_RUN, root, tmp_path)[family]
    if NO_SUCH_RUN in args:
        assert "no run 'run-20990101T000000Z-nosuch" in invoke(args)
    else:  # the commands over every run: an empty runs directory, and none at all
        empty = tmp_path / "empty"
        empty.mkdir()
        for where in (empty, tmp_path / "absent"):
            args = families(NO_SUCH_RUN, where, tmp_path)[family]
            assert str(where) in invoke(args), args


# --- a bad argument --------------------------------------------------------------------------


def bad_arguments(run: str, root: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    """Per family, a mistake on its command line and a word of the message about it."""
    where = ["--runs-dir", str(root)]
    return {
        "report": (["report", run, "--format", "xml", *where], "'xml' is not one of"),
        "report --compare": (["report", run, "--compare", run, run, *where], "drop RUN"),
        "report --html": (["report", run, "--html", str(out / "a-folder"), *where], "directory"),
        "report --critical-path": (
            ["report", "--critical-path", "--compare", run, run, *where],
            "--critical-path is of one run",
        ),
        "report --time-breakdown": (
            ["report", "--time-breakdown", "--compare", run, run, *where],
            "--time-breakdown is of one run",
        ),
        "runs": (["runs", "--limit", "0", *where], "--limit"),
        "trends": (["trends", "--last", "0", *where], "--last"),
        "trends --fail-on-regression": (
            ["trends", "--fail-on-regression=yes", *where],
            "does not take a value",
        ),
        "report --compare --fail-if-slower": (
            ["report", "--compare", run, run, "--fail-if-slower", "-5", *where],
            "-5.0 is not in the range x>=0",
        ),
        "report --fail-if-slower not a number": (
            ["report", "--compare", run, run, "--fail-if-slower", "ten", *where],
            "'ten' is not a valid float",
        ),
        "report --fail-if-slower nan": (
            ["report", "--compare", run, run, "--fail-if-slower", "nan", *where],
            "nan is not a finite number",
        ),
        "report --fail-if-slower without --compare": (
            ["report", run, "--fail-if-slower", "10", *where],
            "--fail-if-slower needs --compare",
        ),
        "report --format markdown": (
            ["report", run, "--format", "markdown", *where],
            "--format markdown is for --compare",
        ),
        "advise": (["advise", *where], "give --task NAME or --all"),
        "advise --group": (["advise", "--all", "--group", "no-such-block", *where], "no task"),
        "advise --group /": (["advise", "--all", "--group", "/", *where], "names no group"),
        "trends --group /": (["trends", "--group", " / ", *where], "names no group"),
        "whatif": (["whatif", run, "--workers", "0", *where], "workers must be 1 or more"),
        "whatif --faster": (["whatif", run, "--faster", "no_such_task=2", *where], "no task"),
        "whatif --faster 0": (["whatif", run, "--faster", "run_simulation=0", *where], "above 0"),
        "whatif --faster -1": (["whatif", run, "--faster", "run_simulation=-1", *where], "above 0"),
        "whatif --faster x": (["whatif", run, "--faster", "run_simulation", *where], "TASK=FACTOR"),
        # energy constants out of range: checked before any run is read
        "report --pue": (["report", run, "--pue", "0.5", *where], "--pue must be a ratio"),
        "report --compare --power-per-core": (
            ["report", "--compare", run, run, "--power-per-core", "-1", *where],
            "--power-per-core must be a number of watts, 0 or more, not -1.0",
        ),
        "trends --carbon-intensity": (
            ["trends", "--carbon-intensity", "nan", *where],
            "--carbon-intensity must be a number of grams CO2e per kWh",
        ),
        "advise --pue": (["advise", "--all", "--pue", "inf", *where], "--pue must be"),
        "report --carbon-intensity": (
            ["report", run, "--carbon-intensity", "lots", *where],
            "'lots' is not a valid float",
        ),
        "export --parquet": (["export", "--parquet", "--otlp", run, *where], "one format"),
        # a ValueError of the URL parser: was exit code 1
        "export --otlp": (["export", "--otlp", run, "--endpoint", "http://[::1", *where], "IPv6"),
        "demo": (["demo", "--workers", "0"], "--workers"),
        "watch --interval 0": (["watch", run, "--interval", "0", *where], "above 0"),
        "watch --interval nan": (["watch", run, "--interval", "nan", *where], "above 0"),
        "watch --wait": (["watch", run, "--wait", *where], "--wait is for the next run"),
        "scalable": (["no-such-command"], "No such command"),
    }


@pytest.mark.parametrize("family", list(bad_arguments("x", Path(), Path())))
def test_a_bad_argument(family, root, tmp_path):
    (run,) = (path.name for path in root.iterdir())
    (tmp_path / "a-folder").mkdir()
    args, said = bad_arguments(run, root, tmp_path)[family]
    assert said in invoke(args)


def test_an_output_file_that_cannot_be_written(root, tmp_path):
    missing = tmp_path / "no-such-folder" / "report.txt"  # an OSError: was exit code 1
    line = invoke(["report", "--last", "--output", str(missing), "--runs-dir", str(root)])
    assert line == f"Error: No such file or directory: {missing}"


def test_a_usage_error_says_where_the_help_is(root):
    line = invoke(["runs", "--limit", "0", "--runs-dir", str(root)])
    assert line.endswith("(see 'main runs --help')"), line  # CliRunner names the group main


def test_the_help_of_the_group_is_still_the_help():
    result = CliRunner().invoke(main, [])
    assert "Commands:" in result.output and "Error" not in result.output


# --- an unreadable file ----------------------------------------------------------------------


@pytest.mark.parametrize("family", list(families("x", Path(), Path())))
def test_a_folder_where_a_file_belongs(family, root, tmp_path):
    (run,) = (path.name for path in root.iterdir())
    needed = [NEEDS.get(family, "tasks.jsonl")]
    if family == "runs":  # runs reads tasks.jsonl only when run.json cannot be read
        needed.append("run.json")
    for name in needed:
        (root / run / name).unlink()
        (root / run / name).mkdir()
    line = invoke(families(run, root, tmp_path)[family])
    assert "directory" in line and needed[0] in line, line


def _drop_file_permission_override() -> None:
    """In the child, before exec: what lets root read any file is not handed on."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli(args: list[str], cwd: Path, env: dict | None = None, ordinary=True, **options):
    """`python -m scalable_otel.cli ARGS`; as root, with an ordinary user's file permissions."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    if ordinary and os.geteuid() == 0:
        options["preexec_fn"] = _drop_file_permission_override
    return subprocess.run(
        [sys.executable, "-m", "scalable_otel.cli", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        **options,
    )


@pytest.fixture
def mode_000(tmp_path) -> None:
    """Skips unless a file of mode 000 is unreadable to the commands run here."""
    probe = tmp_path / "probe"
    probe.write_text("secret")
    probe.chmod(0)
    try:
        done = run_cli(["--version"], tmp_path)  # the same process setup as the real runs
        if done.returncode != 0:
            pytest.skip(f"cannot run without the file permission override: {done.stderr}")
        reader = subprocess.run(
            [sys.executable, "-c", f"open({str(probe)!r}).read()"],
            capture_output=True,
            preexec_fn=_drop_file_permission_override if os.geteuid() == 0 else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run without the file permission override: {exc}")
    if reader.returncode == 0:
        pytest.skip("a file of mode 000 is readable here")


@pytest.mark.parametrize("family", list(families("x", Path(), Path())))
def test_a_file_of_mode_000(family, root, tmp_path, mode_000):
    (run,) = (path.name for path in root.iterdir())
    needed = [NEEDS.get(family, "tasks.jsonl")]
    if family == "runs":
        needed.append("run.json")
    for name in needed:
        (root / run / name).chmod(0)
    done = run_cli(families(run, root, tmp_path)[family], tmp_path)
    line = one_line_error(done.returncode, done.stderr)
    assert "Permission denied" in line and needed[0] in line, line


def test_demo_with_a_runs_directory_it_cannot_write(tmp_path):
    (tmp_path / "a-file").write_text("")
    done = run_cli(
        ["demo", "--scenarios", "2"],
        tmp_path,
        env={"SCALABLE_RUNS_DIR": str(tmp_path / "a-file")},
        ordinary=False,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    # the workflow's own warnings come first (telemetry off, Dask's ports): the error is last
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and done.stderr.strip().endswith(errors[0]), done.stderr
    assert "was not recorded" in errors[0]
    assert "2 of 2 scenarios ran" in done.stdout  # the workflow itself went on


# --- Ctrl-C and SIGTERM -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "signum, code, last_line",
    [(signal.SIGINT, 130, "Aborted!"), (signal.SIGTERM, 143, None)],
    ids=["ctrl-c", "sigterm"],
)
def test_a_signal_during_the_demo_closes_its_run_and_exits_128_plus_its_number(
    tmp_path, signum, code, last_line
):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    demo = subprocess.Popen(
        [sys.executable, "-m", "scalable_otel.cli", "demo", "--scenarios", "2000"],
        cwd=tmp_path,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def a_task_completed():
            runs = list((tmp_path / ".scalable" / "runs").glob("*/tasks.jsonl"))
            return runs and b'"task_completed"' in runs[0].read_bytes() and runs[0].parent

        run_dir = wait_for(a_task_completed, timeout=120)
        demo.send_signal(signum)
        _, stderr = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == code, stderr[-3000:]
    # Dask logs the failing scenarios' tracebacks as text; no exception reaches the user
    assert "Traceback (most recent call last)" not in stderr, stderr[-3000:]
    if last_line:
        assert stderr.strip().endswith(last_line), stderr[-3000:]
    assert orjson.loads((run_dir / "run.json").read_bytes())["status"] == "interrupted"
