"""Answers from run directories, as data: reports, comparisons, history, trends, advice.

Each module does one job; the CLI formats what these functions return.
"""

from .load import Run, load_run, resolve_run
from .report import format_report, report

__all__ = ["Run", "load_run", "resolve_run", "report", "format_report"]
