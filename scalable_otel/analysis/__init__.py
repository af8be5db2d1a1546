"""Reading run directories into pandas and summarizing them."""

from .load import Run, load_run, resolve_run
from .report import format_report, report

__all__ = ["Run", "load_run", "resolve_run", "report", "format_report"]
