"""`scalable watch` and a session's progress bar: a real run in a subprocess, held on a file
while it is watched from other processes (stdout a pipe, and a pseudo-terminal), and the
follower itself on hand-appended files."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalable_otel.analysis import load_run
from scalable_otel.analysis.report import format_report, report
from scalable_otel.progress import RunProgress
from scalable_otel.rundir import JsonlTail
from tests.conftest import REPO, events, wait_for

# A workflow that completes 5 tasks and fails one, then holds two tasks until `release`
# exists; it starts submitting only when `go` exists (a watcher is already following).
WORKFLOW = """
import os, sys
from pathlib import Path
from scalable_otel import ScalableSession
from tests.workloads import fail, hold_until, inc

go, release = sys.argv[1], sys.argv[2]
with ScalableSession(target="local", n_workers=2, threads_per_worker=1,
                     project="watched", progress={progress}) as session:
    Path(go + ".run").write_text(str(session.run_dir))
    while not os.path.exists(go):
        import time; time.sleep(0.05)
    session.gather(session.map(inc, range(5)))
    session.gather([session.submit(fail, 1)], errors="skip")
    session.gather(session.map(hold_until, [release] * 2, [1, 2]))
"""


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["SCALABLE_RUNS_DIR"] = str(tmp_path / "runs")
    env["COLUMNS"] = "160"
    return env


def _start_workflow(tmp_path: Path, progress="False", **popen) -> tuple[subprocess.Popen, Path]:
    go, release = tmp_path / "go", tmp_path / "release"
    script = WORKFLOW.replace("{progress}", progress)
    workflow = subprocess.Popen(
        [sys.executable, "-c", script, str(go), str(release)],
        cwd=tmp_path,
        env=_env(tmp_path),
        **popen,
    )
    run_dir = wait_for(
        lambda: (tmp_path / "go.run").exists() and Path((tmp_path / "go.run").read_text()),
        timeout=120,
    )
    return workflow, run_dir


class Output:
    """A process's output collected by a thread, to wait on without blocking."""

    def __init__(self, read):
        self.text = ""
        self._read = read
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        while True:
            chunk = self._read()
            if not chunk:
                return
            self.text += chunk.decode(errors="replace")

    def join(self, timeout=60):
        self._thread.join(timeout)


def _pty_reader(fd):
    def read():
        while True:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if ready:
                try:
                    return os.read(fd, 65536)
                except OSError:  # the child closed the terminal
                    return b""

    return read


def _watch(tmp_path: Path, *args, tty=False):
    command = [sys.executable, "-m", "scalable_otel.cli", "watch", *args]
    if not tty:
        proc = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return proc, Output(proc.stdout.read1)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=follower,
        stderr=follower,
        stdin=follower,
    )
    os.close(follower)
    return proc, Output(_pty_reader(leader))


def _counts(line: str) -> dict[str, int]:
    """The totals of a plain status line."""
    head = line.split(" | ")[0]
    found = re.search(
        r"(\d+) done, (\d+) failed, (?:(\d+) cancelled, )?(\d+) running, (\d+) queued "
        r"of (\d+) submitted",
        head,
    )
    assert found, line
    done, failed, cancelled, running, queued, submitted = found.groups()
    return {
        "completed": int(done),
        "failed": int(failed),
        "cancelled": int(cancelled or 0),
        "running": int(running),
        "queued": int(queued),
        "submitted": int(submitted),
    }


def _status_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if "submitted so far" in line]


