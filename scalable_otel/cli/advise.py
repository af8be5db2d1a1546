"""`scalable advise`: resource recommendations from observed usage, and whether more
workers would shorten a run."""

from __future__ import annotations

import click

from ..errors import ScalableError
from .options import emit, energy_options, format_option, output_option, runs_dir_option


@click.command()
@click.option("--task", help="The task name to advise on.")
@click.option("--all", "all_tasks", is_flag=True, help="Advise on every task name seen.")
@click.option("--target", help="Only runs on this target, and its allocation rules.")
@click.option(
    "--group",
    help="Only tasks submitted in this distributed.span block, by its path: calibration/north.",
)
@click.option(
    "--workers",
    type=int,
    help="Say whether this many workers would shorten a run (the last one, or --run).",
)
@click.option("--run", "run", help="The run --workers replays (default: the most recent).")
@runs_dir_option
@format_option
@output_option
@energy_options
def advise(task, all_tasks, target, group, workers, run, runs_dir, fmt, output, energy) -> None:
    """Recommend CPUs and memory for a task from its measured use over past runs; with
    --workers, say whether more workers would shorten a run or only cost more (from a
    what-if replay of the run: see `scalable whatif`).

    \b
    Examples:
        scalable advise --task run_simulation
        scalable advise --all --target hpc
        scalable advise --all --group calibration
        scalable advise --workers 8
    """
    from ..analysis.advise import advise as make_advice
    from ..analysis.advise import advise_all, format_advice
    from ..analysis.groups import parse_path

    path = None
    if group is not None:
        path = parse_path(group)
        if not path:
            raise ScalableError(f"--group {group!r} names no group: give its path, a/b")
        if workers is not None and not (task or all_tasks):
            raise ScalableError("--group goes with --task NAME or --all")

    if workers is None:
        if run is not None:
            raise ScalableError("--run goes with --workers N")
        if bool(task) == bool(all_tasks):
            raise ScalableError("give --task NAME or --all (or --workers N)")
    elif task and all_tasks:
        raise ScalableError("give --task NAME or --all, not both")
    texts, data = [], {}
    if task or all_tasks:
        advice = (
            advise_all(runs_dir, target=target, energy_options=energy, group=path)
            if all_tasks
            else [make_advice(task, runs_dir, target=target, energy_options=energy, group=path)]
        )
        texts += [format_advice(a) for a in advice]
        data["tasks"] = [a.to_dict() for a in advice]
    if workers is not None:
        from ..analysis import load_run
        from ..analysis.whatif import more_workers, whatif

        loaded = load_run(run, runs_dir, last=run is None, inside_root=True)
        result = whatif(loaded, workers=workers)
        texts.append(f"{more_workers(result)} ({result.run_id})")
        data["more_workers"] = {"text": more_workers(result), **result.to_dict()}
    if workers is None:  # the output as it always was
        emit(data["tasks"] if all_tasks else data["tasks"][0], "\n\n".join(texts), fmt, output)
    else:
        emit(data, "\n\n".join(texts), fmt, output)


COMMANDS = [advise]
