"""The run history: one summary row per run directory, oldest first."""

from __future__ import annotations

import os

from ..errors import RunNotFound
from ..rundir import list_runs, parse_iso, runs_dir
from .load import Run, read_meta, silent_since
from .report import seconds


def list_run_summaries(
    root: str | os.PathLike | None = None, limit: int | None = None
) -> list[dict]:
    """id, start, project, target, status, duration, tasks, failures of each run, newest last.

    >>> rows = list_run_summaries(limit=5)                          # doctest: +SKIP
    """
    base = runs_dir(root)
    paths = list_runs(base)
    if not paths:
        where = "is empty" if base.is_dir() else "does not exist"
        raise RunNotFound(
            f"runs directory {base} {where}: run a workflow first (or pass --runs-dir)"
        )
    if limit is not None:
        paths = paths[-limit:] if limit > 0 else []
    rows = []
    for path in paths:
        run = Run(path, read_meta(path))
        meta = run.meta
        counts = run.task_counts()
        rows.append(
            {
                "run_id": run.run_id,
                "path": str(path),
                "start_time": meta.get("start_time"),
                "project": meta.get("project"),
                "target": meta.get("target"),
                "status": run.status,
                # a crashed run of another host: when it last gave a sign of life
                "silent_since": silent_since(meta),
                "duration_s": meta.get("duration_s"),
                "tasks": counts["completed"] + counts["failed"],
                "tasks_submitted": counts["submitted"],
                "tasks_completed": counts["completed"],
                "failures": counts["failed"],
            }
        )
    return rows


def _start(value) -> str:
    return "?" if parse_iso(value) is None else value[:19].replace("T", " ")


def format_runs(rows: list[dict]) -> str:
    """The history as a fixed-width table."""
    width = max([len(r["run_id"]) for r in rows] + [6])
    header = (
        f"{'RUN':<{width}}  {'START (UTC)':<19}  {'PROJECT':<14}  {'TARGET':<8}  "
        f"{'STATUS':<11}  {'DURATION':>9}  {'TASKS':>6}  {'FAILED':>6}"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"{r['run_id']:<{width}}  {_start(r['start_time']):<19}  "
            f"{str(r['project'] or '?')[:14]:<14}  {str(r['target'] or '?')[:8]:<8}  "
            f"{r['status']:<11}  {seconds(r['duration_s']):>9}  {r['tasks']:>6}  "
            f"{r['failures']:>6}"
        )
    for r in rows:
        if r.get("silent_since"):
            lines.append(f"Note: {r['run_id']}: no sign of life since {r['silent_since']}")
    return "\n".join(lines)
