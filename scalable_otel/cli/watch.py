"""`scalable watch`: a live view of a run, read from its files."""

from __future__ import annotations

import sys
import time

import click

from ..errors import ScalableError
from .options import emit, format_option, runs_dir_option


def _interval(ctx, param, value: float) -> float:
    if not value > 0 or value != value or value == float("inf"):
        raise click.BadParameter(f"{value} is not a number of seconds above 0.", ctx, param)
    return value


@click.command()
@click.argument("run", required=False)
@click.option("--last", "--latest", "last", is_flag=True, help="The most recent run.")
@runs_dir_option
@click.option(
    "--interval",
    type=float,
    default=1.0,
    show_default=True,
    callback=_interval,
    metavar="SECONDS",
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option(
    "--wait",
    is_flag=True,
    help="When no run is running, wait for the next one to start (instead of the last run).",
)
@format_option
def watch(run, last, runs_dir, interval, once, wait, fmt) -> None:
    """Follow a run as it goes on: tasks done, failed, running and queued per task
    name, throughput and ETA, workers with their CPU and memory, the last failures,
    cache hits. Ends with the report's summary when the run ends.

    RUN is a run id, a unique prefix of one, or a run directory; the default is the
    newest run still running, else (--wait) the next run to start, else the last run.
    It reads the run's files only, so it works from another process or host sharing the
    run directory, started before or during the run. Each refresh reads only what the
    files gained since the last one.
    When stdout is not a terminal it prints one plain line whenever the run's state
    changed (and every 30 s), and each new failure on a line of its own.

    \b
    Examples:
        scalable watch
        scalable watch run-20260520T035200Z-demeter-lulcc-a1b2c3d4
        scalable watch --wait                  # before the workflow starts
        scalable watch --last --interval 5 > progress.log
        scalable watch --once --format json
    """
    from ..analysis.watch import watch_run

    if wait and (run is not None or last):
        raise ScalableError("--wait is for the next run: drop RUN and --last")

    def waiting() -> None:
        click.echo("Waiting for a run to start (Ctrl-C to stop)...", err=True)

    watching = watch_run(run, runs_dir, last=last, wait=wait, interval=interval, on_wait=waiting)
    if once:
        snap = watching.refresh()
        emit(snap, _plain(snap), fmt, None)
        return
    if fmt == "json":
        _follow_json(watching, interval)
    elif sys.stdout.isatty():
        _follow_live(watching, interval)
    else:
        _follow_plain(watching, interval)
    _end(watching, fmt)


def _plain(snap: dict) -> str:
    from ..progress_view import failure_line, status_line

    lines = [f"Run: {snap['run_id']}", status_line(snap, snap["status"], snap["elapsed_s"])]
    lines += ["  " + failure_line(f) for f in snap["failures"]]
    return "\n".join(lines)


def _changed(snap: dict, before: dict | None) -> bool:
    keys = ("status", "total", "tasks", "cache", "failures")
    return before is None or any(snap[k] != before[k] for k in keys)


#: Seconds after which a plain line is printed even when nothing changed.
QUIET_LINE_S = 30.0


def _follow_plain(watching, interval: float) -> None:
    from ..progress_view import failure_line, status_line

    before, printed, failed = None, 0.0, 0  # failed: failures printed so far
    while True:
        snap = watching.refresh()
        now = time.monotonic()
        if _changed(snap, before) or now - printed >= QUIET_LINE_S:
            if before is None:
                click.echo(f"Run: {snap['run_id']}")
            click.echo(status_line(snap, snap["status"], snap["elapsed_s"]))
            new = min(snap["total"]["failed"] - failed, len(snap["failures"]))
            for failure in snap["failures"][len(snap["failures"]) - new :] if new > 0 else []:
                click.echo("  " + failure_line(failure))
            failed = snap["total"]["failed"]
            before, printed = snap, now
        if watching.ended:
            return
        time.sleep(interval)


def _follow_json(watching, interval: float) -> None:
    before = None
    while True:
        snap = watching.refresh()
        if _changed(snap, before):
            click.echo(json_line(snap))
            before = snap
        if watching.ended:
            return
        time.sleep(interval)


def _follow_live(watching, interval: float) -> None:
    from rich.console import Console
    from rich.live import Live

    from ..progress_view import render

    def view():
        snap = watching.refresh()
        title = f"Run {snap['run_id']}"
        return render(snap, snap["status"], snap["elapsed_s"], title=title)

    with Live(view(), console=Console(), auto_refresh=False) as live:
        while not watching.ended:
            time.sleep(interval)
            live.update(view(), refresh=True)


def _end(watching, fmt: str) -> None:
    from ..analysis.report import format_report
    from ..semconv import RUN_CRASHED

    summary = watching.summary()
    if fmt == "json":
        click.echo(json_line(summary))
        return
    if summary["status"] == RUN_CRASHED:
        click.echo("The run crashed: its process is gone; the summary holds what it recorded.")
    click.echo("")
    click.echo(format_report(summary))


def json_line(data) -> str:
    """One line of JSON (JSON Lines: a snapshot per change, the report last)."""
    import orjson

    return orjson.dumps(data, default=str).decode()


COMMANDS = [watch]
