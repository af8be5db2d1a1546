"""The `scalable` commands on fuzzed runs directories and bad run ids: each one exits 0, or
2 with one line on stderr starting `Error:`; no traceback ever reaches the user.
Through click's CliRunner for the fuzzing, and in real subprocesses for each command family."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from scalable_otel.cli import main
from tests.fuzz_strategies import (
    CLOSED_META,
    GARBAGE,
    MANIFEST_YAML,
    RUN_NAME,
    RunFiles,
    dumps,
    fuzz_settings,
    run_dirs,
    write_runs,
)

FIRST, SECOND = RUN_NAME.format(day=1), RUN_NAME.format(day=2)
BAD_IDS = ["../x", "/etc", "", " ", "run-\n", "run-*", "run-[0-9]*", "?", ".", "..", "a\tb"]


def commands(root: Path, out: Path, run: str = FIRST, other: str = SECOND) -> list[list[str]]:
    """One invocation of each command family, on the runs under `root`."""
    where = ["--runs-dir", str(root)]
    return [
        ["report", "--last", *where],
        ["report", run, "--format", "json", *where],
        ["report", "--compare", run, other, *where],
        ["report", run, "--html", str(out / "report.html"), *where],
        ["runs", *where],
        ["trends", *where],
        ["trends", "--task", "run_simulation", "--format", "json", *where],
        ["advise", "--all", *where],
        ["advise", "--task", "run_simulation", *where],
        ["advise", "--task", "no such\ntask", *where],
        ["trends", "--task", "no such\ntask", *where],
        ["export", "--parquet", "--all", "--out", str(out / "parquet"), *where],
        ["watch", run, "--once", *where],
        ["watch", run, "--once", "--format", "json", *where],
    ]


def check(args: list[str], exit_code: int, stderr: str, exception=None) -> None:
    """Exit 0, or 2 with exactly one line on stderr, `Error: ...` (1 would be a bug)."""
    if exception is not None and not isinstance(exception, SystemExit):
        where = "".join(traceback.format_exception(exception, limit=-8))
        raise AssertionError(f"{args!r} raised {type(exception).__name__}:\n{where[-3000:]}")
    assert "Traceback" not in stderr, (args, stderr)
    assert exit_code in (0, 2), (args, exit_code, stderr)
    if exit_code:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, stderr)


def invoke(args: list[str]):
    result = CliRunner().invoke(main, args)
    check(args, result.exit_code, result.stderr, result.exception)
    return result


# --- CliRunner, fuzzed -------------------------------------------------------------------------


@fuzz_settings(12)
@given(st.lists(run_dirs(), min_size=1, max_size=2))
def test_every_command_on_fuzzed_runs(runs):
    base = Path(tempfile.mkdtemp(prefix="scalable-fuzz-cli-"))
    try:
        root = base / "runs"
        write_runs(root, runs)
        for args in commands(root, base, other=RUN_NAME.format(day=len(runs))):
            invoke(args)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def nasty_root(tmp_path) -> Path:
    """Runs whose every file is damaged in some way, beside a sound one."""
    root = tmp_path / "runs"
    lines = b"\n".join(GARBAGE) + b"\n" + dumps({"event": ["task_completed"], "duration_s": "1"})
    lines += b"\n" + dumps({"event": "task_started", "timestamp": 1e300, "key": "k", "worker": "w"})
    jsonl = {
        name: (lines, [])
        for name in ("tasks.jsonl", "resources.jsonl", "workers.jsonl", "cache.jsonl")
    }
    write_runs(
        root,
        [
            RunFiles(dumps(CLOSED_META)),
            RunFiles(b"[1, 2]", jsonl, plan_json=b"null", manifest_yaml=MANIFEST_YAML[2]),
            RunFiles(dumps({"start_time": 5, "status": ["x"], "duration_s": "9"}), jsonl),
            RunFiles(dumps({"started_at": 5, "target_name": {}}), jsonl, summary_json=b"[]"),
        ],
    )
    return root


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_run_ids_are_one_line_errors(nasty_root, tmp_path, bad):
    where = ["--runs-dir", str(nasty_root)]
    for args in (
        ["report", bad, *where],
        ["report", "--run-id", bad, *where],
        ["report", "--compare", bad, FIRST, *where],
        ["report", bad, "--html", str(tmp_path / "r.html"), *where],
        ["export", "--parquet", bad, "--out", str(tmp_path / "p"), *where],
        ["watch", bad, "--once", *where],
    ):
        result = invoke(args)
        assert result.exit_code == 2, (args, result.output)


def test_an_empty_run_id_is_not_the_last_run(nasty_root):
    result = invoke(["report", "", "--runs-dir", str(nasty_root)])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: an empty run id")


def test_every_command_on_damaged_runs(nasty_root, tmp_path):
    for run in (FIRST, SECOND, RUN_NAME.format(day=3), RUN_NAME.format(day=4)):
        for args in commands(nasty_root, tmp_path, run=run):
            invoke(args)


def test_names_that_are_not_utf8_or_hold_odd_characters(tmp_path):
    root = tmp_path / "runs"
    runs = write_runs(root, [RunFiles(dumps(CLOSED_META))])
    for project in (b"\xff\xfe", "\u202eevil".encode(), "🚀".encode(), b"a b'c"):
        run = os.path.join(os.fsencode(root), b"run-20260102T000000Z-" + project + b"-0000000a")
        os.mkdir(run)
        shutil.copy(runs[0] / "run.json", os.fsdecode(run))
    for args in commands(root, tmp_path):
        invoke(args)


# --- real subprocesses ---------------------------------------------------------------------


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, "-m", "scalable_otel.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )


def test_each_command_family_in_a_subprocess(nasty_root, tmp_path):
    families = {}  # report, report --compare, report --html, runs, trends, advise, export, watch
    for args in commands(nasty_root, tmp_path, run=RUN_NAME.format(day=3)):
        family = (args[0], *(flag for flag in ("--compare", "--html") if flag in args))
        families.setdefault(family, args)
    assert len(families) == 8
    for args in families.values():
        done = run_cli(args, tmp_path)
        check(args, done.returncode, done.stderr)
        assert "Warning" not in done.stderr, (args, done.stderr)


@pytest.mark.parametrize("bad", ["../x", "/etc", "", "run-\n", "run-*"])
def test_bad_run_ids_in_a_subprocess(nasty_root, tmp_path, bad):
    args = ["report", "--compare", FIRST, bad, "--runs-dir", str(nasty_root)]
    done = run_cli(args, tmp_path)
    check(args, done.returncode, done.stderr)
    assert done.returncode == 2
