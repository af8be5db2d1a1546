"""`scalable demo`: the quickstart workflow on a local Dask cluster, then its report."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import click

from ..errors import ScalableError


def _quickstart() -> Path:
    here = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"
    if not here.is_file():
        raise ScalableError(
            "examples/quickstart.py not found: run `scalable demo` from a "
            "checkout installed with `pip install -e .`"
        )
    return here


@click.command()
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


COMMANDS = [demo]
