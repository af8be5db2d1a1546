"""The `scalable` command line: it parses arguments and formats; the answers come from
`scalable_otel.analysis`."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import click

from .errors import ScalableError


class _Group(click.Group):
    """Turns a user mistake into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ScalableError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="scalable-otel")
def main() -> None:
    """Telemetry for Dask task workflows: run reports from .scalable/runs/."""


def _quickstart() -> Path:
    here = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"
    if not here.is_file():
        raise ScalableError(
            "examples/quickstart.py not found: run `scalable demo` from a "
            "checkout installed with `pip install -e .`"
        )
    return here


@main.command()
@click.option("--workers", "n_workers", default=2, show_default=True, help="Local Dask workers.")
@click.option("--scenarios", default=40, show_default=True, help="Simulations to run.")
def demo(n_workers: int, scenarios: int) -> None:
    """Run examples/quickstart.py on a local Dask cluster and report on it.

    \b
    Example:
        scalable demo --workers 2 --scenarios 40
    """
    sys.argv = ["quickstart.py", "--workers", str(n_workers), "--scenarios", str(scenarios)]
    runpy.run_path(str(_quickstart()), run_name="__main__")


@main.command()
@click.argument("run", required=False)
@click.option("--last", "--latest", "last", is_flag=True, help="The most recent run.")
@click.option("--run-id", help="A run id, or a unique prefix of one.")
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False),
    help="Where runs are (default: $SCALABLE_RUNS_DIR, else .scalable/runs).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report to this file instead of the terminal.",
)
def report(run, last, run_id, runs_dir, fmt, output) -> None:
    """Summarize a run: tasks, durations, workers, cache, cost.

    \b
    Examples:
        scalable report --last
        scalable report run-20260520T035200Z-demeter-lulcc-a1b2c3d4
        scalable report --run-id run-2026 --format json
    """
    from .analysis import format_report, load_run
    from .analysis import report as make_report

    spec = run or run_id
    summary = make_report(load_run(spec, runs_dir, last=last or spec is None))
    text = json.dumps(summary, indent=2, default=str) if fmt == "json" else format_report(summary)
    if output:
        Path(output).write_text(text + "\n")
        click.echo(f"Report written to {output}")
    else:
        click.echo(text)


if __name__ == "__main__":  # pragma: no cover
    main()