def test_watch_a_run_in_progress_from_a_pipe_and_a_terminal(tmp_path):
    workflow, run_dir = _start_workflow(tmp_path)
    piped = terminal = None
    try:
        # started before any task is submitted, by the run's id and as the newest running
        piped, out = _watch(tmp_path, run_dir.name, "--interval", "0.2")
        terminal, screen = _watch(tmp_path, "--interval", "0.2", tty=True)
        wait_for(lambda: _status_lines(out.text), timeout=60)
        (tmp_path / "go").touch()

        # held: 5 done, 1 failed, both holds started; the files stay as they are
        def held():
            started = events(run_dir, event="task_started")
            holding = [e for e in started if e["task"] == "hold_until"]
            lines = _status_lines(out.text)
            return len(holding) == 2 and lines and _counts(lines[-1])["running"] == 2 and lines

        lines = wait_for(held, timeout=120)
        seen = _counts(lines[-1])
        assert seen == {
            "completed": len(events(run_dir, event="task_completed")),
            "failed": len(events(run_dir, event="task_failed")),
            "cancelled": 0,
            "running": 2,
            "queued": 0,
            "submitted": len(events(run_dir, event="task_submitted")),
        }
        assert seen["completed"] == 5 and seen["failed"] == 1 and seen["submitted"] == 8
        assert "inc: 5 done, 0 failed, 0 running, 0 queued" in lines[-1]
        assert "hold_until: 0 done, 0 failed, 2 running, 0 queued" in lines[-1]
        assert "2 workers" in lines[-1]
        # the failure, once, with its message
        failed = [line for line in out.text.splitlines() if line.startswith("  failed: ")]
        assert len(failed) == 1 and "fail (" in failed[0] and "ValueError" in failed[0]
        # plain lines: no escape codes; the terminal's view redraws a table with bars
        assert "\x1b" not in out.text
        wait_for(lambda: "hold_until" in screen.text and "running" in screen.text, timeout=60)
        assert "\x1b[" in screen.text and "progress" in screen.text

        (tmp_path / "release").touch()
        assert workflow.wait(timeout=180) == 0
        assert piped.wait(timeout=60) == 0 and terminal.wait(timeout=60) == 0
        out.join()
        screen.join()
    finally:
        for proc in (workflow, piped, terminal):
            if proc is not None and proc.poll() is None:
                proc.kill()

    summary = report(load_run(run_dir))
    # one truth: the watch ends with the report's own summary...
    assert out.text.rstrip("\n").endswith("\n\n" + format_report(summary))
    assert format_report(summary).splitlines()[1] in screen.text
    # ...and its last counts are the report's
    last = _counts(_status_lines(out.text)[-1])
    three = ("submitted", "completed", "failed")
    assert {k: last[k] for k in three} == {k: summary["tasks"][k] for k in three}
    assert last["running"] == last["queued"] == 0


def test_session_progress_shows_on_a_terminal_and_not_in_a_pipe(tmp_path):
    (tmp_path / "go").touch()
    (tmp_path / "release").touch()
    leader, follower = pty.openpty()
    workflow, run_dir = _start_workflow(
        tmp_path, progress="None", stdout=follower, stderr=follower, stdin=follower
    )
    os.close(follower)
    screen = Output(_pty_reader(leader))
    assert workflow.wait(timeout=180) == 0
    screen.join()
    assert "hold_until" in screen.text and "all tasks" in screen.text and "\x1b[" in screen.text
    assert "submitted so far" in screen.text

    piped = tmp_path / "piped"
    piped.mkdir()
    (piped / "go").touch()
    (piped / "release").touch()
    workflow, _ = _start_workflow(piped, progress="None", stderr=subprocess.PIPE)
    _, stderr = workflow.communicate(timeout=180)
    assert workflow.returncode == 0
    assert b"submitted so far" not in stderr


def test_once_as_json_agrees_with_the_report(demo_run, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "scalable_otel.cli", "watch", demo_run.name, "--once"]
        + ["--format", "json", "--runs-dir", str(demo_run.parent)],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    snap = orjson.loads(done.stdout)
    summary = report(load_run(demo_run))
    assert snap["status"] == summary["status"] and snap["run_id"] == demo_run.name
    three = ("submitted", "completed", "failed")
    assert {k: snap["total"][k] for k in three} == {k: summary["tasks"][k] for k in three}
    assert snap["cache"] == {
        "lookups": summary["cache"]["lookups"],
        "hits": summary["cache"]["hits"],
    }
    assert sum(row["completed"] for row in snap["tasks"].values()) == summary["tasks"]["completed"]


