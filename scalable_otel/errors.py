"""Errors a user can cause and fix; the CLI prints their message as one line."""


class ScalableError(Exception):
    """A user-facing error: its message says what went wrong and what to do."""


class RunNotFound(ScalableError):
    """No run matches what was asked for."""


def shown(text) -> str:
    """A name or path for a one-line message: as it is, or quoted (`repr`) when it holds a
    newline, a tab or another character that is not printable."""
    text = str(text)
    return text if text.isprintable() else repr(text)
