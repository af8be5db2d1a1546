"""Options and output shared by the commands."""

from __future__ import annotations

import math
from pathlib import Path

import click
import orjson

runs_dir_option = click.option(
    "--runs-dir",
    type=click.Path(file_okay=False),
    help="Where runs are (default: $SCALABLE_RUNS_DIR, else .scalable/runs).",
)
format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Text for people, JSON for programs.",
)
format_markdown_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="Text for people, JSON for programs, markdown (a GitHub table) for a pull-request "
    "comment or $GITHUB_STEP_SUMMARY.",
)
output_option = click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write to this file instead of the terminal.",
)


def to_json(data) -> str:
    """JSON of analysis results (NaN and infinities as null, other odd values as text)."""
    return orjson.dumps(
        data, default=str, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    ).decode()


#: The exit code of a CI gate that failed (`report --compare --fail-if-slower`,
#: `trends --fail-on-regression`); docs/reliability.md, "Exit codes".
GATE_FAILED = 3


def percent(ctx, param, value: float | None) -> float | None:
    """A click callback: a percentage must be a finite number (FloatRange lets NaN by)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number.", ctx, param)
    return value


def fail_gate(reason: str) -> None:
    """End the command with `GATE_FAILED`, saying why on one line of stderr."""
    click.echo(f"Gate failed: {reason}", err=True)
    click.get_current_context().exit(GATE_FAILED)


def emit(data, text: str, fmt: str, output: str | None, markdown: str | None = None) -> None:
    """Print the result, or write it to `output` and say where. `markdown` is the
    result as markdown, for the commands that offer `--format markdown`."""
    content = to_json(data) if fmt == "json" else markdown if fmt == "markdown" else text
    if output:
        Path(output).write_text(content + "\n")
        click.echo(f"Written to {output}")
    else:
        click.echo(content)
