"""Task functions of the fault tests (importable by worker processes)."""

import os
import time
from pathlib import Path

from scalable_otel import cacheable


def grow_once(marker: str, megabytes: int, step: int = 5, pause: float = 0.03) -> str:
    """On the first attempt (no `marker` file yet) take memory `step` MiB at a time up to
    `megabytes`, then hold it; a later attempt returns at once. The first waits a moment
    before it grows, so that its worker has reported it started before it dies."""
    path = Path(marker)
    if path.exists():
        return "retried"
    path.touch()
    time.sleep(0.5)
    blocks = []
    for _ in range(megabytes // step):
        block = bytearray(step * 2**20)
        block[::4096] = b"\1" * len(block[::4096])  # touched: resident, not just reserved
        blocks.append(block)
        time.sleep(pause)
    time.sleep(10)  # the nanny ends this attempt before
    return "survived"


@cacheable
def square(round_: int, i: int) -> int:
    return i * i


@cacheable
def tagged(round_: int, i: int) -> dict:
    """The same value in every process, but not the same pickle: a set of strings is
    pickled in its iteration order, which follows the process's hash seed."""
    return {"i": i, "tags": {f"tag-{k}" for k in range(16)}}


def kill_own_worker() -> None:
    """SIGKILL the worker process running this task, right after the task started: long
    before its worker plugin's next report."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def sleep_and_mark(x: int, seconds: float, marks: str) -> int:
    """Sleep, then append `<time> <key>` to `marks` as the task ends: what the workers
    finished, as a file that outlives every process of the run."""
    from distributed import get_worker

    time.sleep(seconds)
    line = f"{time.time():.6f} {get_worker().get_current_task()}\n".encode()
    fd = os.open(marks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)  # one write of a short line: whole, whatever else appends
    finally:
        os.close(fd)
    return x
