"""`scalable report`: one run's report, two runs compared, or an HTML report."""

from __future__ import annotations

import click

from ..errors import ScalableError
from .options import (
    GATE_FAILED,
    emit,
    energy_options,
    fail_gate,
    format_markdown_option,
    output_option,
    percent,
    runs_dir_option,
)


@click.command()
@click.argument("run", required=False)
@click.option("--last", "--latest", "last", is_flag=True, help="The most recent run.")
@click.option("--run-id", help="A run id, or a unique prefix of one.")
@runs_dir_option
@format_markdown_option
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
@click.option(
    "--fail-if-slower",
    "fail_pct",
    type=click.FloatRange(min=0),
    metavar="PCT",
    callback=percent,
    help=f"With --compare: exit with code {GATE_FAILED} when the verdict is that B's task "
    "executions are slower by PCT percent or more (cache hits never count).",
)
@click.option(
    "--critical-path",
    "critical",
    is_flag=True,
    help="Add the critical path: the chain of tasks that set the run's duration.",
)
@click.option(
    "--time-breakdown",
    "breakdown",
    is_flag=True,
    help="Add where the time went: Dask's fine performance metrics by activity, task "
    "prefix and span.",
)
@energy_options
def report(
    run,
    last,
    run_id,
    runs_dir,
    fmt,
    output,
    compare,
    html_file,
    fail_pct,
    critical,
    breakdown,
    energy,
) -> None:
    """Summarize a run: tasks, durations, workers, cache, cost, energy and carbon.

    RUN is a run id, a unique prefix of one, or a run directory; the default is the
    most recent run.

    With --compare A B, tasks served from the cache are left out of the duration
    statistics and counted apart. --fail-if-slower PCT makes it a CI gate: exit
    code 3 and one line on stderr when B's executions are slower (beyond the
    noise) by PCT percent or more.

    \b
    Examples:
        scalable report --last
        scalable report run-20260520T035200Z-demeter-lulcc-a1b2c3d4
        scalable report --run-id run-2026 --format json
        scalable report --compare run-abc123 run-def456
        scalable report --compare run-abc123 run-def456 --fail-if-slower 10 --format markdown
        scalable report --last --html report.html
        scalable report --last --critical-path
        scalable report --last --time-breakdown
        scalable report --last --pue 1.2 --carbon-intensity 180
    """
    from ..analysis import load_run

    if compare:
        if run is not None or run_id is not None or last:
            raise ScalableError("--compare takes its two runs itself: drop RUN, --run-id, --last")
        if critical or breakdown:
            option = "--critical-path" if critical else "--time-breakdown"
            raise ScalableError(f"{option} is of one run: drop --compare, or name one run")
        from ..analysis.compare import compare as compare_runs
        from ..analysis.compare import format_compare, format_compare_markdown, gate

        a, b = (load_run(spec, runs_dir, inside_root=True) for spec in compare)
        result = compare_runs(a, b, energy_options=energy)
        emit(result, format_compare(result), fmt, output, format_compare_markdown(result))
        reason = None if fail_pct is None else gate(result, fail_pct)
        if reason:
            fail_gate(reason)
        return
    if fail_pct is not None:
        raise ScalableError("--fail-if-slower needs --compare A B")
    if fmt == "markdown":
        raise ScalableError("--format markdown is for --compare A B; use text or json")
    if run is not None and run_id is not None:
        raise ScalableError("give the run once: as RUN or as --run-id")
    spec = run if run is not None else run_id  # an empty one is an error, not the last run
    loaded = load_run(spec, runs_dir, last=last or spec is None, inside_root=True)
    from ..analysis.report import format_report
    from ..analysis.report import report as make_report

    summary = make_report(loaded, energy_options=energy)
    text = format_report(summary)
    if critical:
        from ..analysis.critical_path import critical_path, format_critical_path

        summary["critical_path"] = critical_path(loaded).to_dict()
        text += "\n\n" + format_critical_path(summary["critical_path"])
    if breakdown:
        from ..analysis.fine_metrics import fine_metrics, format_fine_metrics

        summary["fine_metrics"] = fine_metrics(loaded)
        text += "\n\n" + format_fine_metrics(summary["fine_metrics"])
    emit(summary, text, fmt, output)
    if html_file:
        from ..analysis.html import write_html_report

        path = write_html_report(loaded, html_file, summary=summary)
        click.echo(f"HTML report written to {path}", err=fmt == "json" and not output)


COMMANDS = [report]
