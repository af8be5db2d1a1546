"""Secrets out of what a worker logs about a run's tasks.

Dask's worker logs each failed task's exception and traceback ("Compute Failed", on the
`distributed.worker` logger) to the worker's stderr, which for a local cluster is the
session's own. While a run's worker plugin is set up, a filter on that logger cuts out
of each record what the run's redaction rules find: `Redaction.scrub`, the function
that cleans the error messages and tracebacks of failures.jsonl. It runs only for the
records Dask really logs (a failure, a warning), never on a task's hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..args import Redaction

DASK_WORKER_LOGGERS = ("distributed.worker",)


class ScrubbingFilter(logging.Filter):
    """A logging filter rewriting each record's message and traceback with `scrub`."""

    def __init__(self, scrub: Callable[[str], str]):
        super().__init__()
        self._scrub = scrub

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            clean = self._scrub(message)
            if clean != message:
                record.msg, record.args = clean, ()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._scrub(record.exc_text)
        except Exception:  # a record that cannot be formatted is Dask's to report
            pass
        return True


def scrub_worker_logs(redaction: Redaction) -> Callable[[], None]:
    """Filter Dask's worker logs in this process with `redaction`; returns the undo.

    Example::

        undo = scrub_worker_logs(Redaction(values=[r"MRN-\\d{6}"]))
        ...
        undo()
    """
    scrubbing = ScrubbingFilter(redaction.scrub)
    loggers = [logging.getLogger(name) for name in DASK_WORKER_LOGGERS]
    for dask_logger in loggers:
        dask_logger.addFilter(scrubbing)

    def undo() -> None:
        for dask_logger in loggers:
            dask_logger.removeFilter(scrubbing)

    return undo
