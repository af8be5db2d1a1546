"""A run's progress (`progress.RunProgress.snapshot()`) for people: a rich table with a
progress bar per task name for a terminal, or one plain line for a pipe or a log; and the
session's progress bar (`ProgressBar`), a thread that follows its own run directory."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from .progress import RunProgress

logger = logging.getLogger(__name__)

PROGRESS_ENV = "SCALABLE_PROGRESS"
_ON = {"1", "on", "true", "yes"}
_OFF = {"0", "off", "false", "no", "none", ""}


def duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `42s`, or `unknown`."""
    if seconds is None:
        return "unknown"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def megabytes(value) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value / 2**20:.0f} MiB"


def counts_text(row: dict) -> str:
    """`40 done, 2 failed, 3 running, 55 queued` (and cancelled when there are some)."""
    parts = [f"{row['completed']} done", f"{row['failed']} failed"]
    if row.get("cancelled"):
        parts.append(f"{row['cancelled']} cancelled")
    parts += [f"{row['running']} running", f"{row['queued']} queued"]
    return ", ".join(parts)


def pace_text(snap: dict) -> str:
    """`3.2 tasks/s, ETA 22s` or `rate unknown, ETA unknown`."""
    rate = snap["rate_per_s"]
    shown = "rate unknown" if rate is None else f"{rate:.1f} tasks/s"
    return f"{shown}, ETA {duration(snap['eta_s'])}"


def status_line(snap: dict, status: str, elapsed: float | None) -> str:
    """The whole snapshot as one plain line (no escape codes), for a pipe or a log."""
    total = snap["total"]
    parts = [
        f"[{duration(elapsed)}] {status}",
        f"{counts_text(total)} of {total['submitted']} submitted so far",
        pace_text(snap),
        f"{len(snap['workers'])} workers",
        f"cache {snap['cache']['hits']} hits of {snap['cache']['lookups']} lookups",
    ]
    names = [f"{name}: {counts_text(row)}" for name, row in snap["tasks"].items()]
    return " | ".join([" · ".join(parts), *names])


def failure_line(failure: dict) -> str:
    message = " ".join(str(failure.get("error_message") or "").split())
    if len(message) > 160:
        message = message[:159] + "…"
    return (
        f"failed: {failure.get('task') or '?'} ({failure.get('key') or '?'}) "
        f"{failure.get('error_type') or 'Exception'}: {message}"
    )


def render(snap: dict, status: str, elapsed: float | None, *, title: str = "", full=True):
    """The snapshot as a rich renderable: a table with a bar per task name, the pace, and
    (`full`) the workers with their latest CPU and memory, the last failures, the cache."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar as Bar
    from rich.table import Table
    from rich.text import Text

    total = snap["total"]
    table = Table(expand=False, box=None)
    for column, justify in (("task", "left"), ("progress", "left"), ("done", "right")):
        table.add_column(column, justify=justify)
    for column in ("failed", "running", "queued"):
        table.add_column(column, justify="right")
    rows = list(snap["tasks"].items())
    if len(rows) != 1:
        rows.append(("all tasks", total))
    for name, row in rows:
        ended = row["completed"] + row["failed"] + row["cancelled"]
        table.add_row(
            name,
            Bar(total=max(row["submitted"], 1), completed=ended, width=30),
            f"{row['completed']}/{row['submitted']}",
            str(row["failed"]),
            str(row["running"]),
            str(row["queued"]),
        )
    head = Text(
        (f"{title} · " if title else "")
        + f"{status} · {duration(elapsed)} elapsed · {total['submitted']} submitted so far · "
        + pace_text(snap)
    )
    parts = [head, table]
    if full:
        workers = Table(box=None, expand=False)
        for column, justify in (("worker", "left"), ("cpu", "right"), ("memory", "right")):
            workers.add_column(column, justify=justify)
        for w in snap["workers"]:
            cpu = w["cpu_percent"]
            workers.add_row(
                f"{w['worker_name'] or '?'} {w['worker']}",
                "-" if cpu is None else f"{cpu:.0f}%",
                megabytes(w["memory_bytes"]),
            )
        parts += [Text(f"Workers: {len(snap['workers'])}"), workers]
        if snap["failures"]:
            parts.append(Text("Last failures:"))
            parts += [Text("  " + failure_line(f)) for f in snap["failures"]]
        cache = snap["cache"]
        parts.append(Text(f"Cache: {cache['hits']} hits of {cache['lookups']} lookups"))
    return Group(*parts)


def progress_wanted(setting: bool | None, stream=None) -> bool:
    """Whether a session shows its progress bar: `setting` when given, else
    $SCALABLE_PROGRESS (on/off), else when `stream` (stderr) is a terminal."""
    if setting is not None:
        return bool(setting)
    import os

    value = os.environ.get(PROGRESS_ENV)
    if value is not None and value.strip().lower() in _ON | _OFF:
        return value.strip().lower() in _ON
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """A session's progress bar: a thread that follows the run directory every `interval`
    seconds and draws on stderr with rich. It never breaks the workflow: an error stops
    the bar with one warning."""

    def __init__(self, run_dir: Path, interval: float = 1.0, stream=None):
        self.progress = RunProgress(run_dir)
        self.interval = interval
        self._stream = sys.stderr if stream is None else stream
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None
        self._started = time.monotonic()
        self._failed = False

    def start(self) -> ProgressBar:
        try:
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self._stream)
            self._live = Live(self._render(), console=console, auto_refresh=False, transient=False)
            self._live.start()
        except Exception as exc:
            self._fail(exc)
            return self
        self._thread = threading.Thread(target=self._loop, name="scalable-otel-progress")
        self._thread.daemon = True
        self._thread.start()
        return self

    def _render(self, status: str = "running"):
        snap = self.progress.snapshot()
        return render(snap, status, time.monotonic() - self._started, full=False)

    def _refresh(self, final: bool = False, status: str = "running") -> None:
        self.progress.poll(final)
        self._live.update(self._render(status), refresh=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._refresh()
            except Exception as exc:
                self._fail(exc)
                return

    def _fail(self, exc: Exception) -> None:
        if not self._failed:
            self._failed = True
            logger.warning("scalable-otel: progress bar off (%s); the workflow goes on", exc)
        self._stop.set()
        live, self._live = self._live, None
        if live is not None:
            try:
                live.stop()
            except Exception:
                pass

    def stop(self, status: str | None = None) -> None:
        """Draw the last state (all lines on disk by now) with the run's `status`, and
        stop the bar."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._live is None:
            return
        try:
            self._refresh(final=True, status=status or "ended")
            self._live.stop()
        except Exception as exc:
            self._fail(exc)
        self._live = None
