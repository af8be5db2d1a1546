"""Options and output shared by the commands."""

from __future__ import annotations

import functools
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


def energy_options(command):
    """`--power-per-core`, `--pue` and `--carbon-intensity`: the energy estimate's constants,
    passed to the command as `energy`, a dict for `analysis.energy` (checked here: a bad
    one is a one-line error before any run is read)."""
    from ..energy_model import CARBON_INTENSITY, OPTION_NAMES, POWER_PER_CORE, PUE, constants

    helps = {
        POWER_PER_CORE: "Watts per CPU core for the energy estimate (default: the target's "
        "energy: in the manifest, else 12, Green Algorithms' average).",
        PUE: "Power usage effectiveness of the data centre (default: the manifest's, else "
        "1.67, the world average).",
        CARBON_INTENSITY: "Grams CO2e per kWh of the electricity (default: the manifest's, "
        "else 475, the world average).",
    }
    for key in (CARBON_INTENSITY, PUE, POWER_PER_CORE):
        command = click.option(OPTION_NAMES[key], key, type=float, help=helps[key])(command)

    def wrapped(*args, **kwargs):
        energy = {key: kwargs.pop(key) for key in OPTION_NAMES}
        constants(options=energy)
        return command_fn(*args, energy=energy, **kwargs)

    command_fn = command
    return functools.update_wrapper(wrapped, command)


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
