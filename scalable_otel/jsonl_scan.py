"""A run's JSONL files as DuckDB relations: the columns reports query, and one file's scan.

Shared by the reports (`analysis.columns.RunFile`, which also reads a columnar copy or a
Scalable 2.0 beta file) and by the columnar copy written when a run closes
(`exporters.columnar`), so that a copy holds the rows a query of the JSONL would see.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import orjson

from .rundir import CACHE, RESOURCES, TASKS, read_lines

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
        "group": "VARCHAR",  # a reserved word in SQL: write it "group"
        "group_path": "VARCHAR[]",
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
        "miss_reason": "VARCHAR",
        "miss_arguments": "VARCHAR[]",
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


def connection():
    """This thread's in-memory DuckDB connection."""
    import duckdb

    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect(":memory:")
        # timestamps without an offset are UTC, as `rundir.parse_iso` reads them
        con.execute("SET TimeZone = 'UTC'")
    return con


def _struct(fields: dict[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in fields.items()) + "}"


def sql_literal(path: Path) -> str:
    """A path as an SQL string literal (the relation is text, so `?` parameters of a
    query keep their order wherever the relation stands in it)."""
    return "'" + str(path).replace("'", "''") + "'"


def finite_relation(source: str, fields: dict[str, str]) -> str:
    """`source` with its DOUBLE columns NULL where not finite (NaN, ±inf, 1e999): the line
    reader (`rundir.iter_lines`) reads such a line the same way."""
    if "DOUBLE" not in fields.values():
        return source
    columns = ", ".join(
        f"CASE WHEN isfinite({name}) THEN {name} END AS {name}" if kind == "DOUBLE" else f'"{name}"'
        for name, kind in fields.items()
    )
    return f"(SELECT {columns} FROM {source})"


def read_json_relation(path: Path, fields: dict[str, str]) -> str:
    """DuckDB's scan of a JSONL file: a line that does not parse is a row of NULLs."""
    # DuckDB's default object size limit (16 MB) keeps its buffers small; a longer line
    # fails the query, and the file is then read through `JsonlScan.clean`. records=true: a
    # line that is not an object is a NULL row (else, with one column, DuckDB may read each
    # whole line as that column's value).
    return finite_relation(
        f"read_json({sql_literal(path)}, format='newline_delimited', "
        f"columns={_struct(fields)}, records=true, ignore_errors=true)",
        fields,
    )


def empty_relation(fields: dict[str, str]) -> str:
    """No rows, with the columns of `fields`."""
    columns = ", ".join(f'NULL::{kind} AS "{name}"' for name, kind in fields.items())
    return f"(SELECT {columns} WHERE false)"


class JsonlScan:
    """One JSONL file as a relation of the typed columns `fields`.

    A line that does not parse (a torn last line, a corrupt line) is a row whose `event`
    is NULL. When DuckDB rejects the file as a whole (invalid UTF-8, say), `clean()`
    copies its parseable lines to a temporary file, counting the rest (`skipped_before`).
    """

    def __init__(self, path: str | os.PathLike, fields: dict[str, str]):
        self.path = Path(path)
        self.fields = fields
        # Bad lines left out before the query sees the rows (when a file had to be
        # cleaned, now or for its columnar copy): add them to the query's own count of
        # NULL-event rows (`SKIPPED`).
        self.skipped_before = 0
        self._cleaned: Path | None = None
        self._reads_jsonl = False  # set by relation() when it scans the JSONL file itself

    def relation(self) -> str:
        """The FROM expression for this file's rows."""
        if self._cleaned is not None:
            return read_json_relation(self._cleaned, self.fields)
        try:
            if self.path.stat().st_size == 0:
                return empty_relation(self.fields)
        except FileNotFoundError:
            return empty_relation(self.fields)
        self._reads_jsonl = True
        return read_json_relation(self.path, self.fields)

    @property
    def is_jsonl(self) -> bool:
        """Whether queries read the JSONL file itself (not a copy, a cleaning or nothing)."""
        self._reads_jsonl = False
        self.relation()
        return self._reads_jsonl

    def clean(self) -> None:
        """Copy the lines that parse as JSON objects to a temporary file (counted otherwise)."""
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
