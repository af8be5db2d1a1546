"""`scalable advise`: resource recommendations from observed usage."""

from __future__ import annotations

import click

from ..errors import ScalableError
from .options import emit, energy_options, format_option, output_option, runs_dir_option


@click.command()
@click.option("--task", help="The task name to advise on.")
@click.option("--all", "all_tasks", is_flag=True, help="Advise on every task name seen.")
@click.option("--target", help="Only runs on this target, and its allocation rules.")
@runs_dir_option
@format_option
@output_option
@energy_options
def advise(task, all_tasks, target, runs_dir, fmt, output, energy) -> None:
    """Recommend CPUs and memory for a task from its measured use over past runs.

    \b
    Examples:
        scalable advise --task run_simulation
        scalable advise --all --target hpc
    """
    from ..analysis.advise import advise as make_advice
    from ..analysis.advise import advise_all, format_advice

    if bool(task) == bool(all_tasks):
        raise ScalableError("give --task NAME or --all")
    if all_tasks:
        advice = advise_all(runs_dir, target=target, energy_options=energy)
    else:
        advice = [make_advice(task, runs_dir, target=target, energy_options=energy)]
    text = "\n\n".join(format_advice(a) for a in advice)
    data = [a.to_dict() for a in advice]
    emit(data if all_tasks else data[0], text, fmt, output)


COMMANDS = [advise]
