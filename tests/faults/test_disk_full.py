"""The runs directory's disk filling up in the middle of a run.

Mechanism: the runs directory is a small tmpfs that the test mounts (it needs root, or
CAP_SYS_ADMIN) and fills with a file until the kernel answers ENOSPC; freeing the disk
removes that file. Where mounting is refused, the same fault comes from RLIMIT_FSIZE
set on the driver and its telemetry process while the run goes on (`prlimit`: every
write past 1 byte of a file then fails with EFBIG). A read-only remount is no
alternative: Linux refuses it while the run's files are open for writing.

Whatever the disk does, the workflow finishes with its results, one warning says that
telemetry was lost, the lines written before stay intact, and run.json, when it can be
written, counts what was lost and names the first error.
"""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import orjson
import pytest

from scalable_otel.rundir import JSONL_FILES, read_lines
from tests.conftest import wait_for
from tests.faults.harness import Driver, clean_env

TASKS = 10


class FullDisk:
    """A runs directory whose disk the test fills and frees."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir()
        self.mounted = _mount_tmpfs(root)
        self.mechanism = "tmpfs" if self.mounted else "RLIMIT_FSIZE"
        self.filler = root / "filler"
        self.pids: list[int] = []

    def fill(self, pids: list[int]) -> None:
        if self.mounted:
            fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC: full
            finally:
                os.close(fd)
        else:
            self.pids = pids
            for pid in pids:  # the soft limit only: putting it back needs no privilege
                hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))

    def free(self) -> None:
        if self.mounted:
            self.filler.unlink()
        else:
            for pid in self.pids:
                hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "--lazy", str(self.root)], check=False)


def _mount_tmpfs(root: Path) -> bool:
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(root)],
        capture_output=True,
    )
    return done.returncode == 0


@pytest.fixture
def disk(tmp_path):
    disk = FullDisk(tmp_path / "runs")
    if not disk.mounted and not hasattr(resource, "prlimit"):
        pytest.skip("neither a tmpfs mount nor prlimit(RLIMIT_FSIZE) is available here")
    yield disk
    disk.close()


def run_with_a_full_disk(tmp_path: Path, disk: FullDisk, free_before_close: bool):
    """10 tasks, the disk filled, 10 more tasks, the disk freed or not, the close."""
    driver = Driver(
        tmp_path,
        "phases",
        "--tasks",
        str(TASKS),
        "--workers",
        "1",
        stdin=True,
        env=clean_env(SCALABLE_RUNS_DIR=str(disk.root)),
    )
    try:
        run_dir = Path(driver.wait_for(lambda line: "run_dir" in line)["run_dir"])
        driver.wait_for(lambda line: line.get("paused") == 0)
        recorder = driver.recorder()
        # what the run directory holds once the first tasks are written: must stay intact
        tasks = run_dir / "tasks.jsonl"
        wait_for(lambda: tasks.read_bytes().count(b'"task_completed"') == TASKS)
        written = {name: (run_dir / name).read_bytes() for name in JSONL_FILES}
        disk.fill([driver.pid, recorder.pid])
        driver.send("go\n")
        driver.wait_for(lambda line: line.get("paused") == 1)
        if free_before_close:
            disk.free()
        driver.send("go\n")
        end = driver.wait_for(lambda line: "results" in line)
        assert driver.finish(60) == 0, driver.stderr()[-3000:]
        return run_dir, written, end, driver.stderr()
    finally:
        driver.cleanup()


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("scalable-otel:")]


def check_common(disk: FullDisk, run_dir: Path, written: dict, end: dict, stderr: str) -> None:
    # the workflow is unaffected
    assert end["results"] == sorted(range(TASKS)) * 2 and end["status"] == "completed"
    # one warning, whichever files met the full disk first
    (warning,) = warnings_of(stderr)
    reason = "No space left on device" if disk.mounted else "File too large"
    assert f"cannot write telemetry to {run_dir}" in warning and reason in warning
    for name, before in written.items():
        after = (run_dir / name).read_bytes()
        assert after.startswith(before), name  # what was written before stays as it was
        assert read_lines(run_dir / name)[1] <= 1, name  # at most one line cut short


def test_a_disk_full_mid_run_then_freed_is_counted_in_run_json(tmp_path, disk):
    run_dir, written, end, stderr = run_with_a_full_disk(tmp_path, disk, free_before_close=True)
    check_common(disk, run_dir, written, end, stderr)
    meta = orjson.loads((run_dir / "run.json").read_bytes())
    assert meta["status"] == "completed" and meta["tasks_completed"] == 2 * TASKS
    # the second phase's task lines and spans could not be written, and run.json says so
    assert meta["telemetry_lines_dropped"] >= TASKS
    assert meta["telemetry_spans_dropped"] >= TASKS
    file, _, reason = meta["telemetry_write_error"].partition(": ")
    assert file in (*JSONL_FILES, "traces.otlp.jsonl"), meta["telemetry_write_error"]
    assert reason == ("No space left on device" if disk.mounted else "File too large")
    # lines written after the disk was freed are whole (the close's worker lines)
    workers, bad = read_lines(run_dir / "workers.jsonl")
    assert workers[-1]["event"] == "worker_removed" and bad <= 1


def test_a_disk_still_full_at_the_close_never_fails_the_workflow(tmp_path, disk):
    run_dir, written, end, stderr = run_with_a_full_disk(tmp_path, disk, free_before_close=False)
    check_common(disk, run_dir, written, end, stderr)
    # run.json could not be rewritten: it keeps its first version, whole, whose counts
    # were not known yet (null)
    meta = orjson.loads((run_dir / "run.json").read_bytes())
    assert meta["status"] == "running" and meta["telemetry_lines_dropped"] is None
