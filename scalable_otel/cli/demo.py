"""`scalable demo`: the quickstart workflow on a local Dask cluster, then its report."""

from __future__ import annotations

import click


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
    """Run the quickstart workflow (scalable_otel/demo.py, the same as
    examples/quickstart.py) on a local Dask cluster and report on it.

    \b
    Example:
        scalable demo --workers 2 --scenarios 40
    """
    from ..demo import run_demo

    run_demo(n_workers, scenarios)


COMMANDS = [demo]
