"""SIGKILL to the driver's whole process group mid-run (Slurm's KillWait, a cgroup's OOM
kill): the driver, its workers and its telemetry process die at once, so nothing is
flushed at the end. A task's completion must already be on disk one flush interval after
the scheduler saw it: the telemetry process writes a batch's lines as soon as it has
handled the batch, and a task's line never waits for its worker's measurement.

The tasks append `<time> <key>` to a file of their own as they end, which outlives the
kill: every task finished more than a flush interval (plus a margin for the time to send
the result, handle the batch and write it) before the kill has its `task_completed` line.
"""

import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.faults.harness import Driver, lines_of

FLUSH_S = 1.0
# Beyond the flush interval: the result's way to the scheduler, a forwarding thread that
# wakes late on a loaded machine, handling the batch and writing its lines.
MARGIN_S = 0.5


@pytest.fixture(scope="module")
def group_killed(tmp_path_factory):
    project = tmp_path_factory.mktemp("group-killed")
    marks = project / "finished.txt"
    driver = Driver(
        project,
        "session",
        "--flush-interval", str(FLUSH_S),
        "--tasks", "2000",
        "--seconds", "0.05",
        "--marks", str(marks),
        group=True,
    )  # fmt: skip
    try:
        run_dir = Path(driver.wait_for(lambda line: "run_dir" in line)["run_dir"])
        driver.wait_done(200)  # the run well under way: several flush intervals of tasks
        family = driver.remember_family()
        killed_at = time.time()
        driver.signal(signal.SIGKILL, group=True)
        assert driver.finish(30) == -signal.SIGKILL
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, [p.pid for p in alive]
        yield run_dir, marks, killed_at
    finally:
        driver.cleanup()


def finished(marks: Path) -> list[tuple[float, str]]:
    """(time, key) of every task that ended, as the tasks wrote it."""
    return [
        (float(t), key)
        for t, _, key in (line.partition(" ") for line in marks.read_text().splitlines())
    ]


def test_a_group_kill_loses_at_most_one_flush_interval_of_completions(group_killed):
    run_dir, marks, killed_at = group_killed
    lines, _ = lines_of(run_dir / "tasks.jsonl")  # a last line may be cut by the kill
    completed = {e["key"] for e in lines if e["event"] == "task_completed"}
    old = [key for t, key in finished(marks) if t < killed_at - FLUSH_S - MARGIN_S]
    assert len(old) >= 40  # tasks ended during several flush intervals before the cut
    missing = sorted(set(old) - completed)
    assert not missing, f"{len(missing)} of {len(old)} completions lost"
    # nothing is invented: a completion on disk is one a worker finished
    assert completed <= {key for _, key in finished(marks)}
