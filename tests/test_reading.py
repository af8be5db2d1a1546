"""Reading runs that are damaged, unfinished or crashed, and user mistakes on the CLI:
skipped lines are counted and said, never fatal; mistakes get one line and exit 2."""

import json
import os
import shutil
import socket
import subprocess
import sys

import psutil
import pytest
from click.testing import CliRunner

from scalable_otel.analysis import load_run, report
from scalable_otel.cli import main
from scalable_otel.exporters.columnar import write_columnar_copy


@pytest.fixture
def runs_root(tmp_path, demo_run):
    """A runs directory holding a copy of a real demo run (safe to damage)."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(demo_run, root / demo_run.name)
    return root


def only_run(root):
    return next(root.iterdir())


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def count(run, event):
    lines = (run / "tasks.jsonl").read_text().splitlines()
    return sum(json.loads(line)["event"] == event for line in lines if line.strip())


def test_corrupt_blank_and_torn_lines_are_skipped_and_said(runs_root):
    run = only_run(runs_root)
    clean = report(load_run(run))
    completed = count(run, "task_completed")
    text = (run / "tasks.jsonl").read_text().splitlines(keepends=True)
    text[3:3] = ["{not json\n", "\n", "[1, 2]\n"]
    (run / "tasks.jsonl").write_text("".join(text) + '{"timestamp": "2026-05-20T0')
    (run / "cache.jsonl").open("a").write("\x00\x01garbage\n")
    summary = report(load_run(run))
    assert summary["skipped_lines"] == {"tasks.jsonl": 3, "cache.jsonl": 1}
    assert summary["tasks"] == clean["tasks"]
    assert summary["tasks"]["completed"] == completed
    result = cli("report", run.name, "--runs-dir", runs_root)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith(
        "Note: skipped unreadable lines (1 in cache.jsonl, 3 in tasks.jsonl)"
    )


def test_invalid_utf8_is_read_line_by_line(runs_root):
    run = only_run(runs_root)
    completed = count(run, "task_completed")
    with open(run / "tasks.jsonl", "ab") as f:
        f.write(b'{"event": "task_completed", "task": "\xff\xfe", "duration_s": 1.0}\n')
    summary = report(load_run(run))
    assert summary["tasks"]["completed"] == completed  # run.json's total, for a closed run
    assert summary["skipped_lines"] == {"tasks.jsonl": 1}


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _unfinished(run, pid, started=None):
    meta = json.loads((run / "run.json").read_text())
    meta.update(
        status="running",
        end_time=None,
        duration_s=None,
        host=socket.gethostname(),
        pid=pid,
        process_start_time=started,
        tasks_submitted=0,
        tasks_completed=0,
        tasks_failed=0,
    )
    (run / "run.json").write_text(json.dumps(meta))


def test_a_run_whose_process_died_is_crashed_with_what_it_finished(runs_root):
    run = only_run(runs_root)
    _unfinished(run, _dead_pid())
    completed = count(run, "task_completed")
    (run / "tasks.jsonl").open("a").write('{"timestamp":"2026-11-28T2')  # cut mid-line
    summary = report(load_run(run))
    assert summary["status"] == "crashed"
    assert summary["tasks"]["completed"] == completed > 0
    assert summary["tasks"]["failed"] == 2
    assert summary["duration_s"] > 0  # up to its last event
    assert summary["skipped_lines"] == {"tasks.jsonl": 1}
    result = cli("report", "--last", "--runs-dir", runs_root)
    assert result.exit_code == 0
    assert "Status:    crashed (the run's process died: figures are what it recorded before)" in (
        result.output
    )
    listed = cli("runs", "--runs-dir", runs_root)
    assert "crashed" in listed.output and f"{completed + 2:>6}  {2:>6}" in listed.output


def test_a_run_still_going_is_running(runs_root):
    run = only_run(runs_root)
    _unfinished(run, os.getpid(), psutil.Process().create_time())
    assert report(load_run(run))["status"] == "running"
    assert (
        "Status:    running (figures so far)"
        in cli("report", "--last", "--runs-dir", runs_root).output
    )


def test_a_reused_pid_does_not_make_a_crashed_run_look_alive(runs_root):
    run = only_run(runs_root)
    _unfinished(run, os.getpid(), psutil.Process().create_time() - 3600)
    assert report(load_run(run))["status"] == "crashed"


def test_a_run_without_run_json_still_reports(runs_root):
    run = only_run(runs_root)
    (run / "run.json").unlink()
    result = cli("report", run.name, "--runs-dir", runs_root)
    assert result.exit_code == 0
    assert "Status:    unknown" in result.output
    assert f"Completed:     {count(run, 'task_completed')}" in result.output


def test_columnar_copy_gives_the_same_report_and_is_dropped_when_stale(runs_root):
    run = only_run(runs_root)
    before = report(load_run(run))
    assert write_columnar_copy(run, min_bytes=0)
    assert (run / ".columnar" / "tasks.parquet").is_file()
    assert report(load_run(run)) == before
    # the JSONL changes after the copy: the copy is stale and not read
    meta = json.loads((run / "run.json").read_text())
    meta["status"] = "running"
    meta["end_time"] = None
    (run / "run.json").write_text(json.dumps(meta))
    line = {"event": "task_completed", "task": "late", "duration_s": 99.0}
    (run / "tasks.jsonl").open("a").write(json.dumps(line) + "\n")
    after = report(load_run(run))
    assert after["tasks"]["max_duration"]["task"] == "late"


def test_columnar_copy_keeps_the_skipped_count(runs_root):
    run = only_run(runs_root)
    (run / "tasks.jsonl").open("a").write("{broken\n")
    write_columnar_copy(run, min_bytes=0)
    assert report(load_run(run))["skipped_lines"] == {"tasks.jsonl": 1}


@pytest.mark.parametrize(
    "args, message",
    [
        (["report", "run-nope"], "no run 'run-nope' in "),
        (["report", "run-"], "matches 2 runs in "),
        (["report", "../x"], "../x is not a directory"),
        (["report", "/"], "/ is outside the runs directory"),
        (["report", "--compare", "run-nope", "run-"], "no run 'run-nope' in "),
        (["report", "run-", "--run-id", "x"], "give the run once"),
        (["export", "--parquet", "run-nope"], "no run 'run-nope' in "),
        (["export", "run-"], "say which format: --parquet"),
        (["export", "--parquet"], "give one of RUN, --last or --all"),
        (["advise"], "give --task NAME or --all"),
        (["advise", "--task", "no_such_task"], "no_such_task"),
        (["trends", "--task", "no_such_task"], "no_such_task"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(demo_project, monkeypatch, args, message):
    monkeypatch.chdir(demo_project)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("Error: ")


@pytest.mark.parametrize("command", ["report --last", "runs", "trends", "advise --all"])
@pytest.mark.parametrize("where", ["missing", "empty"])
def test_no_runs_is_one_line_and_exit_2(tmp_path, command, where):
    root = tmp_path / "runs"
    if where == "empty":
        root.mkdir()
    result = CliRunner().invoke(main, command.split() + ["--runs-dir", str(root)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert str(root) in result.output


def test_columnar_copy_of_a_file_with_invalid_utf8_keeps_the_skipped_count(runs_root):
    run = only_run(runs_root)
    with open(run / "tasks.jsonl", "ab") as f:
        f.write(b'{"event": "task_completed", "task": "\xff", "duration_s": 1.0}\n')
    write_columnar_copy(run, min_bytes=0)
    assert report(load_run(run))["skipped_lines"] == {"tasks.jsonl": 1}


def test_quotes_and_spaces_in_paths_are_just_paths(tmp_path, demo_run):
    root = tmp_path / "o'brien's runs; DROP"
    root.mkdir()
    shutil.copytree(demo_run, root / demo_run.name)
    result = cli("report", "--last", "--runs-dir", root)
    assert result.exit_code == 0, result.output
    assert f"Run Report: {demo_run.name}" in result.output
    assert cli("trends", "--runs-dir", root).exit_code == 0
    assert cli("advise", "--all", "--runs-dir", root).exit_code == 0


def test_a_session_writes_the_columnar_copy_when_it_closes(project_dir, monkeypatch):
    from scalable_otel import ScalableSession
    from scalable_otel.analysis import columns
    from scalable_otel.exporters import columnar
    from tests import workloads

    monkeypatch.setattr(columnar, "COPY_MIN_BYTES", 0)  # as if the run were large
    with ScalableSession(target="local", n_workers=1, project="copy") as session:
        session.gather(session.map(workloads.sleep_then, range(5), seconds=0.01))
    copies = session.run_dir / ".columnar"
    assert sorted(p.name for p in copies.glob("*.parquet")) == [
        "cache.parquet",
        "resources.parquet",
        "tasks.parquet",
    ]
    assert oct(copies.stat().st_mode & 0o777) == "0o700"
    summary = report(load_run(session.run_dir))
    monkeypatch.setattr(columns, "_fresh_copy", lambda path: None)  # the JSONL alone
    assert report(load_run(session.run_dir)) == summary
    assert summary["tasks"]["completed"] == 5
