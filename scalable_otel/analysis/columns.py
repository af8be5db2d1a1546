"""SQL over a run's JSONL files, fast enough for runs of a million events (DuckDB).

Reports need a few fields of each line (event, task, duration_s, …), aggregated; not
every field as Python objects (a nested field, `args`, stays JSON text). A query names
a file and gets a relation of typed columns, read in the fastest way that is still
correct:

1. A columnar copy (`.columnar/<file>.parquet`) written when a large run closes
   (`write_columnar_copy`). A sidecar records the size and mtime of the JSONL it was
   made from; the copy is used only while they match.
2. DuckDB's JSON reader over the JSONL itself. A line that does not parse (a torn last
   line of a live or crashed run, a corrupt line) becomes a row whose `event` is NULL:
   queries leave such rows out and count them (`SKIPPED` is the SQL for the count).
3. When DuckDB rejects the file as a whole (invalid UTF-8, say), its parseable lines
   are copied to a temporary file first, counting the rest.

Fields missing from a line, or of the wrong type, are NULL; so is a number that is not
finite (`NaN`, `Infinity`, `1e999`, a 400-digit integer), which DuckDB reads (the line
reader, `rundir.iter_lines`, reads such a line the same way: its line counts, its
non-finite field is null).
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

import orjson

from ..rundir import CACHE, RESOURCES, TASKS, replaced_atomically

COLUMNAR_DIR = ".columnar"
# Below this a JSONL file is read in a few milliseconds: no copy is worth it.
COPY_MIN_BYTES = 4 << 20
SKIPPED = "count(*) FILTER (WHERE event IS NULL)"

# Timestamps stay text: ISO 8601 UTC strings of one width sort as the times they name,
# and parsing a million of them would cost more than the rest of a report.
FIELDS: dict[str, dict[str, str]] = {
    TASKS: {
        "timestamp": "VARCHAR",
        "event": "VARCHAR",
        "task": "VARCHAR",
        "key": "VARCHAR",
        "span_id": "VARCHAR",
        "worker": "VARCHAR",
        "attempt": "BIGINT",
        "duration_s": "DOUBLE",
        "queue_wait_s": "DOUBLE",
        "args": "JSON",  # its JSON text: the report shows the slowest task's
    },
    CACHE: {
        "timestamp": "VARCHAR",
        "event": "VARCHAR",
        "function": "VARCHAR",
        "task": "VARCHAR",
        "span_id": "VARCHAR",
        "result": "VARCHAR",
        "lookup_s": "DOUBLE",
        "saved_s": "DOUBLE",
    },
    RESOURCES: {
        "timestamp": "VARCHAR",
        "event": "VARCHAR",
        "task": "VARCHAR",
        "worker": "VARCHAR",
        "cpu_percent": "DOUBLE",
        "memory_bytes": "DOUBLE",
        "cpu_seconds": "DOUBLE",
        "cpus_used": "DOUBLE",
        "peak_memory_bytes": "DOUBLE",
        "wall_s": "DOUBLE",
        "cpu_shared": "BOOLEAN",
    },
}

_local = threading.local()


def _connection():
    import duckdb

    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect(":memory:")
    return con


def _struct(fields: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in fields.items()) + "}"


def _literal(path: Path) -> str:
    """A path as an SQL string literal (the relation is text, so `?` parameters of a
    query keep their order wherever the relation stands in it)."""
    return "'" + str(path).replace("'", "''") + "'"


def _finite(source: str, fields: dict[str, str]) -> str:
    """`source` with its DOUBLE columns NULL where not finite (NaN, ±inf)."""
    if "DOUBLE" not in fields.values():
        return source
    columns = ", ".join(
        f"CASE WHEN isfinite({name}) THEN {name} END AS {name}" if kind == "DOUBLE" else name
        for name, kind in fields.items()
    )
    return f"(SELECT {columns} FROM {source})"


def _read_json(path: Path, fields: dict[str, str]) -> str:
    # DuckDB's default object size limit (16 MB) keeps its buffers small; a longer line
    # fails the query, and the file is then read through `_clean`. records=true: a line
    # that is not an object is a NULL row (else, with one column, DuckDB may read each
    # whole line as that column's value).
    return _finite(
        f"read_json({_literal(path)}, format='newline_delimited', "
        f"columns={_struct(fields)}, records=true, ignore_errors=true)",
        fields,
    )


def _empty(fields: dict[str, str]) -> str:
    columns = ", ".join(f"NULL::{kind} AS {name}" for name, kind in fields.items())
    return f"(SELECT {columns} WHERE false)"


class RunFile:
    """One JSONL file of a run, to query with SQL in which `{t}` stands for its rows.

    >>> tasks = RunFile(run_path, "tasks.jsonl")                    # doctest: +SKIP
    >>> tasks.query("SELECT count(*) FROM {t} WHERE event = ?", ["task_failed"])  # doctest: +SKIP
    [(2,)]
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        name: str,
        fields: list[str] | None = None,
        *,
        beta: bool | None = None,
    ):
        """`beta`: whether a Scalable 2.0 beta wrote the run (`Run.is_beta`); None reads its
        run.json to tell."""
        self.path = Path(run_dir) / name
        known = FIELDS[name]
        # Parsing fewer fields of each line is most of what makes a JSONL query fast.
        self.fields = known if fields is None else {f: known[f] for f in fields}
        # Bad lines left out before the query sees the rows (when a file had to be
        # cleaned, now or for its columnar copy): add them to the query's own count of
        # NULL-event rows (`SKIPPED`).
        self.skipped_before = 0
        self._cleaned: Path | None = None
        self._beta = beta
        self._reads_jsonl = False

    def relation(self) -> str:
        """The FROM expression for this file's rows."""
        foreign = self._beta_relation()
        if foreign is not None:
            return _finite(foreign, FIELDS[self.path.name])
        copy = _fresh_copy(self.path)
        if copy is not None:
            self.skipped_before = copy[1]
            return _finite(f"read_parquet({_literal(copy[0])})", FIELDS[self.path.name])
        if self._cleaned is not None:
            return _read_json(self._cleaned, self.fields)
        try:
            if self.path.stat().st_size == 0:
                return _empty(self.fields)
        except FileNotFoundError:
            return _empty(self.fields)
        self._reads_jsonl = True
        return _read_json(self.path, self.fields)

    def _beta_relation(self) -> str | None:
        """The relation of a Scalable 2.0 beta run's file, under our column names."""
        if self._beta is None:
            from .beta import is_beta

            try:
                meta = orjson.loads((self.path.parent / "run.json").read_bytes())
            except (OSError, orjson.JSONDecodeError):
                meta = {}
            self._beta = isinstance(meta, dict) and is_beta(meta)
        if not self._beta:
            return None
        from . import beta

        if not self.path.is_file() or self.path.stat().st_size == 0:
            return _empty(FIELDS[self.path.name])
        if self.path.name == TASKS:
            return beta.tasks_relation(_literal(self.path))
        if self.path.name == CACHE:
            return beta.cache_relation(_literal(self.path))
        return _empty(FIELDS[self.path.name])

    def query(self, sql: str, params: list | tuple = ()) -> list[tuple]:
        """Rows of `sql`, where `{t}` is this file's relation, with `?` parameters."""
        return query_files(sql, {"t": self}, params)

    @property
    def is_jsonl(self) -> bool:
        """Whether queries read the JSONL file itself (not a copy, a cleaning or nothing)."""
        self._reads_jsonl = False
        self.relation()
        return self._reads_jsonl

    def _clean(self) -> None:
        """Copy the lines that parse as JSON objects to a temporary file (counted otherwise)."""
        from ..rundir import read_lines

        records, bad = read_lines(self.path)
        fd, name = tempfile.mkstemp(prefix="scalable-clean-", suffix=".jsonl")
        with os.fdopen(fd, "wb") as f:
            for record in records:
                f.write(orjson.dumps(record, default=str) + b"\n")
        self._cleaned = Path(name)
        self.skipped_before = bad

    def close(self) -> None:
        if self._cleaned is not None:
            self._cleaned.unlink(missing_ok=True)
            self._cleaned = None

    def __del__(self):
        self.close()


