"""`scalable export`: a run's files in other formats, or its spans to an OTLP backend."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ScalableError
from .options import runs_dir_option


@click.command()
@click.argument("run", required=False)
@click.option("--parquet", is_flag=True, help="Write each JSONL file as Parquet.")
@click.option(
    "--otlp",
    is_flag=True,
    help="Send the run's recorded spans (traces.otlp.jsonl) to an OTLP endpoint.",
)
@click.option("--last", "--latest", "last", is_flag=True, help="The most recent run.")
@click.option("--all", "all_runs", is_flag=True, help="Every run in the runs directory.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Where to write: one folder per run inside (default: .scalable/parquet).",
)
@click.option(
    "--endpoint",
    metavar="URL",
    help="OTLP endpoint for --otlp (default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
    "else $OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318, or 4317 for grpc).",
)
@click.option(
    "--protocol",
    type=click.Choice(["grpc", "http/protobuf"]),
    help="OTLP protocol for --otlp (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf).",
)
@runs_dir_option
def export(run, parquet, otlp, last, all_runs, out, endpoint, protocol, runs_dir) -> None:
    """Export runs: each JSONL file as typed Parquet (timestamps as timestamps), or the
    run's spans to an OTLP backend (Jaeger, Tempo, Phoenix, a collector) with their
    original trace and span ids and times.

    \b
    Examples:
        scalable export --parquet --last
        scalable export --parquet run-20260520T035200Z-demeter-lulcc-a1b2c3d4 --out exports/
        scalable export --parquet --all --out exports/
        scalable export --otlp --last --endpoint http://127.0.0.1:4318
        scalable export --otlp --last --endpoint http://127.0.0.1:4317 --protocol grpc
        OTEL_EXPORTER_OTLP_ENDPOINT=https://otlp.example.com \\
          OTEL_EXPORTER_OTLP_HEADERS="x-api-key=..." scalable export --otlp --all

    \b
    With --otlp, headers (API keys) come only from OTEL_EXPORTER_OTLP_HEADERS or
    OTEL_EXPORTER_OTLP_TRACES_HEADERS, never from the command line. OTLP/HTTP posts to
    URL/v1/traces unless URL already ends with /v1/traces.
    """
    from ..analysis.load import resolve_run
    from ..rundir import runs_dir as default_runs_dir

    if parquet == otlp:
        raise ScalableError(
            "say which format: --parquet or --otlp"
            if not parquet
            else "give one format: --parquet or --otlp"
        )
    if sum(map(bool, (run, last, all_runs))) != 1:
        raise ScalableError("give one of RUN, --last or --all")
    if otlp:
        if out:
            raise ScalableError("--out is for --parquet; --otlp sends to --endpoint")
        if all_runs:
            _replay_all(runs_dir, endpoint, protocol)
        else:
            _replay_one(resolve_run(run, runs_dir, last=last, inside_root=True), endpoint, protocol)
        return
    if endpoint or protocol:
        raise ScalableError("--endpoint and --protocol are for --otlp")

    from ..analysis.export import export_all, export_parquet

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


def _replay_one(path: Path, endpoint, protocol) -> None:
    from ..analysis.replay import replay

    _say(replay(path, endpoint=endpoint, protocol=protocol))


def _replay_all(runs_dir, endpoint, protocol) -> None:
    from ..analysis.replay import TRACES_FILE, replay, resolve_endpoint
    from ..args import redact_url
    from ..errors import RunNotFound
    from ..rundir import list_runs
    from ..rundir import runs_dir as default_runs_dir

    root = default_runs_dir(runs_dir)
    runs = list_runs(root)
    if not runs:
        raise RunNotFound(f"no runs in {root}: run a workflow first (or pass --runs-dir)")
    recorded = [r for r in runs if (r / TRACES_FILE).is_file()]
    if not recorded:
        url = redact_url(resolve_endpoint(endpoint, protocol)[0])
        raise ScalableError(f"nothing sent to {url}: no run in {root} has a {TRACES_FILE}")
    for path in recorded:
        _say(replay(path, endpoint=endpoint, protocol=protocol))
    if len(recorded) < len(runs):
        missing = len(runs) - len(recorded)
        click.echo(f"Skipped {missing} run{'s' if missing > 1 else ''} without {TRACES_FILE}")


def _say(result: dict) -> None:
    line = f"Sent {result['spans']} spans of {result['run_id']} to {result['endpoint']}"
    notes = []
    if result["bad_lines"]:
        notes.append(f"skipped {result['bad_lines']} unreadable lines")
    if result["rejected_spans"]:
        notes.append(f"the endpoint rejected {result['rejected_spans']} spans")
    click.echo(line + (f" ({'; '.join(notes)})" if notes else ""))


COMMANDS = [export]
