"""Parquet copies of run directories, for data-warehouse tools, DuckDB or Spark.

`export_parquet(run_dir, out_dir)` writes one Parquet file per JSONL file of the run
(`tasks.parquet`, `resources.parquet`, `workers.parquet`, `cache.parquet`,
`failures.parquet`) and `run.json`'s scalar fields as the one-row `run.parquet`.
`export_all(runs_root, out_dir)` does it for every run, one sub-directory per run id.

Reading. Lines are read with the rules of `scalable_otel.rundir.read_lines`: blank lines
are ignored; a line that is not valid JSON (a torn last line of a live or crashed run, a
corrupt line) or whose JSON is not an object is skipped and counted. Lines are parsed in
batches (`batch_size`, 50,000 by default), so a file of a million events never lives in
memory as Python dicts at once. Each file is read twice, up to the size it had when the
export began: once to settle the schema, once to write it. Lines appended meanwhile (a
live run) are left for the next export, and a schema that only appears in a late batch
is part of the file's schema from the first row group on.

Column types. Columns are the fields of the lines, in the order they first appear;
a field missing from a line is null in that row.

- A string field whose every value has the schema's time format (ISO 8601, UTC, `Z`,
  up to 6 decimals: `timestamp`, `submitted_at`, `start_time`, `end_time`, ...) and names
  a real time is `timestamp[us, tz=UTC]`, equal to the text to the microsecond. A single
  value in another format (or such as 2026-02-30) keeps the whole column as strings
  (nothing is lost or guessed).
- Integers are int64, numbers mixing integers and floats float64, and fields named
  `*_s` (seconds) or `cpu_percent`, `memory_percent`, `cpus_used` are float64 even when
  every value happens to be a whole number. Booleans are bool, strings string.
- Objects and arrays (`args`, `dependencies`, `caused_by`) are Arrow structs and lists
  when one type fits every value: struct fields are the union of the keys seen (a key
  missing from one object is null there), and integers meeting floats become float64.
- Any other field is a JSON column: a string column holding each value's JSON text
  (`orjson.loads` gives the value back; null stays null). This happens when values
  conflict, for example `args` that is an object on one line and a (truncated) string on
  another, or `{"x": 1}` beside `{"x": "a"}`; and for an empty object everywhere (Parquet
  has no empty struct) or an integer beyond int64. The names of these columns are in the
  result's `json_columns` and in the file's metadata (`scalable_otel.json_columns`).
- A field that is null on every line is typed by its name where the schema knows it
  (time fields timestamp, `*_s` float64), else it is Arrow's null type.

A JSONL file with no lines gives no Parquet file (and a stale one left by an earlier
export to the same place is removed): a Parquet file needs a schema, and an invented
one would differ from the real one. Each file is written to a temporary file in
`out_dir` and renamed into place, so an interrupted export leaves the old file or none,
never half of one. Files are owner-only (mode 0600), as in the run directory.

Why this module reads the run's files itself, the one reader besides `load.Run`: an
export is a raw, typed copy of what the files hold, line for line. It does not apply
what `Run` adds for the answers (run.json's counts taken as final by the rule of
`facts`, a Scalable 2.0 beta run's names turned into ours, the columnar copy read
instead of a JSONL file), and it reads each file in batches, twice, up to the size the
file had when the export began, which no `Run` method does. It parses lines with the
package's one line reader (`rundir.iter_lines`), so a line export skips is a line every
reader skips (tests/test_layers.py names it as an exception).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import RunNotFound
from ..rundir import (
    JSONL_FILES,
    RUN_JSON,
    iter_lines,
    list_runs,
    make_private_dirs,
    replaced_atomically,
    runs_dir,
)

__all__ = ["DEFAULT_BATCH_SIZE", "ExportResult", "export_all", "export_parquet"]

DEFAULT_BATCH_SIZE = 50_000
TIMESTAMP = pa.timestamp("us", tz="UTC")
ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
_TIME_FIELDS = frozenset({"timestamp", "submitted_at", "start_time", "end_time"})
_FLOAT_FIELDS = frozenset({"cpu_percent", "memory_percent", "cpus_used"})
_INFER_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)
_META_SOURCE = b"scalable_otel.source"
_META_JSON = b"scalable_otel.json_columns"


class ExportResult(dict):
    """The Parquet files written, by name (`"tasks"` → `.../tasks.parquet`), plus
    `rows` (rows written per name), `bad_lines` (lines skipped per source file name, only
    files with some; a corrupt run.json counts 1) and `json_columns` (per name, the
    columns written as JSON text)."""

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.rows: dict[str, int] = {}
        self.bad_lines: dict[str, int] = {}
        self.json_columns: dict[str, list[str]] = {}

    def __repr__(self) -> str:
        return f"ExportResult({dict(self)!r}, rows={self.rows!r}, bad_lines={self.bad_lines!r})"


class _Lines:
    """The parsed lines of a JSONL file up to `limit` bytes, in batches; counts bad lines."""

    def __init__(self, path: Path, limit: int):
        self.path, self.limit, self.bad = path, limit, 0

    def batches(self, size: int) -> Iterator[list[dict]]:
        self.bad = 0
        batch: list[dict] = []
        for value in iter_lines(self.path, self.limit):
            if value is None:
                self.bad += 1
                continue
            batch.append(value)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch


def _unify(a: pa.DataType | None, b: pa.DataType | None) -> pa.DataType | None:
    """One type for values of types `a` and `b`, or None when there is none."""
    if a is None or b is None:
        return None
    if a.equals(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        return None if pa.types.is_integer(a) and pa.types.is_integer(b) else pa.float64()
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields = {a.field(i).name: a.field(i).type for i in range(a.num_fields)}
        for i in range(b.num_fields):
            f = b.field(i)
            fields[f.name] = _unify(fields[f.name], f.type) if f.name in fields else f.type
        if any(t is None for t in fields.values()):
            return None
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        value = _unify(a.value_type, b.value_type)
        return None if value is None else pa.list_(value)
    return None


def _writable(t: pa.DataType) -> bool:
    """Whether Parquet can store the type (it has no struct without fields)."""
    if pa.types.is_struct(t):
        return t.num_fields > 0 and all(_writable(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t):
        return _writable(t.value_type)
    return True


def _is_seconds(name: str) -> bool:
    return name.endswith("_s") or name in _FLOAT_FIELDS


def _is_time(array: pa.Array) -> bool:
    """Whether every string of the array names a real time (not 2026-02-30, say)."""
    try:
        array.cast(TIMESTAMP)
    except pa.ArrowInvalid:
        return False
    return True


def _floats_where_typed(value, t: pa.DataType):
    """`value` with an integer made a float wherever `t` has a float (pyarrow converts an
    integer to a double only when the double holds it exactly, under 2**53)."""
    if isinstance(value, int) and not isinstance(value, bool) and pa.types.is_floating(t):
        return float(value)
    if isinstance(value, dict) and pa.types.is_struct(t):
        return {f.name: _floats_where_typed(value.get(f.name), f.type) for f in t}
    if isinstance(value, list) and pa.types.is_list(t):
        return [_floats_where_typed(v, t.value_type) for v in value]
    return value


class _Column:
    """What one field's values have been so far, and the Arrow type they end up as."""

    __slots__ = ("name", "type", "iso")

    def __init__(self, name: str):
        self.name = name
        self.type: pa.DataType | None = pa.null()  # None: values conflict, JSON text
        self.iso = True  # every string value seen so far is an ISO 8601 UTC time

    def observe(self, values: list) -> None:
        if self.type is None:
            return
        try:
            array = pa.array(values)
        except _INFER_ERRORS:
            self.type = None
            return
        self.observe_array(array)

    def observe_array(self, array: pa.Array) -> None:
        if self.type is None:
            return
        self.type = _unify(self.type, array.type)
        if self.iso and pa.types.is_string(array.type) and array.null_count < len(array):
            self.iso = bool(pc.all(pc.match_substring_regex(array, ISO_UTC)).as_py())
            self.iso = self.iso and _is_time(array)

    def final(self) -> pa.DataType | None:
        """The column's Arrow type, or None for a JSON text column."""
        t = self.type
        if t is None or not _writable(t):
            return None
        if pa.types.is_string(t) and self.iso:
            return TIMESTAMP
        if pa.types.is_null(t):
            if self.name in _TIME_FIELDS:
                return TIMESTAMP
            if _is_seconds(self.name):
                return pa.float64()
        if pa.types.is_integer(t) and _is_seconds(self.name):
            return pa.float64()
        return t