def query_files(sql: str, files: dict[str, RunFile], params: list | tuple = ()) -> list[tuple]:
    """Rows of `sql` over several files: `{name}` stands for the relation of `files[name]`.

    When DuckDB rejects a JSONL file as a whole, its parseable lines are read instead
    (`RunFile._clean`) and the query runs again.
    """
    import duckdb

    def render() -> str:
        return re.sub(r"\{(\w+)\}", lambda m: files[m.group(1)].relation(), sql)

    try:
        return _connection().execute(render(), list(params)).fetchall()
    except duckdb.Error:
        raw = [f for f in files.values() if f.is_jsonl]
        if not raw:
            raise
        for source in raw:
            source._clean()
        return _connection().execute(render(), list(params)).fetchall()


# --- the columnar copy -------------------------------------------------------------------


def _copy_paths(path: Path) -> tuple[Path, Path]:
    folder = path.parent / COLUMNAR_DIR
    return folder / (path.stem + ".parquet"), folder / (path.stem + ".source.json")


def _fresh_copy(path: Path) -> tuple[Path, int] | None:
    copy, sidecar = _copy_paths(path)
    try:
        source = orjson.loads(sidecar.read_bytes())
        stat = path.stat()
    except (OSError, orjson.JSONDecodeError):
        return None
    if (
        not isinstance(source, dict)
        or source.get("size") != stat.st_size
        or source.get("mtime_ns") != stat.st_mtime_ns
        or not copy.is_file()
    ):
        return None
    skipped = source.get("skipped")
    return copy, skipped if isinstance(skipped, int) else 0


