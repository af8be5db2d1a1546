"""SQL over a run's JSONL files, fast enough for runs of a million events (DuckDB).

Reports need a few fields of each line (event, task, duration_s, …), aggregated; not
every field as Python objects (a nested field, `args`, stays JSON text). A query names
a file and gets a relation of typed columns, read in the fastest way that is still
correct:

1. A columnar copy (`.columnar/<file>.parquet`) written when a large run closes
   (`exporters.columnar.write_columnar_copy`). A sidecar records the size and mtime of
   the JSONL it was made from; the copy is used only while they match.
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

import functools
import os
import re
from pathlib import Path

import orjson

from ..jsonl_scan import (
    FIELDS,
    JsonlScan,
    connection,
    empty_relation,
    finite_relation,
    sql_literal,
)
from ..rundir import CACHE, TASKS, columnar_copy_paths

SKIPPED = "count(*) FILTER (WHERE event IS NULL)"

# A line's time in epoch microseconds; NULL when it is no time. A time without a zone is
# UTC (as `rundir.parse_iso` reads it), not DuckDB's session time zone. Integers, because
# epoch seconds as doubles lose the last microsecond digit.
_ZONED = r"([zZ]|[+-]\d\d(:?\d\d)?)$"


def epoch_us_sql(column: str = "timestamp") -> str:
    """SQL for `column` (ISO 8601 text) as epoch microseconds, NULL if it is no time."""
    return (
        f"epoch_us(try_cast(CASE WHEN regexp_matches({column}, '{_ZONED}') THEN {column} "
        f"ELSE {column} || '+00:00' END AS TIMESTAMPTZ))"
    )


class RunFile(JsonlScan):
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
        extra: dict[str, str] | None = None,
    ):
        """`beta`: whether a Scalable 2.0 beta wrote the run (`Run.is_beta`); None reads its
        run.json to tell. `extra`: fields beyond `jsonl_scan.FIELDS` (name: DuckDB type),
        which the columnar copy does not hold: the JSONL file itself is then read."""
        self._extra = dict(extra or {})
        known = FIELDS[name]
        # Parsing fewer fields of each line is most of what makes a JSONL query fast.
        chosen = dict(known) if fields is None else {f: known[f] for f in fields}
        super().__init__(Path(run_dir) / name, chosen | self._extra)
        self._beta = beta

    def relation(self) -> str:
        """The FROM expression for this file's rows."""
        foreign = self._beta_relation()
        if foreign is not None:
            return finite_relation(foreign, FIELDS[self.path.name] | self._extra)
        copy = None if self._extra else _fresh_copy(self.path)
        if copy is not None:
            self.skipped_before = copy[1]
            return finite_relation(f"read_parquet({sql_literal(copy[0])})", FIELDS[self.path.name])
        return super().relation()

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
            return empty_relation(FIELDS[self.path.name] | self._extra)
        if self.path.name == TASKS:
            relation = beta.tasks_relation(sql_literal(self.path))
        elif self.path.name == CACHE:
            relation = beta.cache_relation(sql_literal(self.path))
        else:
            return empty_relation(FIELDS[self.path.name] | self._extra)
        if not self._extra:
            return relation
        # the beta's files have none of our other fields
        nulls = ", ".join(f"NULL::{kind} AS {name}" for name, kind in self._extra.items())
        return f"(SELECT *, {nulls} FROM {relation})"

    def query(self, sql: str, params: list | tuple = ()) -> list[tuple]:
        """Rows of `sql`, where `{t}` is this file's relation, with `?` parameters."""
        return query_files(sql, {"t": self}, params)


def query_files(sql: str, files: dict[str, RunFile], params: list | tuple = ()) -> list[tuple]:
    """Rows of `sql` over several files: `{name}` stands for the relation of `files[name]`.

    When DuckDB rejects a JSONL file as a whole, its parseable lines are read instead
    (`JsonlScan.clean`) and the query runs again.
    """
    import duckdb

    def render() -> str:
        return re.sub(r"\{(\w+)\}", lambda m: files[m.group(1)].relation(), sql)

    try:
        return connection().execute(render(), list(params)).fetchall()
    except duckdb.Error:
        raw = [f for f in files.values() if f.is_jsonl]
        if not raw:
            raise
        for source in raw:
            source.clean()
        return connection().execute(render(), list(params)).fetchall()


@functools.lru_cache(maxsize=64)
def _copy_columns(copy: Path, mtime_ns: int) -> frozenset:
    """The columns of a columnar copy: one made before a field was added to
    `jsonl_scan.FIELDS` lacks it, and the JSONL is read instead."""
    rows = connection().execute(f"SELECT name FROM parquet_schema({sql_literal(copy)})").fetchall()
    return frozenset(name for (name,) in rows)


def _fresh_copy(path: Path) -> tuple[Path, int] | None:
    copy, sidecar = columnar_copy_paths(path)
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
        or not set(FIELDS[path.name]) <= _copy_columns(copy, copy.stat().st_mtime_ns)
    ):
        return None
    skipped = source.get("skipped")
    return copy, skipped if isinstance(skipped, int) else 0
