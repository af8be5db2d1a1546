"""`scalable report`: one run's report, two runs compared, or an HTML report."""

from __future__ import annotations

import click

from ..errors import ScalableError
from .options import emit, energy_options, format_option, output_option, runs_dir_option


@click.command()
@click.argument("run", required=False)
@click.option("--last", "--latest", "last", is_flag=True, help="The most recent run.")
@click.option("--run-id", help="A run id, or a unique prefix of one.")
@runs_dir_option
@format_option
@output_option
@click.option(
    "--compare",
    nargs=2,
    metavar="A B",
    help="Compare two runs (ids, prefixes or paths): B against A.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write a self-contained HTML report (timeline, resources, durations) here.",
)
@energy_options
def report(run, last, run_id, runs_dir, fmt, output, compare, html_file, energy) -> None:
    """Summarize a run: tasks, durations, workers, cache, cost, energy and carbon.

    RUN is a run id, a unique prefix of one, or a run directory; the default is the
    most recent run.

    \b
    Examples:
        scalable report --last
        scalable report run-20260520T035200Z-demeter-lulcc-a1b2c3d4
        scalable report --run-id run-2026 --format json
        scalable report --compare run-abc123 run-def456
        scalable report --last --html report.html
        scalable report --last --pue 1.2 --carbon-intensity 180
    """
    from ..analysis import load_run

    if compare:
        if run is not None or run_id is not None or last:
            raise ScalableError("--compare takes its two runs itself: drop RUN, --run-id, --last")
        from ..analysis.compare import compare as compare_runs
        from ..analysis.compare import format_compare

        a, b = (load_run(spec, runs_dir, inside_root=True) for spec in compare)
        result = compare_runs(a, b, energy_options=energy)
        emit(result, format_compare(result), fmt, output)
        return
    if run is not None and run_id is not None:
        raise ScalableError("give the run once: as RUN or as --run-id")
    spec = run if run is not None else run_id  # an empty one is an error, not the last run
    loaded = load_run(spec, runs_dir, last=last or spec is None, inside_root=True)
    from ..analysis.report import format_report
    from ..analysis.report import report as make_report

    summary = make_report(loaded, energy_options=energy)
    emit(summary, format_report(summary), fmt, output)
    if html_file:
        from ..analysis.html import write_html_report

        path = write_html_report(loaded, html_file, summary=summary)
        click.echo(f"HTML report written to {path}", err=fmt == "json" and not output)


COMMANDS = [report]
