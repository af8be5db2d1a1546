"""`scalable runs` and `scalable trends`: the run history."""

from __future__ import annotations

import click

from .options import (
    GATE_FAILED,
    emit,
    energy_options,
    fail_gate,
    format_markdown_option,
    format_option,
    output_option,
    runs_dir_option,
)


@click.command()
@runs_dir_option
@click.option("--limit", type=click.IntRange(min=1), help="Only the N most recent runs.")
@format_option
@output_option
def runs(runs_dir, limit, fmt, output) -> None:
    """List the runs, one line each, newest last.

    \b
    Examples:
        scalable runs
        scalable runs --limit 10 --format json
    """
    from ..analysis.runs import format_runs, list_run_summaries

    rows = list_run_summaries(runs_dir, limit)
    emit(rows, format_runs(rows), fmt, output)


@click.command()
@click.option("--task", help="One task name (default: all tasks).")
@click.option(
    "--group",
    help="Durations of the tasks of one distributed.span block only, by its path: a/b.",
)
@click.option("--last", "last_n", type=click.IntRange(min=1), help="Only the N most recent runs.")
@runs_dir_option
@format_markdown_option
@output_option
@click.option(
    "--fail-on-regression",
    is_flag=True,
    help=f"Exit with code {GATE_FAILED} when a task (the --task one, if given) regressed.",
)
@energy_options
def trends(task, group, last_n, runs_dir, fmt, output, fail_on_regression, energy) -> None:
    """Durations, utilization, cache hit rate and energy over the runs; flags regressions.

    A task regresses when its durations in the latest runs lie outside its
    spread in the runs before; the run where it started is named. Tasks served
    from the cache are left out of the durations. --fail-on-regression makes it
    a CI gate: exit code 3 and one line on stderr on a regression.

    \b
    Examples:
        scalable trends
        scalable trends --task run_simulation --last 20
        scalable trends --group calibration/north
        scalable trends --last 20 --fail-on-regression --format markdown
    """
    from ..analysis.groups import parse_path
    from ..analysis.trends import format_trends, format_trends_markdown, regression_line
    from ..analysis.trends import trends as make_trends
    from ..errors import ScalableError

    path = None
    if group is not None:
        path = parse_path(group)
        if not path:
            raise ScalableError(f"--group {group!r} names no group: give its path, a/b")
    result = make_trends(runs_dir, task=task, last=last_n, energy_options=energy, group=path)
    emit(result.to_dict(), format_trends(result), fmt, output, format_trends_markdown(result))
    if fail_on_regression and result.regressions:
        fail_gate("; ".join(regression_line(t) for t in result.regressions))


COMMANDS = [runs, trends]
