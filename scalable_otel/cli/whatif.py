"""`scalable whatif`: a run replayed with other workers, or with one task made faster."""

from __future__ import annotations

import click

from ..errors import ScalableError
from .options import emit, format_option, output_option, runs_dir_option


def parse_faster(values: tuple[str, ...]) -> dict[str, float]:
    """`TASK=FACTOR` options as {task: factor} (checked further by the analysis)."""
    faster: dict[str, float] = {}
    for value in values:
        task, sep, factor = value.rpartition("=")
        if not sep or not task:
            raise ScalableError(f"--faster takes TASK=FACTOR, such as simulate=2, not {value!r}")
        try:
            faster[task] = float(factor)
        except ValueError:
            raise ScalableError(
                f"--faster {task}: FACTOR must be a number, not {factor!r}"
            ) from None
    return faster


@click.command()
@click.argument("run", required=False)
@click.option("--last", "--latest", "last", is_flag=True, help="The most recent run.")
@click.option("--workers", type=int, help="Workers to replay with (default: the run's own).")
@click.option("--threads", "threads", type=int, help="Threads per worker (default: the run's).")
@click.option(
    "--faster",
    multiple=True,
    metavar="TASK=FACTOR",
    help="Divide the durations of task TASK by FACTOR (repeatable).",
)
@runs_dir_option
@format_option
@output_option
def whatif(run, last, workers, threads, faster, runs_dir, fmt, output) -> None:
    """Predict a run's duration with other workers, or with a task made faster.

    Replays the run's recorded graph and measured durations through a list scheduler and
    prints the prediction beside the real duration and a replay of the run as it was (the
    model's own error on this run). RUN is a run id, a unique prefix of one, or a run
    directory; the default is the most recent run.

    \b
    Examples:
        scalable whatif --last --workers 4
        scalable whatif run-20260520T035200Z-demeter-lulcc-a1b2c3d4 --faster run_simulation=2
        scalable whatif --last --workers 8 --threads 2 --format json
    """
    from ..analysis import load_run
    from ..analysis.whatif import format_whatif
    from ..analysis.whatif import whatif as replay

    speedups = parse_faster(faster)
    if run is not None and last:
        raise ScalableError("give the run once: as RUN or as --last")
    loaded = load_run(run, runs_dir, last=last or run is None, inside_root=True)
    result = replay(loaded, workers=workers, threads_per_worker=threads, faster=speedups)
    emit(result.to_dict(), format_whatif(result), fmt, output)


COMMANDS = [whatif]
