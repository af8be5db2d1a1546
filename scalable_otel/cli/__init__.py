"""The `scalable` command line. Commands only parse arguments and format; every answer
comes from a function of `scalable_otel.analysis`, so a notebook gets the same."""

from __future__ import annotations

import click

from ..errors import ScalableError


class _Group(click.Group):
    """Turns a user mistake into one line on stderr and exit code 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ScalableError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except (OSError, ValueError) as exc:
            # unreadable files, bad values from disk: still one line, still non-zero
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="scalable-otel")
def main() -> None:
    """Telemetry for Dask task workflows: reports, history and advice from .scalable/runs/."""


def _register() -> None:
    from . import advise, demo, export, history, report

    for module in (demo, report, history, advise, export):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
