"""The run directory: its name, its files, atomic run.json, and finding runs again."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from . import semconv as sc
from .semconv import SCHEMA_VERSION

RUNS_DIR_ENV = "SCALABLE_RUNS_DIR"
DEFAULT_RUNS_DIR = Path(".scalable") / "runs"

RUN_JSON = "run.json"
MANIFEST_YAML = "manifest.yaml"
PLAN_JSON = "plan.json"
TASKS = "tasks.jsonl"
RESOURCES = "resources.jsonl"
WORKERS = "workers.jsonl"
CACHE = "cache.jsonl"
FAILURES = "failures.jsonl"
METRICS = "metrics.jsonl"
JSONL_FILES = (TASKS, RESOURCES, WORKERS, CACHE, FAILURES, METRICS)

# A Parquet copy of each large JSONL file, written when the run closes, read by reports.
COLUMNAR_DIR = ".columnar"


def columnar_copy_paths(path: Path) -> tuple[Path, Path]:
    """The columnar copy of a run's JSONL file and its sidecar (the size and mtime of the
    JSONL it was made from): `.columnar/<name>.parquet`, `.columnar/<name>.source.json`."""
    folder = path.parent / COLUMNAR_DIR
    return folder / (path.stem + ".parquet"), folder / (path.stem + ".source.json")


def resource_fields(usage: dict) -> dict:
    """A task's measured resources (span attributes) as resources.jsonl fields."""
    return {
        "worker_name": usage.get(sc.WORKER_NAME),
        "cpu_seconds": usage.get(sc.TASK_CPU_SECONDS),
        "cpus_used": usage.get(sc.TASK_CPUS_USED),
        "peak_memory_bytes": usage.get(sc.TASK_PEAK_MEMORY),
        "wall_s": usage.get(sc.TASK_WALL),
        "cpu_shared": usage.get(sc.TASK_CPU_SHARED),
    }


_RUN_NAME = re.compile(r"^run-(\d{8}T\d{6}Z)-(.+)-([0-9a-f]{8})$")

# --- run.json: its fields and their types, declared once ---------------------------------------
_TEXT, _NUMBER, _INTEGER, _OBJECT = (str,), (int, float), (int,), (dict,)
#: Every run.json field and the type of its value (docs/telemetry-schema.md#runjson); any
#: field may be null where its value is unknown (`end_time` while running, a count the
#: session never learned). `format` and `original` are set by readers of the Scalable
#: tool's 2.0 beta runs (analysis/beta.py), never written.
RUN_JSON_FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": _INTEGER,
    "run_id": _TEXT,
    "project": _TEXT,
    "status": _TEXT,
    "start_time": _TEXT,
    "end_time": _TEXT,
    "duration_s": _NUMBER,
    "target": _TEXT,
    "provider": _TEXT,
    "host": _TEXT,
    "pid": _INTEGER,
    "process_start_time": _NUMBER,
    "host_cpus": _INTEGER,
    "manifest_hash": _TEXT,
    "tasks_submitted": _INTEGER,
    "tasks_completed": _INTEGER,
    "tasks_failed": _INTEGER,
    "tasks_cancelled": _INTEGER,
    "cache_hits": _INTEGER,
    "cache_misses": _INTEGER,
    "telemetry_lines_dropped": _INTEGER,
    "telemetry_spans_dropped": _INTEGER,
    "telemetry_logs_dropped": _INTEGER,
    "telemetry_records_unhandled": _INTEGER,
    "telemetry_fallbacks": _OBJECT,
    "telemetry_records_dropped": _INTEGER,
    "telemetry_worker_batches_lost": _INTEGER,
    "telemetry_task_spans_dropped": _INTEGER,
    "telemetry_descriptions_failed": _INTEGER,
    "telemetry_write_error": _TEXT,
    "exporters": _OBJECT,
    "trace_id": _TEXT,
    "telemetry_lost": (bool,),
    "heartbeat_time": _TEXT,
    "settings": _OBJECT,
    "versions": _OBJECT,
    "format": _TEXT,
    "original": _OBJECT,
}
#: The fields whose value is the recorder's summary of the run: null until it reports it.
SUMMARY_FIELDS = (
    "tasks_submitted",
    "tasks_completed",
    "tasks_failed",
    "tasks_cancelled",
    "cache_hits",
    "cache_misses",
    "telemetry_lines_dropped",
    "telemetry_spans_dropped",
    "telemetry_logs_dropped",
    "telemetry_records_unhandled",
    "telemetry_fallbacks",
    "telemetry_records_dropped",
    "telemetry_worker_batches_lost",
    "telemetry_task_spans_dropped",
    "telemetry_descriptions_failed",
)
META_TYPES = RUN_JSON_FIELDS  # the name readers know it by