# --- the follower on hand-appended files -----------------------------------------------------


def _line(**fields) -> bytes:
    return orjson.dumps({"schema_version": 1, "timestamp": "2026-12-06T12:00:00.000000Z", **fields})


def test_a_torn_line_is_read_when_its_end_is_appended(tmp_path):
    path = tmp_path / "tasks.jsonl"
    tail = JsonlTail(path)
    assert tail.read() == []  # no file yet
    whole = _line(event="task_submitted", task="a", key="a-1", span_id="s1")
    path.write_bytes(whole + b"\n" + whole[:20])
    assert [line["key"] for line in tail.read()] == ["a-1"]
    assert tail.read() == [] and tail.bad == 0  # the torn line waits, not an error
    with open(path, "ab") as f:
        f.write(whole[20:] + b"\n")
    assert [line["key"] for line in tail.read()] == ["a-1"] and tail.bad == 0
    assert tail.offset == path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'not json\n{"torn')
    assert tail.read() == [] and tail.bad == 1
    assert tail.read(final=True) == [] and tail.bad == 2  # the run ended: it stays torn


def test_the_follower_keeps_each_life_by_its_span(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    progress = RunProgress(tmp_path)

    def append(*lines):
        with open(tasks, "ab") as f:
            f.write(b"".join(line + b"\n" for line in lines))
        progress.poll()
        return progress.snapshot()["tasks"]

    rows = append(
        _line(event="task_submitted", task="sim", key="k1", span_id="t1"),
        _line(event="task_submitted", task="sim", key="k2", span_id="t2"),
        _line(event="task_started", task="sim", key="k1", span_id="e1", parent_span_id="t1"),
    )
    assert rows["sim"] == {
        "submitted": 2,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "running": 1,
        "queued": 1,
    }
    # a lost attempt runs again in the same life; a recompute is a new life of the key
    rows = append(
        _line(event="task_started", task="sim", key="k1", span_id="e2", parent_span_id="t1"),
        _line(event="task_completed", task="sim", key="k1", span_id="t1"),
        _line(event="task_submitted", task="sim", key="k1", span_id="t3", reason="recompute"),
        _line(event="task_failed", task="sim", key="k2", span_id="t2"),
    )
    assert rows["sim"] == {
        "submitted": 3,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
        "running": 0,
        "queued": 1,
    }
    snap = progress.snapshot()
    assert snap["remaining"] == 1 and snap["total"]["submitted"] == 3


# --- which run, and a run that crashed -------------------------------------------------------


def _hand_run(root: Path, stamp: str, status: str, pid: int) -> Path:
    import socket

    from scalable_otel.rundir import RunDirectory, run_json

    run = RunDirectory.create(root, f"run-{stamp}-hand-{abs(hash(stamp)) % 16**8:08x}")
    meta = run_json(
        run_id=run.run_id, project="hand", status=status, started=1.8e9, ended=None,
        target="local", provider="local", host=socket.gethostname(), pid=pid,
        process_start_time=None, manifest_hash="sha256:0", trace_id="0" * 32,
        exporters={}, settings={}, versions={},
    )  # fmt: skip
    run.write_run_json(meta)
    with open(run.file("tasks.jsonl"), "ab") as f:
        f.write(_line(event="task_submitted", task="sim", key="k1", span_id="t1") + b"\n")
    return run.path


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_the_default_run_is_the_newest_still_running(tmp_path):
    from scalable_otel.analysis.watch import running_or_last

    alive = _hand_run(tmp_path, "20270101T000000Z", "running", os.getpid())
    _hand_run(tmp_path, "20270101T000001Z", "running", _dead_pid())  # crashed
    assert running_or_last(tmp_path) == alive
    alive_meta = orjson.loads((alive / "run.json").read_bytes())
    (alive / "run.json").write_bytes(orjson.dumps({**alive_meta, "pid": _dead_pid()}))
    assert running_or_last(tmp_path).name.startswith("run-20270101T000001Z")  # the last


def test_a_crashed_run_ends_the_watch_with_a_note_and_its_summary(tmp_path):
    from click.testing import CliRunner

    from scalable_otel.cli import main

    run = _hand_run(tmp_path, "20270101T000000Z", "running", _dead_pid())
    result = CliRunner().invoke(main, ["watch", run.name, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "0 done, 0 failed, 0 running, 1 queued of 1 submitted so far" in result.output
    assert "The run crashed" in result.output
    summary = report(load_run(run))
    assert summary["status"] == "crashed"
    assert result.output.rstrip("\n").endswith("\n\n" + format_report(summary))


def test_ctrl_c_ends_the_watch_with_130(tmp_path):
    import signal

    run = _hand_run(tmp_path / "runs", "20270101T000000Z", "running", os.getpid())  # alive
    watcher, out = _watch(tmp_path, run.name, "--interval", "0.2")
    try:
        wait_for(lambda: _status_lines(out.text), timeout=60)
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=60) == 130
        assert watcher.stderr.read().decode().strip().endswith("Aborted!")
    finally:
        if watcher.poll() is None:
            watcher.kill()


@given(
    st.lists(
        st.one_of(
            st.builds(lambda i: _line(event="task_submitted", key=f"k{i}"), st.integers(0, 99)),
            st.sampled_from([b"not json", b"{}", b"[1]", b'{"event": NaN}', b"   "]),
        ),
        max_size=12,
    ),
    st.lists(st.integers(min_value=1, max_value=40), max_size=30),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_appended_in_any_pieces_the_lines_are_those_of_the_whole_file(tmp_path, lines, cuts):
    """Whatever pieces the file grows by, the follower reads the lines a reader of the
    whole file reads (`rundir.iter_lines`), each once, and counts the same bad ones."""
    from scalable_otel.rundir import iter_lines

    path = tmp_path / f"f{abs(hash((tuple(lines), tuple(cuts))))}.jsonl"
    data = b"".join(line + b"\n" for line in lines)
    tail, got, at = JsonlTail(path), [], 0
    path.write_bytes(b"")
    for cut in cuts:
        with open(path, "ab") as f:
            f.write(data[at : at + cut])
        at += cut
        got += tail.read()
    with open(path, "ab") as f:
        f.write(data[at:])
    got += tail.read(final=True)
    whole = list(iter_lines(path))
    assert got == [line for line in whole if line is not None]
    assert tail.bad == sum(line is None for line in whole)


def test_wait_follows_the_next_run_to_start(tmp_path):
    from scalable_otel.rundir import write_json_atomic

    root = tmp_path / "runs"  # not there yet
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalable_otel.cli", "watch", "--wait", "--interval", "0.1"]
        + ["--runs-dir", str(root)],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = Output(proc.stdout.read1), Output(proc.stderr.read1)
    try:
        wait_for(lambda: "Waiting for a run" in err.text, timeout=60)
        run = _hand_run(root, "20270101T000000Z", "running", os.getpid())
        wait_for(lambda: "1 queued of 1 submitted so far" in out.text, timeout=60)
        assert f"Run: {run.name}" in out.text
        meta = orjson.loads((run / "run.json").read_bytes())
        end = "2027-01-15T08:00:10.000000Z"
        write_json_atomic(run / "run.json", {**meta, "status": "completed", "end_time": end})
        assert proc.wait(timeout=60) == 0
        out.join()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.text.rstrip("\n").endswith("\n\n" + format_report(report(load_run(run))))
