"""The `scalable` command line. Commands only parse arguments and format; every answer
comes from a function of `scalable_otel.analysis`, so a notebook gets the same.

Exit codes (docs/reliability.md, "Exit codes"): 0 done; 2 a mistake the user can fix (a
bad argument, no such run, a file that cannot be read or written, a value that cannot be
used), always one line on stderr; 3 a CI gate failed (`report --compare --fail-if-slower`,
`trends --fail-on-regression`), one line on stderr after the answer; 130 Ctrl-C; 1 only
an error nobody foresaw, a bug, which keeps its traceback so that it can be reported.
"""

from __future__ import annotations

import click

from ..errors import ScalableError, shown

# click >= 8.2 raises it for a group called with no arguments: the help, not an error
_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class UserMistake(click.ClickException):
    """One line on stderr, `Error: ...`, and exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))


def _usage(exc: click.UsageError) -> UserMistake:
    """click's usage error on one line, with where to find the help."""
    message = exc.format_message()
    if exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return UserMistake(message)


def _os_error(exc: OSError) -> str:
    """`Permission denied: PATH`, without the errno."""
    if exc.strerror and exc.filename is not None:
        return f"{exc.strerror}: {shown(exc.filename)}"
    return str(exc)


class _Group(click.Group):
    """Turns a user mistake into one line on stderr and exit code 2, never a traceback."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except _HELP:
            raise
        except click.UsageError as exc:
            raise _usage(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a command's bad argument, or no such command
            raise _usage(exc) from None
        except ScalableError as exc:
            raise UserMistake(str(exc)) from None
        except OSError as exc:  # unreadable or unwritable files
            raise UserMistake(_os_error(exc)) from None
        except ValueError as exc:  # values that cannot be used: a URL, a manifest, a file's
            raise UserMistake(str(exc)) from None
        except KeyboardInterrupt:
            # 128 + SIGINT, as a shell reports it; a recorded run is closed by then
            click.echo("Aborted!", err=True)
            ctx.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="scalable-otel")
def main() -> None:
    """Telemetry for Dask task workflows: reports, history and advice from .scalable/runs/.

    \b
    Exit codes: 0 done; 2 a mistake to fix (one line on stderr); 3 a CI gate failed
    (report --compare --fail-if-slower, trends --fail-on-regression); 130 Ctrl-C;
    1 a bug in scalable-otel (with its traceback).
    """


def _register() -> None:
    from . import advise, demo, export, history, report, watch, whatif

    for module in (demo, report, history, advise, whatif, export, watch):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