def _of_type(value, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def typed_meta(meta: dict) -> dict:
    """run.json without the known fields whose value is null or not of their type (a hand
    edit, a damaged file): such a field is read as missing, as in the JSONL files."""
    return {
        name: value
        for name, value in meta.items()
        if name not in RUN_JSON_FIELDS or _of_type(value, RUN_JSON_FIELDS[name])
    }


def run_json(
    *,
    run_id: str,
    project: str,
    status: str,
    started: float,
    ended: float | None,
    target: str,
    provider: str,
    host: str,
    pid: int,
    process_start_time: float | None,
    manifest_hash: str,
    trace_id: str,
    exporters: dict,
    settings: dict,
    versions: dict,
    summary: dict | None = None,
    heartbeat: float | None = None,
    host_cpus: int | None = None,
) -> dict:
    """run.json's content from what the session knows: `ended` is None while the run goes
    on; `summary` is the recorder's report of the run's end (None before it, or when the
    telemetry process never gave one). A count the summary does not give is null, never 0:
    readers then count the run's lines (`analysis.facts`). `heartbeat` is the last time
    the run was known alive (`heartbeat_time`; default: its end, else its start).
    `host_cpus` is the number of CPUs the session's process may use on its host.

    >>> meta = run_json(run_id="run-x", project="p", status="running", started=0.0,
    ...     ended=None, target="local", provider="local", host="h", pid=1,
    ...     process_start_time=None, manifest_hash="sha256:0", trace_id="0" * 32,
    ...     exporters={}, settings={}, versions={})
    >>> meta["tasks_completed"], meta["end_time"]
    (None, None)
    """
    summary = summary or {}
    data = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "project": project,
        "status": status,
        "start_time": iso(started),
        "end_time": iso(ended) if ended else None,
        "duration_s": round(ended - started, 6) if ended else None,
        "target": target,
        "provider": provider,
        # who writes the run: a reader tells a crashed run from a live one by these
        "host": host,
        "pid": pid,
        "process_start_time": process_start_time,
        "host_cpus": host_cpus,
        "manifest_hash": manifest_hash,
    }
    data.update({name: summary.get(name) for name in SUMMARY_FIELDS})
    data["telemetry_write_error"] = summary.get("telemetry_write_error")
    data["exporters"] = summary.get("exporters", exporters)
    data["trace_id"] = summary.get("trace_id") or trace_id
    data["telemetry_lost"] = summary.get("telemetry_lost", False)
    data["heartbeat_time"] = iso(heartbeat or ended or started)
    data["settings"] = settings
    data["versions"] = versions
    return data


def runs_dir(path: str | os.PathLike | None = None) -> Path:
    """The runs directory: `path`, else $SCALABLE_RUNS_DIR, else ./.scalable/runs."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get(RUNS_DIR_ENV) or DEFAULT_RUNS_DIR)


def slug(project: str) -> str:
    """A project name made safe for a directory name."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", project).strip("-.")
    return cleaned[:64] or "project"


def new_run_id(project: str, now: datetime | None = None) -> str:
    """`run-<YYYYMMDDTHHMMSSZ>-<project>-<8 hex>`, as in the tutorial."""
    now = now or datetime.now(timezone.utc)
    return f"run-{now.strftime('%Y%m%dT%H%M%SZ')}-{slug(project)}-{secrets.token_hex(4)}"


@functools.lru_cache(maxsize=256)
def _second_prefix(second: int) -> str:
    # formatting the date is the slow part: once per distinct second
    return datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def iso(ts: float) -> str:
    """ISO 8601 UTC with microseconds and a `Z`, from epoch seconds.

    >>> iso(1779249120.5)
    '2026-05-20T03:52:00.500000Z'
    """
    second, fraction = divmod(round(ts * 1_000_000), 1_000_000)
    return f"{_second_prefix(second)}.{fraction:06d}Z"


def parse_iso(value) -> float | None:
    """Epoch seconds from an ISO 8601 timestamp (`iso`'s output, or any offset), a
    datetime (naive ones are UTC), or None for anything else.

    >>> parse_iso("2026-05-20T03:52:00.500000Z")
    1779249120.5
    """
    stamp = parse_datetime(value)
    return None if stamp is None else stamp.timestamp()


