"""Reading run directories into pandas and summarizing them."""

from .load import Run, load_run, resolve_run
from .report import report, format_report

__all__ = ["Run", "load_run", "resolve_run", "report", "format_report"]
