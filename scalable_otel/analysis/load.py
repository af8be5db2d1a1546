"""Find a run directory and load its files into pandas DataFrames."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from .. import semconv as sc
from ..errors import RunNotFound, shown
from ..rundir import (
    CACHE,
    FAILURES,
    MANIFEST_YAML,
    PLAN_JSON,
    RESOURCES,
    RUN_JSON,
    TASKS,
    WORKERS,
    iter_lines,
    list_runs,
    parse_iso,
    parse_run_name,
    read_lines,
    runs_dir,
    typed_meta,
)
from .columns import RunFile
from .facts import COUNTS, final_count, task_counts

if TYPE_CHECKING:
    import pandas as pd

    from ..progress import RunProgress


def resolve_run(
    spec: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    *,
    last: bool = False,
    inside_root: bool = False,
) -> Path:
    """The directory of a run: the last one, a run id, a unique prefix of one, or a path.

    With `inside_root` (as the CLI does), a path must name a run directory directly inside
    the runs directory; otherwise any run directory is accepted (one named like a run, or
    holding a run.json or tasks.jsonl).
    """
    base = runs_dir(root)
    if last or spec is None:
        runs = list_runs(base)
        if not runs:
            raise RunNotFound(f"no runs in {base}: run a workflow first (or pass --runs-dir)")
        return runs[-1]
    text = str(spec)
    if not text.strip():  # else a prefix of every run
        raise RunNotFound(f"an empty run id {text!r}: give a run id, a prefix of one, or --last")
    if not inside_root and _looks_like_run(Path(text)):
        return Path(text)
    if os.sep in text or (os.altsep and os.altsep in text) or text in (".", ".."):
        return _run_at_path(Path(text), base)
    runs = list_runs(base)
    if not runs and not base.is_dir():
        raise RunNotFound(f"runs directory {base} does not exist (pass --runs-dir)")
    exact = [r for r in runs if r.name == text]
    if exact:
        return exact[0]
    matches = [r for r in runs if r.name.startswith(text) or r.name.endswith(text)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"no run {text!r} in {base}: give a run id from there, or --last")
    raise RunNotFound(f"{text!r} matches {len(matches)} runs in {base}: give more of the id")


def _is_dir(path: Path) -> bool:
    """Whether `path` is a directory; False for a name no directory can have (too long, or
    holding a NUL byte)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _looks_like_run(path: Path) -> bool:
    return _is_dir(path) and (
        (path / RUN_JSON).is_file() or bool(parse_run_name(path.name)) or (path / TASKS).is_file()
    )


def _run_at_path(path: Path, base: Path) -> Path:
    """A run given as a path: it must be a run directory inside the runs directory."""
    named = shown(path)
    if not _is_dir(path):
        raise RunNotFound(f"{named} is not a directory: give a run id, a run directory, or --last")
    resolved = path.resolve()
    if resolved.parent != base.resolve():
        raise RunNotFound(
            f"{named} is outside the runs directory {shown(base)}: "
            f"pass --runs-dir {shown(resolved.parent)}"
        )
    if not parse_run_name(resolved.name):
        raise RunNotFound(f"{named} is not a run directory (run-<stamp>-<project>-<id>)")
    return resolved