def parse_datetime(value) -> datetime | None:
    """An aware datetime from an ISO 8601 timestamp or a datetime (naive ones are UTC),
    or None for anything else: `parse_iso` without the float, for exact microseconds."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"  # fromisoformat reads a Z only from Python 3.11
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return None
    if not isinstance(value, datetime) or value != value:  # NaT is a datetime unequal to itself
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; when the block ends it is synced and
    renamed over `path` (owner-only), so a reader sees the old file or the new one,
    never half of one. If the block raises, the temporary file is removed."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that a reader sees the old or the new file, never half of one."""
    with replaced_atomically(path) as tmp:
        tmp.write_bytes(
            orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"
        )


def make_private_dirs(path: str | os.PathLike) -> Path:
    """Create `path` and its missing parents, each new one for its owner only (0700,
    whatever the umask; `mkdir(parents=True, mode=...)` gives parents the umask's mode).
    Directories that exist are left as they are."""
    path = Path(path)
    missing = []
    folder = path
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # made meanwhile by another process
            pass
    return path


@dataclass(frozen=True)
class RunDirectory:
    """One run's directory and the paths of its files."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunDirectory:
        """Make the directory (owner-only) and its empty JSONL files."""
        make_private_dirs(root)
        path = root / run_id
        path.mkdir(mode=0o700)
        for name in JSONL_FILES:
            fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.close(fd)
        return cls(path)

    def write_run_json(self, data: dict) -> None:
        write_json_atomic(self.file(RUN_JSON), data)

    def read_run_json(self) -> dict:
        return orjson.loads(self.file(RUN_JSON).read_bytes())


def parse_run_name(name: str) -> tuple[str, str, str] | None:
    """(stamp, project, hex) of a run directory name, or None if it is not one."""
    m = _RUN_NAME.match(name)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def list_runs(root: Path | None = None) -> list[Path]:
    """Run directories under `root`, oldest first by their recorded start time."""
    root = runs_dir(root)
    if not root.is_dir():
        return []

    def start_key(path: Path) -> tuple[str, str]:
        s = parse_run_name(path.name)[0]  # type: ignore[index]
        stamp = f"{s[0:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}.000000Z"
        try:
            meta = orjson.loads((path / RUN_JSON).read_bytes())
        except (OSError, ValueError):
            meta = None
        started = meta.get("start_time") if isinstance(meta, dict) else None
        # Sub-second start_time orders runs started within the same second.
        return (started if isinstance(started, str) and started else stamp, path.name)

    runs = [p for p in root.iterdir() if p.is_dir() and parse_run_name(p.name)]
    return sorted(runs, key=start_key)


# A string, or a number JSON has no finite value for: NaN or an infinity in any case (with
# a minus sign), or digits beyond a double (1e999, 400 digits). DuckDB's JSON reader takes
# them; so does `parse_line`, as null.
_NONFINITE = re.compile(
    rb'"(?:[^"\\]|\\.)*"|(-?(?:nan|infinity|inf)(?![\w])|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)',
    re.IGNORECASE,
)


def _null_if_not_finite(match: re.Match) -> bytes:
    token = match.group(1)
    if token is None or math.isfinite(float(token)):  # a string, or a finite number
        return match.group(0)
    return b"null"


def parse_line(raw: bytes):
    """One JSONL line parsed (any JSON value), or None when it is not JSON.

    A number with no finite value (`NaN`, `Infinity`, `1e999`, a 400-digit integer), which
    JSON does not allow but a hand edit or another tool can write, reads as null: the line
    is read, the field is null, as DuckDB's reader of the same file does.

    >>> parse_line(b'{"event": "task_completed", "duration_s": NaN}')
    {'event': 'task_completed', 'duration_s': None}
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    fixed = _NONFINITE.sub(_null_if_not_finite, raw)
    if fixed == raw:
        return None
    try:
        return orjson.loads(fixed)
    except orjson.JSONDecodeError:
        return None


