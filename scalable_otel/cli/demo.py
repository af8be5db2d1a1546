"""`scalable demo`: the quickstart workflow on a local Dask cluster, then its report."""

from __future__ import annotations

import click

from ..errors import ScalableError


@click.command()
@click.option(
    "--workers",
    "n_workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Local Dask workers.",
)
@click.option(
    "--scenarios",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Simulations to run.",
)
def demo(n_workers: int, scenarios: int) -> None:
    """Run the quickstart workflow on a local Dask cluster and report on it.

    The workflow is scalable_otel/demo.py, which examples/quickstart.py runs too: a
    small model ensemble, a few of whose scenarios (7 and 23) fail on purpose.

    \b
    Example:
        scalable demo --workers 2 --scenarios 40
    """
    from ..demo import run_demo

    if run_demo(n_workers, scenarios) is None:
        raise ScalableError(
            "the demo ran but was not recorded, so it has no report: telemetry is off "
            "(SCALABLE_TELEMETRY, OTEL_SDK_DISABLED) or the run directory could not be "
            "written (see the warning above)"
        )


COMMANDS = [demo]