def _frame(records: list[dict]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame.from_records(records)
    if "timestamp" in frame:
        stamps = frame["timestamp"]
        if not pd.api.types.is_string_dtype(stamps):  # a number or a list is no time: NaT
            stamps = stamps.astype(object).where(stamps.map(lambda v: isinstance(v, str)), None)
        frame["timestamp"] = pd.to_datetime(stamps, utc=True, errors="coerce", format="ISO8601")
    return frame


class Run:
    """One run directory: run.json as `meta`, and each JSONL file as a pandas DataFrame
    (`tasks`, `resources`, `workers`, `cache`, `failures`), read when first used.

    The only reader of a run directory: the analysis modules read its files through a
    `Run` (`file` for SQL, `lines` for parsed lines, `iter_lines` for a scan of some of
    them, `plan`, `manifest`), and take its task counts from `task_counts`, which applies
    the one rule of `facts` (tests/test_layers.py checks that no other module opens a
    run's files).

    Lines that could not be parsed (a torn last line of a live run, a corrupt line) are
    skipped and counted in `skipped_lines`, by file name.
    """

    def __init__(self, path: Path, meta: dict):
        self.path = Path(path)
        self.meta = meta
        self.skipped_lines: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    def lines(self, name: str) -> list[dict]:
        """The parsed lines of one of the run's JSONL files (bad ones counted in
        `skipped_lines`); a Scalable 2.0 beta run's under our names (`beta.beta_line`)."""
        records, bad = read_lines(self.path / name)
        if bad:
            self.skipped_lines[name] = bad
        if self.is_beta:
            from .beta import beta_line

            return [beta_line(name, record) for record in records]
        return records

    def iter_lines(self, name: str, containing: bytes | None = None) -> Iterator[dict | None]:
        """Each line of one of the run's JSONL files, parsed as `lines` parses it, or None
        for a line that did not parse (for the caller to count: `skipped_lines` is left as
        it is). With `containing`, only the lines holding those bytes as written (a cheap
        filter before the parse: the caller still checks each line it gets)."""
        lines = iter_lines(self.path / name, containing=containing)
        if not self.is_beta:
            return lines
        from .beta import beta_line

        return (None if line is None else beta_line(name, line) for line in lines)

    def file(
        self, name: str, fields: list[str] | None = None, *, extra: dict[str, str] | None = None
    ) -> RunFile:
        """One of the run's JSONL files (tasks, cache or resources) for SQL (`RunFile`);
        `extra` names fields the columnar copy does not hold, with their DuckDB types."""
        return RunFile(self.path, name, fields, beta=self.is_beta, extra=extra)

    def event_counts(self) -> dict[str, int]:
        """tasks.jsonl's lines by event (a beta run's states under our event names)."""
        rows = self.file(TASKS, ["event"]).query(
            "SELECT event, count(*) FROM {t} WHERE event IS NOT NULL GROUP BY event"
        )
        return dict(rows)

    def task_counts(self, events: dict[str, int] | None = None) -> dict[str, int]:
        """`submitted`, `completed`, `failed`, `cancelled`: run.json's counts when they are
        final, else the lines of tasks.jsonl (`facts.task_counts`). `events` are those
        lines by event when already counted."""
        status = self.status
        if events is None:
            final = [final_count(self.meta, status, field) for field, _ in COUNTS.values()]
            events = self.event_counts() if None in final else {}  # no scan when all are final
        return task_counts(self.meta, status, events)

    def follow(self) -> RunProgress:
        """The run followed as it is written (`progress.RunProgress`): each `poll()`
        reads only what its JSONL files gained since the last one."""
        from ..progress import RunProgress

        return RunProgress(self.path)

    def reread_meta(self) -> bool:
        """Read run.json again if it changed since it was read (a live run rewrites it):
        whether it did."""
        try:
            stat = (self.path / RUN_JSON).stat()
            mark = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            mark = None
        if mark == getattr(self, "_meta_mark", None):
            return False
        self._meta_mark = mark
        meta = read_meta(self.path)
        changed = meta != self.meta
        self.meta = meta
        return changed

    def _frame(self, name: str) -> pd.DataFrame:
        return _frame(self.lines(name))

    @cached_property
    def tasks(self) -> pd.DataFrame:
        return self._frame(TASKS)

    @cached_property
    def resources(self) -> pd.DataFrame:
        return self._frame(RESOURCES)

    @cached_property
    def workers(self) -> pd.DataFrame:
        return self._frame(WORKERS)

    @cached_property
    def cache(self) -> pd.DataFrame:
        return self._frame(CACHE)

    @cached_property
    def failures(self) -> pd.DataFrame:
        return self._frame(FAILURES)

    @cached_property
    def manifest(self) -> dict | None:
        """The manifest.yaml snapshot as a dict (None when missing or unreadable, or nested
        too deeply for the YAML parser)."""
        try:
            import yaml

            data = yaml.safe_load((self.path / MANIFEST_YAML).read_text())
        except (OSError, ValueError, yaml.YAMLError, RecursionError):
            return None
        return data if isinstance(data, dict) else None

    @cached_property
    def plan(self) -> dict:
        """plan.json as a dict ({} when missing, unreadable or not an object)."""
        try:
            data = orjson.loads((self.path / PLAN_JSON).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    @property
    def is_beta(self) -> bool:
        """Whether the Scalable tool's 2.0 beta wrote this run (see `beta`)."""
        from .beta import FORMAT

        return self.meta.get("format") == FORMAT

    @property
    def run_id(self) -> str:
        run_id = self.meta.get("run_id")
        return run_id if isinstance(run_id, str) and run_id else self.path.name

    @property
    def status(self) -> str:
        """run.json's status, or `crashed` for a run that never ended and whose process is gone."""
        return run_status(self.meta)


def silent_since(meta: dict, now: float | None = None) -> str | None:
    """The `heartbeat_time` of a `running` run written on another host whose heartbeat is
    older than `semconv.HEARTBEAT_STALE_S`: no sign of life since then (its status reads
    `crashed`). None for any other run."""
    status = meta.get("status") or sc.RUN_UNKNOWN
    if status != sc.RUN_RUNNING or meta.get("end_time"):
        return None
    host, beat = meta.get("host"), meta.get("heartbeat_time")
    if host == socket.gethostname() or not isinstance(beat, str):
        return None
    last = parse_iso(beat)
    if last is None:
        return None
    if (time.time() if now is None else now) - last > sc.HEARTBEAT_STALE_S:
        return beat
    return None


def run_status(meta: dict) -> str:
    """The status of a run from its run.json: a `running` run whose process is no longer
    alive on this host, or, from another host, whose heartbeat stopped more than
    `semconv.HEARTBEAT_STALE_S` ago (`silent_since`), is `crashed` (its files hold what
    it did before it died)."""
    status = meta.get("status") or sc.RUN_UNKNOWN
    if status != sc.RUN_RUNNING or meta.get("end_time"):
        return status
    pid, host = meta.get("pid"), meta.get("host")
    if host != socket.gethostname():
        return sc.RUN_CRASHED if silent_since(meta) else sc.RUN_RUNNING
    if not isinstance(pid, int):
        return sc.RUN_RUNNING  # an older run.json: cannot tell
    try:
        import psutil

        process = psutil.Process(pid)
        started = meta.get("process_start_time")
        if started is not None and abs(process.create_time() - float(started)) > 1.0:
            return sc.RUN_CRASHED  # the pid was reused by another process
        return sc.RUN_RUNNING
    except psutil.NoSuchProcess:
        return sc.RUN_CRASHED
    except Exception:
        return sc.RUN_RUNNING


def read_meta(path: Path) -> dict:
    """run.json of a run directory, or a stand-in naming it when run.json is missing or corrupt
    (or not an object); known fields of the wrong type are left out (`typed_meta`)."""
    try:
        meta = orjson.loads((Path(path) / RUN_JSON).read_bytes())
        if isinstance(meta, dict):
            from .beta import beta_meta, is_beta

            return typed_meta(beta_meta(meta, Path(path)) if is_beta(meta) else meta)
    except (OSError, orjson.JSONDecodeError):
        pass
    return {"run_id": Path(path).name, "status": sc.RUN_UNKNOWN}


def load_run(
    run: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    *,
    last: bool = False,
    inside_root: bool = False,
) -> Run:
    """Load a run (see `resolve_run`): run.json now, each JSONL file as a DataFrame when used.

    >>> run = load_run(last=True)                                   # doctest: +SKIP
    >>> run.tasks[run.tasks.event == "task_completed"].duration_s.mean()  # doctest: +SKIP
    """
    path = resolve_run(run, root, last=last, inside_root=inside_root)
    return Run(path, read_meta(path))
