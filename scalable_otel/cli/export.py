"""`scalable export`: a run's JSONL files in other formats."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ScalableError
from .options import runs_dir_option


@click.command()
@click.argument("run", required=False)
@click.option("--parquet", is_flag=True, help="Write each JSONL file as Parquet.")
@click.option("--last", "--latest", "last", is_flag=True, help="The most recent run.")
@click.option("--all", "all_runs", is_flag=True, help="Every run in the runs directory.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Where to write: one folder per run inside (default: .scalable/parquet).",
)
@runs_dir_option
def export(run, parquet, last, all_runs, out, runs_dir) -> None:
    """Export runs: each JSONL file as typed Parquet (timestamps as timestamps).

    \b
    Examples:
        scalable export --parquet --last
        scalable export --parquet run-20260520T035200Z-demeter-lulcc-a1b2c3d4 --out exports/
        scalable export --parquet --all --out exports/
    """
    from ..analysis.export import export_all, export_parquet
    from ..analysis.load import resolve_run
    from ..rundir import runs_dir as default_runs_dir

    if not parquet:
        raise ScalableError("say which format: --parquet")
    if sum(map(bool, (run, last, all_runs))) != 1:
        raise ScalableError("give one of RUN, --last or --all")
    root = default_runs_dir(runs_dir)
    out = Path(out) if out else root.parent / "parquet"
    if all_runs:
        written = export_all(root, out)
        click.echo(f"Exported {len(written)} runs to {out}")
        return
    path = resolve_run(run, runs_dir, last=last, inside_root=True)
    target = out / path.name
    files = export_parquet(path, target)
    click.echo(f"Exported {len(files)} files of {path.name} to {target}")


COMMANDS = [export]
