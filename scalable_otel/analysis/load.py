"""Find a run directory and load its files into pandas DataFrames."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pandas as pd

from ..errors import RunNotFound
from ..rundir import (
    CACHE,
    FAILURES,
    RESOURCES,
    RUN_JSON,
    TASKS,
    WORKERS,
    list_runs,
    parse_run_name,
    read_lines,
    runs_dir,
)


def resolve_run(
    spec: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    *,
    last: bool = False,
) -> Path:
    """The directory of a run: the last one, a run id, a unique prefix of one, or a path."""
    base = runs_dir(root)
    if last or spec is None:
        runs = list_runs(base)
        if not runs:
            raise RunNotFound(f"no runs in {base}: run a workflow first (or pass --runs-dir)")
        return runs[-1]
    path = Path(spec)
    if (path / RUN_JSON).is_file() or (path.is_dir() and parse_run_name(path.name)):
        return path
    runs = list_runs(base)
    if not runs and not base.is_dir():
        raise RunNotFound(f"runs directory {base} does not exist (pass --runs-dir)")
    text = str(spec)
    exact = [r for r in runs if r.name == text]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.name.startswith(text) or r.name.endswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run {text!r} in {base}: give a run id from there, or --last")
    raise RunNotFound(f"{text!r} matches {len(matches)} runs in {base}: give more of the id")


def _frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records)
    if "timestamp" in frame:
        frame["timestamp"] = pd.to_datetime(
            frame["timestamp"], utc=True, errors="coerce", format="ISO8601"
        )
    return frame


@dataclass
class Run:
    """One run directory loaded: run.json as a dict, each JSONL file as a DataFrame."""

    path: Path
    meta: dict
    tasks: pd.DataFrame
    resources: pd.DataFrame
    workers: pd.DataFrame
    cache: pd.DataFrame
    failures: pd.DataFrame
    skipped_lines: dict = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.meta.get("run_id") or self.path.name

    @property
    def status(self) -> str:
        """run.json's status; a run with no end that is not still being written is crashed."""
        status = self.meta.get("status") or "unknown"
        if status == "running" and not self.meta.get("end_time"):
            return "running"
        return status


def load_run(
    run: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    *,
    last: bool = False,
) -> Run:
    """Load a run (see `resolve_run`) into DataFrames.

    >>> run = load_run(last=True)                                   # doctest: +SKIP
    >>> run.tasks[run.tasks.event == "task_completed"].duration_s.mean()  # doctest: +SKIP
    """
    path = resolve_run(run, root, last=last)
    try:
        meta = orjson.loads((path / RUN_JSON).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        meta = {"run_id": path.name, "status": "unknown"}
    frames, skipped = {}, {}
    for name in (TASKS, RESOURCES, WORKERS, CACHE, FAILURES):
        records, bad = read_lines(path / name)
        frames[name] = _frame(records)
        if bad:
            skipped[name] = bad
    return Run(
        path,
        meta,
        frames[TASKS],
        frames[RESOURCES],
        frames[WORKERS],
        frames[CACHE],
        frames[FAILURES],
        skipped,
    )
