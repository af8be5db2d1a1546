"""`scalable runs` and `scalable trends`: the run history."""

from __future__ import annotations

import click

from .options import emit, energy_options, format_option, output_option, runs_dir_option


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
@click.option("--last", "last_n", type=click.IntRange(min=1), help="Only the N most recent runs.")
@runs_dir_option
@format_option
@output_option
@energy_options
def trends(task, last_n, runs_dir, fmt, output, energy) -> None:
    """Durations, utilization, cache hit rate and energy over the runs; flags regressions.

    A task regresses when its durations in the latest runs lie outside its
    spread in the runs before; the run where it started is named.

    \b
    Examples:
        scalable trends
        scalable trends --task run_simulation --last 20
    """
    from ..analysis.trends import format_trends
    from ..analysis.trends import trends as make_trends

    result = make_trends(runs_dir, task=task, last=last_n, energy_options=energy)
    emit(result.to_dict(), format_trends(result), fmt, output)


COMMANDS = [runs, trends]
