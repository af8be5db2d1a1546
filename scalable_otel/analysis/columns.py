"""Typed columns of a run's JSONL files, read fast enough for runs of a million events.

Reports need a few columns of each file (event, task, duration_s, …), not every field
as Python objects. Three ways to get them, fastest first:

1. A columnar copy (`.columnar/<file>.parquet`) written when a large run closes
   (`write_columnar_copy`). It records the size and mtime of the JSONL it was made
   from, and is used only while they still match.
2. pyarrow's multi-threaded JSON reader over the file's complete lines (a torn last
   line of a live or crashed run is left out and counted).
3. Line by line with orjson, when a line in the middle is corrupt: each bad line is
   skipped and counted.

All three give the same table: the schema's columns, in the schema's types, missing
fields as nulls.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import orjson
import pyarrow as pa

from ..rundir import CACHE, RESOURCES, TASKS, WORKERS, read_lines

COLUMNAR_DIR = ".columnar"
# Below this a JSONL file reads in well under a tenth of a second: no copy is worth it.
COPY_MIN_BYTES = 4 << 20
_SOURCE_SIZE = b"scalable.source_size"
_SOURCE_MTIME = b"scalable.source_mtime_ns"

_TS = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    TASKS: pa.schema(
        [
            ("timestamp", _TS),
            ("event", pa.string()),
            ("task", pa.string()),
            ("key", pa.string()),
            ("worker", pa.string()),
            ("attempt", pa.int64()),
            ("duration_s", pa.float64()),
            ("queue_wait_s", pa.float64()),
        ]
    ),
    CACHE: pa.schema(
        [
            ("timestamp", _TS),
            ("event", pa.string()),
            ("function", pa.string()),
            ("task", pa.string()),
            ("result", pa.string()),
            ("lookup_s", pa.float64()),
            ("saved_s", pa.float64()),
        ]
    ),
    RESOURCES: pa.schema(
        [
            ("timestamp", _TS),
            ("event", pa.string()),
            ("task", pa.string()),
            ("worker", pa.string()),
            ("cpu_percent", pa.float64()),
            ("memory_bytes", pa.float64()),
            ("cpu_seconds", pa.float64()),
            ("cpus_used", pa.float64()),
            ("peak_memory_bytes", pa.float64()),
            ("wall_s", pa.float64()),
        ]
    ),
    WORKERS: pa.schema(
        [
            ("timestamp", _TS),
            ("event", pa.string()),
            ("worker", pa.string()),
            ("span_id", pa.string()),
            ("nthreads", pa.int64()),
            ("memory_limit", pa.float64()),
        ]
    ),
}


def read_columns(
    run_dir: str | os.PathLike, name: str, columns: list[str] | None = None
) -> tuple[pa.Table, int]:
    """Typed columns (all of `SCHEMAS[name]` by default) of one JSONL file of a run, and
    how many of its lines were skipped as torn or corrupt.

    >>> table, skipped = read_columns(path, "tasks.jsonl", ["event"])  # doctest: +SKIP
    """
    schema = SCHEMAS[name]
    if columns is not None:
        schema = pa.schema([schema.field(c) for c in columns])
    path = Path(run_dir) / name
    copy = _fresh_copy(path, schema.names)
    if copy is not None:
        return copy, 0
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return schema.empty_table(), 0
    if size == 0:
        return schema.empty_table(), 0
    return _read_fast_or_slow(path, schema)


def _complete_length(f, size: int) -> int:
    """Bytes up to and including the last newline (what follows is a line being written)."""
    pos = size
    while pos > 0:
        step = min(pos, 1 << 16)
        f.seek(pos - step)
        chunk = f.read(step)
        newline = chunk.rfind(b"\n")
        if newline != -1:
            return pos - step + newline + 1
        pos -= step
    return 0


def _read_fast(path: Path, schema: pa.Schema) -> tuple[pa.Table, int]:
    import pyarrow.json as pj

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        end = _complete_length(f, size)
        f.seek(end)
        skipped = 1 if f.read().strip() else 0  # a line still being written, or torn
    if end == 0:
        return schema.empty_table(), skipped
    if skipped:
        # Only the complete lines: a slice of the mapped file (its buffers keep the map alive).
        source = pa.BufferReader(pa.memory_map(str(path)).read_buffer(end))
    else:
        source = str(path)  # read in blocks: the file's pages do not count as our memory
    table = pj.read_json(
        source,
        read_options=pj.ReadOptions(block_size=4 << 20),
        parse_options=pj.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
        ),
    )
    return table, skipped


def _read_line_by_line(path: Path, schema: pa.Schema) -> tuple[pa.Table, int]:
    records, bad = read_lines(path)
    columns = {}
    for field in schema:
        values = [r.get(field.name) for r in records]
        columns[field.name] = _column(values, field.type)
    return pa.table(columns, schema=schema), bad


def _column(values: list, type_: pa.DataType) -> pa.Array:
    """Values of one field as `type_`; a value of the wrong type becomes null."""
    if pa.types.is_timestamp(type_):
        strings = pa.array([v if isinstance(v, str) else None for v in values], pa.string())
        import pyarrow.compute as pc

        return pc.cast(
            pc.strptime(
                pc.replace_substring(strings, "Z", ""), format="%Y-%m-%dT%H:%M:%S", unit="us"
            ),
            type_,
        )
    if pa.types.is_string(type_):
        return pa.array([v if isinstance(v, str) else None for v in values], type_)
    if pa.types.is_integer(type_):
        ok = [v if isinstance(v, int) and not isinstance(v, bool) else None for v in values]
        return pa.array(ok, type_)
    numbers = [None if isinstance(v, bool) else v for v in values]
    numbers = [v if isinstance(v, (int, float)) else None for v in numbers]
    return pa.array([None if v is None else float(v) for v in numbers], type_)


# --- the columnar copy -------------------------------------------------------------------


def _copy_path(path: Path) -> Path:
    return path.parent / COLUMNAR_DIR / (path.stem + ".parquet")


def _fresh_copy(path: Path, columns: list[str]) -> pa.Table | None:
    copy = _copy_path(path)
    if not copy.is_file():
        return None
    try:
        import pyarrow.parquet as pq

        stat = path.stat()
        parquet = pq.ParquetFile(copy)
        meta = parquet.schema_arrow.metadata or {}
        if (
            meta.get(_SOURCE_SIZE) != str(stat.st_size).encode()
            or meta.get(_SOURCE_MTIME) != str(stat.st_mtime_ns).encode()
        ):
            return None
        return parquet.read(columns=columns, use_threads=True).replace_schema_metadata(None)
    except Exception:  # a damaged copy is only a lost shortcut
        return None


def write_columnar_copy(run_dir: str | os.PathLike, min_bytes: int = COPY_MIN_BYTES) -> list[Path]:
    """Write `.columnar/<file>.parquet` for each JSONL file of at least `min_bytes`.

    Called when a run closes; readers use a copy only while its JSONL is unchanged.
    Returns the copies written.
    """
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    written = []
    for name in SCHEMAS:
        path = run_dir / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_size < min_bytes:
            continue
        table, _ = _read_fast_or_slow(path, SCHEMAS[name])
        table = table.replace_schema_metadata(
            {_SOURCE_SIZE: str(stat.st_size), _SOURCE_MTIME: str(stat.st_mtime_ns)}
        )
        target = _copy_path(path)
        target.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        written.append(target)
    return written


def _read_fast_or_slow(path: Path, schema: pa.Schema) -> tuple[pa.Table, int]:
    try:
        return _read_fast(path, schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return _read_line_by_line(path, schema)


def find_line(run_dir: str | os.PathLike, name: str, needle: dict) -> dict | None:
    """The first line of a file holding every `field: value` of `needle` (a byte search).

    Used for the odd field the columns leave out, such as the `args` of one task.
    """
    path = Path(run_dir) / name
    parts = [orjson.dumps({k: v})[1:-1] for k, v in needle.items()]
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            at = data.find(parts[0])
            while at != -1:
                start = data.rfind(b"\n", 0, at) + 1
                stop = data.find(b"\n", at)
                line = data[start : stop if stop != -1 else len(data)]
                if all(p in line for p in parts[1:]):
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        record = None
                    if isinstance(record, dict) and all(
                        record.get(k) == v for k, v in needle.items()
                    ):
                        return record
                if stop == -1:
                    break
                at = data.find(parts[0], stop)
    return None
