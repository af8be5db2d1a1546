"""Errors a user can cause and fix; the CLI prints their message as one line."""


class ScalableError(Exception):
    """A user-facing error: its message says what went wrong and what to do."""


class RunNotFound(ScalableError):
    """No run matches what was asked for."""
