"""SIGKILL to the driver's whole process group mid-run (Slurm's KillWait, a cgroup's OOM
kill): the driver, its workers and its telemetry process die at once, so nothing is
flushed at the end. A task's completion must already be on disk one flush interval after
the scheduler saw it: the telemetry process writes a batch's lines as soon as it has
handled the batch, and a task's line never waits for its worker's measurement.

The tasks append `<time> <key>` to a file of their own as they end, which outlives the
kill: every task finished more than a flush interval (plus a margin for the time to send
the result, handle the batch and write it) before the kill has its `task_completed` line.
In the second case the workers first freeze (SIGSTOP: a worker stuck in a long call that
holds the GIL, a node swapping), so the measurements of their last tasks never come.
"""

import os
import signal
import time
from pathlib import Path

import psutil

from tests.conftest import read_jsonl
from tests.faults.harness import Driver, lines_of

# Beyond the flush interval: the result's way to the scheduler, a forwarding thread that
# wakes late on a loaded machine, handling the batch and writing its lines.
MARGIN_S = 0.5
# How long a finished task's result may take from the worker to the scheduler.
SEND_S = 0.25


def finished(marks: Path) -> list[tuple[float, str]]:
    """(time, key) of every task that ended, as the tasks wrote it."""
    return [
        (float(t), key)
        for t, _, key in (line.partition(" ") for line in marks.read_text().splitlines())
    ]


def completed(run_dir: Path) -> set:
    lines, _ = lines_of(run_dir / "tasks.jsonl")  # a last line may be cut by the kill
    return {e["key"] for e in lines if e["event"] == "task_completed"}


def kill_the_group(project: Path, flush: float, freeze_workers: bool):
    """Run tasks under a session in its own process group; once 200 are done, SIGKILL
    the group (after freezing the workers for a flush interval and the margin, if asked).
    (run directory, marks file, time of the kill, time the workers froze or None)."""
    marks = project / "finished.txt"
    driver = Driver(
        project,
        "session",
        "--flush-interval", str(flush),
        "--tasks", "2000",
        "--seconds", "0.05",
        "--marks", str(marks),
        group=True,
    )  # fmt: skip
    try:
        run_dir = Path(driver.wait_for(lambda line: "run_dir" in line)["run_dir"])
        driver.wait_done(200)  # the run well under way: several flush intervals of tasks
        family = driver.remember_family()
        frozen_at = None
        if freeze_workers:
            workers = read_jsonl(run_dir / "workers.jsonl")
            frozen_at = time.time()
            for pid in {e["pid"] for e in workers if e["event"] == "worker_added"}:
                os.kill(pid, signal.SIGSTOP)
            # the scenario: the kill comes one flush interval and the margin after the freeze
            time.sleep(flush + MARGIN_S)
        killed_at = time.time()
        driver.signal(signal.SIGKILL, group=True)
        assert driver.finish(30) == -signal.SIGKILL
        gone, alive = psutil.wait_procs(family, timeout=30)
        assert not alive, [p.pid for p in alive]
        return run_dir, marks, killed_at, frozen_at
    finally:
        driver.cleanup()


def test_a_group_kill_loses_at_most_one_flush_interval_of_completions(tmp_path):
    flush = 1.0
    run_dir, marks, killed_at, _ = kill_the_group(tmp_path, flush, freeze_workers=False)
    on_disk = completed(run_dir)
    old = [key for t, key in finished(marks) if t < killed_at - flush - MARGIN_S]
    assert len(old) >= 40  # tasks ended during several flush intervals before the cut
    missing = sorted(set(old) - on_disk)
    assert not missing, f"{len(missing)} of {len(old)} completions lost"
    # nothing is invented: a completion on disk is one a worker finished
    assert on_disk <= {key for _, key in finished(marks)}


def test_a_completion_never_waits_for_its_measurement(tmp_path):
    # The workers freeze, then everything is killed a flush interval and the margin later:
    # every result the scheduler had is on disk, though no measurement of the last tasks
    # ever came.
    flush = 2.0
    run_dir, marks, killed_at, frozen_at = kill_the_group(tmp_path, flush, freeze_workers=True)
    assert killed_at - frozen_at >= flush + MARGIN_S
    on_disk = completed(run_dir)
    sent = [key for t, key in finished(marks) if t < frozen_at - SEND_S]
    assert len(sent) >= 100
    missing = sorted(set(sent) - on_disk)
    assert not missing, f"{len(missing)} of {len(sent)} completions lost"
    assert on_disk <= {key for _, key in finished(marks)}
