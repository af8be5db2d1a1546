"""A run watched while it goes on (`scalable watch`): which run, its progress so far, and
when it ended, the report's own summary.

The progress comes from `Run.follow()` (`progress.RunProgress`), which reads only what the
run's files gained since the last refresh. Its counts are the lines of each event, the
report's rule for a run still going on (`facts`); once the run has ended the watch shows
`report.report`'s summary, so what it ends with is what `scalable report` says.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .. import semconv as sc
from ..rundir import list_runs, parse_iso
from .load import Run, load_run, read_meta, resolve_run, run_status


def running_run(root: str | os.PathLike | None = None) -> Path | None:
    """The newest run that is still running (its process alive), or None."""
    for path in reversed(list_runs(Path(root) if root is not None else None)):
        if run_status(read_meta(path)) == sc.RUN_RUNNING:
            return path
    return None


def running_or_last(root: str | os.PathLike | None = None) -> Path:
    """The newest run that is still running (its process alive), else the last run."""
    running = running_run(root)
    if running is not None:
        return running
    return resolve_run(None, root, last=True)  # the last, or RunNotFound naming the folder


def next_run(root: str | os.PathLike | None = None, interval: float = 1.0, on_wait=None) -> Path:
    """The newest run still running, else the first run to start from now on: the runs
    directory is listed every `interval` seconds until one appears (whatever its status by
    then: a short run may have ended between two looks). `on_wait` is called once before
    waiting."""
    running = running_run(root)
    if running is not None:
        return running
    folder = Path(root) if root is not None else None
    before = {path.name for path in list_runs(folder)}
    if on_wait is not None:
        on_wait()
    while True:
        new = [path for path in list_runs(folder) if path.name not in before]
        if new:
            return new[-1]
        time.sleep(interval)


class Watch:
    """One run followed: `refresh()` reads what its files gained and returns the snapshot;
    `ended` once run.json says it ended (or it crashed); `summary()` is then its report."""

    def __init__(self, run: Run):
        self.run = run
        self.progress = run.follow()
        self.ended = False

    def refresh(self, now: float | None = None) -> dict:
        """The run so far (`RunProgress.snapshot`) with its `run_id`, `status` (crashed
        inferred, as `Run.status`) and `elapsed_s`."""
        now = time.time() if now is None else now
        self.run.reread_meta()
        status = self.run.status
        # the status first, the lines after: a run that ended has written them all
        self.ended = status != sc.RUN_RUNNING
        self.progress.poll(final=self.ended)
        meta = self.run.meta
        started = parse_iso(meta.get("start_time"))
        elapsed = meta.get("duration_s")
        if elapsed is None and started is not None:
            end = self.progress.last_time if self.ended and self.progress.last_time else now
            elapsed = max(0.0, end - started)
        return {
            "run_id": self.run.run_id,
            "status": status,
            "elapsed_s": elapsed,
            **self.progress.snapshot(now),
        }

    def summary(self, energy_options: dict | None = None) -> dict:
        """The report of the run as it ended (`report.report`)."""
        from .report import report

        return report(load_run(self.run.path), energy_options)


def watch_run(
    run: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    *,
    last: bool = False,
    wait: bool = False,
    interval: float = 1.0,
    on_wait=None,
) -> Watch:
    """A `Watch` of a run: `run` (an id, a prefix of one, a run directory), the last run
    with `last`, else the newest run still running, else (`wait`) the next run to start
    (`next_run`), else the last.

    >>> watch = watch_run()                                          # doctest: +SKIP
    >>> watch.refresh()["total"]["completed"]                         # doctest: +SKIP
    """
    if run is None and not last:
        path = next_run(root, interval, on_wait) if wait else running_or_last(root)
        return Watch(Run(path, read_meta(path)))
    return Watch(load_run(run, root, last=last, inside_root=True))