def write_columnar_copy(run_dir: str | os.PathLike, min_bytes: int | None = None) -> list[Path]:
    """Write `.columnar/<file>.parquet` for each queried JSONL file of at least `min_bytes`
    (default `COPY_MIN_BYTES`).

    Called when a run closes. Every line becomes a row, the unreadable ones as rows
    with a NULL event, so queries count them as they do on the JSONL. Readers use a
    copy only while its JSONL file keeps the size and mtime it had. Returns the copies.
    """
    run_dir = Path(run_dir)
    min_bytes = COPY_MIN_BYTES if min_bytes is None else min_bytes
    written = []
    for name in FIELDS:
        path = run_dir / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_size < min_bytes:
            continue
        copy, sidecar = _copy_paths(path)
        copy.parent.mkdir(mode=0o700, exist_ok=True)
        source = RunFile(run_dir, name)
        con = _connection()
        con.execute("SET preserve_insertion_order = false")  # streams instead of buffering
        try:
            with replaced_atomically(copy) as tmp:
                _copy_to_parquet(source, tmp)
        finally:
            con.execute("RESET preserve_insertion_order")
            source.close()
        # lines a cleaning left out are not rows of the copy: the sidecar keeps their count
        record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        sidecar.write_bytes(orjson.dumps(record | {"skipped": source.skipped_before}))
        os.chmod(sidecar, 0o600)
        written.append(copy)
    return written


def _copy_to_parquet(source: RunFile, target: Path) -> None:
    import duckdb

    sql = "COPY (SELECT * FROM {t}) TO ? (FORMAT parquet, COMPRESSION zstd)"
    try:
        _connection().execute(sql.replace("{t}", source.relation()), [str(target)])
    except duckdb.Error:
        if not source.is_jsonl:
            raise
        source._clean()
        _connection().execute(sql.replace("{t}", source.relation()), [str(target)])