class _Plan:
    """The columns of a file, from every batch of its lines."""

    def __init__(self) -> None:
        self.columns: dict[str, _Column] = {}
        self._shapes: set[tuple] = set()

    def observe(self, batch: list[dict]) -> None:
        try:
            # one conversion of the whole batch in C: the fast path for consistent lines
            records = pa.array(batch)
        except _INFER_ERRORS:
            records = None
        if records is not None:
            for field, values in zip(records.type, records.flatten()):
                self._column(field.name).observe_array(values)
            return
        # some field's values conflict in this batch: infer each field on its own
        for record in batch:
            shape = tuple(record)
            if shape not in self._shapes:  # most lines share a handful of key sets
                self._shapes.add(shape)
                for name in shape:
                    self._column(name)
        for name, column in self.columns.items():
            column.observe([r.get(name) for r in batch])

    def _column(self, name: str) -> _Column:
        column = self.columns.get(name)
        if column is None:
            column = self.columns[name] = _Column(name)
        return column

    def schema(self, source: str) -> tuple[pa.Schema, list[str]]:
        fields, as_json = [], []
        for name, column in self.columns.items():
            t = column.final()
            if t is None:
                as_json.append(name)
                t = pa.string()
            fields.append(pa.field(name, t))
        metadata = {_META_SOURCE: source.encode(), _META_JSON: orjson.dumps(as_json)}
        return pa.schema(fields, metadata=metadata), as_json