def iter_lines(
    path: Path,
    limit: int | None = None,
    containing: bytes | None = None,
    *,
    block: int = 4 << 20,
) -> Iterator[dict | None]:
    """Each non-blank line of a JSONL file parsed (`parse_line`): a dict, or None for a
    line that is not a JSON object (torn or corrupt). With `limit`, only the file's first
    `limit` bytes (a file that grows while it is read stops where it was). With
    `containing`, only the lines holding those bytes: the file is read in blocks of
    `block` bytes and searched for them first, so a big file with few such lines is read
    at the speed of the disk, not of a Python loop over its lines."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        if containing is not None:
            yield from _lines_holding(f, containing, limit, block)
            return
        remaining = limit
        for raw in f:
            if remaining is not None:
                if remaining <= 0:
                    break
                raw = raw[:remaining]
                remaining -= len(raw)
            raw = raw.strip()
            if raw:
                value = parse_line(raw)
                yield value if isinstance(value, dict) else None


def _lines_holding(f, needle: bytes, limit: int | None, block: int) -> Iterator[dict | None]:
    """The lines of the open file `f` (its first `limit` bytes) that hold `needle`, parsed."""
    remaining, tail = limit, b""
    while remaining is None or remaining > 0:
        chunk = f.read(block if remaining is None else min(block, remaining))
        if not chunk:
            break
        if remaining is not None:
            remaining -= len(chunk)
        data = tail + chunk
        whole = data.rfind(b"\n") + 1  # the lines up to here are whole
        yield from _holding(data, needle, whole)
        tail = data[whole:]
    yield from _holding(tail, needle, len(tail))


def _holding(data: bytes, needle: bytes, end: int) -> Iterator[dict | None]:
    """The lines of `data[:end]` that hold `needle`, parsed (`parse_line`)."""
    at = data.find(needle, 0, end)
    while at != -1:
        start = data.rfind(b"\n", 0, at) + 1
        stop = data.find(b"\n", at, end)
        stop = end if stop == -1 else stop
        value = parse_line(data[start:stop].strip())
        yield value if isinstance(value, dict) else None
        at = data.find(needle, stop, end)


def blocks_holding(
    path: Path, needle: bytes, offset: int = 0, final: bool = True, *, block: int = 4 << 20
) -> Iterator[tuple[int, list[dict | None]]]:
    """The lines holding `needle` of a JSONL file from byte `offset` on (a line start),
    parsed as `iter_lines` does, a block at a time: `(offset after the block's lines,
    [line, ...])`. A last line with no newline is left for a later call (it may still be
    being written) unless `final`; a file that is not there has no lines."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(offset)
        tail = b""
        while True:
            chunk = f.read(block)
            if not chunk:
                break
            data = tail + chunk
            whole = data.rfind(b"\n") + 1
            if whole:
                offset += whole
                yield offset, list(_holding(data, needle, whole))
            tail = data[whole:]
        if final and tail:
            yield offset + len(tail), list(_holding(tail, needle, len(tail)))


def read_lines(path: Path) -> tuple[list[dict], int]:
    """Parsed lines and the number of blank-free lines that did not parse (torn or corrupt)."""
    records, bad = [], 0
    for value in iter_lines(path):
        if value is None:
            bad += 1
        else:
            records.append(value)
    return records, bad


class JsonlTail:
    """A JSONL file followed as it grows: each `read()` parses only the bytes appended
    since the last one. A last line with no newline yet (still being written, or torn)
    is kept for the next read rather than counted as bad: a live run's torn line is not
    an error until the file is complete (`final`). A file that shrank (replaced, or
    truncated) is read again from its start."""

    def __init__(self, path: Path, *, block: int = 4 << 20):
        self.path = Path(path)
        self.offset = 0  # bytes of whole lines read so far
        self.bad = 0  # lines that did not parse
        self._block = block

    def read(self, final: bool = False) -> list[dict]:
        """The lines appended since the last read, parsed (those that do not parse are
        counted in `bad`). A missing file has no lines; another OSError is raised."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return []
        lines: list[dict] = []
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < self.offset:
                self.offset = 0
            f.seek(self.offset)
            tail = b""
            while True:
                chunk = f.read(self._block)
                if not chunk:
                    break
                data = tail + chunk
                whole = data.rfind(b"\n") + 1
                if whole:
                    self._parse(data[:whole], lines)
                    self.offset += whole
                tail = data[whole:]
            if final and tail.strip():
                self._parse(tail, lines)
                self.offset += len(tail)
        return lines

    def _parse(self, data: bytes, into: list[dict]) -> None:
        for raw in data.split(b"\n"):
            raw = raw.strip()
            if raw:
                value = parse_line(raw)
                if isinstance(value, dict):
                    into.append(value)
                else:
                    self.bad += 1
