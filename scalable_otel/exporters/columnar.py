"""The columnar copy of a large run: `.columnar/<file>.parquet`, written when the run closes.

Reports of a run of a million events read the copy instead of parsing its JSONL (see
`analysis.columns`). Every line becomes a row, the unreadable ones as rows with a NULL
event, so queries count them as they do on the JSONL; a sidecar records the size and
mtime of the JSONL, and readers use a copy only while the JSONL still has them.
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson

from ..jsonl_scan import FIELDS, JsonlScan, connection
from ..rundir import columnar_copy_paths, replaced_atomically

# Below this a JSONL file is read in a few milliseconds: no copy is worth it.
COPY_MIN_BYTES = 4 << 20


def write_columnar_copy(run_dir: str | os.PathLike, min_bytes: int | None = None) -> list[Path]:
    """Write `.columnar/<file>.parquet` for each queried JSONL file of at least `min_bytes`
    (default `COPY_MIN_BYTES`). Returns the copies.

    Example::

        write_columnar_copy(session.run_dir, min_bytes=0)  # every file, however small
    """
    run_dir = Path(run_dir)
    min_bytes = COPY_MIN_BYTES if min_bytes is None else min_bytes
    written = []
    for name, fields in FIELDS.items():
        path = run_dir / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        if stat.st_size < min_bytes:
            continue
        copy, sidecar = columnar_copy_paths(path)
        copy.parent.mkdir(mode=0o700, exist_ok=True)
        source = JsonlScan(path, fields)
        con = connection()
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


def _copy_to_parquet(source: JsonlScan, target: Path) -> None:
    import duckdb

    sql = "COPY (SELECT * FROM {t}) TO ? (FORMAT parquet, COMPRESSION zstd)"
    try:
        connection().execute(sql.replace("{t}", source.relation()), [str(target)])
    except duckdb.Error:
        if not source.is_jsonl:
            raise
        source.clean()
        connection().execute(sql.replace("{t}", source.relation()), [str(target)])