def _record_batch(batch: list[dict], schema: pa.Schema, as_json: set[str]) -> pa.RecordBatch:
    typed = [f for f in schema if f.name not in as_json]
    # times are parsed from their text after the conversion
    wanted = pa.struct(
        [(f.name, pa.string() if f.type.equals(TIMESTAMP) else f.type) for f in typed]
    )
    try:
        records = pa.array(batch, wanted)
    except pa.ArrowInvalid:  # a large integer in a float64 column: made a float first
        records = pa.array([_floats_where_typed(r, wanted) for r in batch], wanted)
    converted = dict(zip((f.name for f in typed), records.flatten()))
    arrays = []
    for field in schema:
        if field.name in as_json:
            values = [r.get(field.name) for r in batch]
            texts = [None if v is None else orjson.dumps(v).decode() for v in values]
            arrays.append(pa.array(texts, pa.string()))
        elif field.type.equals(TIMESTAMP):
            arrays.append(converted[field.name].cast(TIMESTAMP))
        else:
            arrays.append(converted[field.name])
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _write_atomic(target: Path, schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> int:
    """Write the batches to `target` through a temporary file; the rows written."""
    rows = 0
    with replaced_atomically(target) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for batch in batches:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


def _remove_stale(target: Path) -> None:
    try:
        target.unlink()
    except FileNotFoundError:
        pass


def _export_jsonl(source: Path, target: Path, batch_size: int) -> tuple[int, int, list[str]]:
    """(rows written, bad lines, JSON columns) of one JSONL file; no file for no lines."""
    try:
        limit = source.stat().st_size
    except FileNotFoundError:
        _remove_stale(target)
        return 0, 0, []
    lines = _Lines(source, limit)
    plan = _Plan()
    for batch in lines.batches(batch_size):
        plan.observe(batch)
        del batch  # not two batches of dicts alive while the next one is parsed
    bad = lines.bad
    if not plan.columns:
        _remove_stale(target)
        return 0, bad, []
    schema, as_json = plan.schema(source.name)
    json_set = set(as_json)

    def record_batches() -> Iterator[pa.RecordBatch]:
        for batch in lines.batches(batch_size):
            converted = _record_batch(batch, schema, json_set)
            del batch
            yield converted

    return _write_atomic(target, schema, record_batches()), bad, as_json


def _export_run_json(source: Path, target: Path) -> tuple[int, int, list[str]]:
    """(rows, bad, JSON columns) of run.json's scalar fields as one row."""
    try:
        meta = orjson.loads(source.read_bytes())
    except FileNotFoundError:
        _remove_stale(target)
        return 0, 0, []
    except (OSError, orjson.JSONDecodeError):
        meta = None
    if not isinstance(meta, dict):
        _remove_stale(target)
        return 0, 1, []
    row = {k: v for k, v in meta.items() if not isinstance(v, (dict, list))}
    plan = _Plan()
    plan.observe([row])
    schema, as_json = plan.schema(source.name)
    rows = _write_atomic(target, schema, iter([_record_batch([row], schema, set(as_json))]))
    return rows, 0, as_json


def export_parquet(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ExportResult:
    """Write a run's files as Parquet into `out_dir` (created if missing).

    Returns the files written by name (a dict, with `rows`, `bad_lines` and
    `json_columns` as attributes); see the module docstring for the column types.

    >>> files = export_parquet(".scalable/runs/run-20261128T175439Z-quickstart-1a02c988",
    ...                        "export/")                                # doctest: +SKIP
    >>> pyarrow.parquet.read_table(files["tasks"]).schema.field("timestamp").type
    ...                                                                  # doctest: +SKIP
    TimestampType(timestamp[us, tz=UTC])
    >>> files.bad_lines                                                  # doctest: +SKIP
    {'tasks.jsonl': 1}
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not run_dir.is_dir():
        raise RunNotFound(f"no run directory {run_dir}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    make_private_dirs(out_dir)
    result = ExportResult(run_dir.name)
    for file in (RUN_JSON, *JSONL_FILES):
        name = file.rsplit(".", 1)[0]
        target = out_dir / f"{name}.parquet"
        if file == RUN_JSON:
            rows, bad, as_json = _export_run_json(run_dir / file, target)
        else:
            rows, bad, as_json = _export_jsonl(run_dir / file, target, batch_size)
        result.rows[name] = rows
        if bad:
            result.bad_lines[file] = bad
        if rows:
            result[name] = target
            result.json_columns[name] = as_json
    return result


def export_all(
    runs_root: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, ExportResult]:
    """Export every run under `runs_root` (None: the default runs directory) to
    `out_dir/<run id>/`, oldest first; the results by run id.

    >>> results = export_all(None, "export/")                           # doctest: +SKIP
    >>> sorted(results["run-20261128T175439Z-quickstart-1a02c988"])     # doctest: +SKIP
    ['cache', 'failures', 'resources', 'run', 'tasks', 'workers']
    """
    root = runs_dir(runs_root)
    runs = list_runs(root)
    if not runs:
        raise RunNotFound(f"no runs in {root}: run a workflow first (or pass --runs-dir)")
    out = Path(out_dir)
    return {run.name: export_parquet(run, out / run.name, batch_size=batch_size) for run in runs}
