"""The columnar copy of a large run: `.columnar/<file>.parquet`, written when the run closes.

Reports of a run of a million events read the copy instead of parsing its JSONL (see
`analysis.columns`). Every line becomes a row, the unreadable ones as rows with a NULL
event, so queries count them as they do on the JSONL; a sidecar records the size and
mtime of the JSONL, and readers use a copy only while the JSONL still has them.

A copy takes about 10 ms per MB of JSONL (1.6 s after 100,000 tasks), so the close of a
large run leaves it to a process of its own (`write_columnar_copy_soon`) and returns: a
reader that comes first reads the JSONL, with the same answers, only slower. The copy is
written under a temporary name and renamed, and its sidecar written last (the old one
removed first), so a copy cut short by a crash or a kill is never read.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from ..children import child_env
from ..jsonl_scan import FIELDS, JsonlScan, connection
from ..rundir import columnar_copy_paths, replaced_atomically

logger = logging.getLogger(__name__)

# Below this a JSONL file is read in a few milliseconds: no copy is worth it.
COPY_MIN_BYTES = 4 << 20
# Copies of less than this in all are written at once (0.15 s at most here): cheaper than
# starting a process; larger ones are written by a process the close does not wait for.
BACKGROUND_MIN_BYTES = 16 << 20


def copy_sources(run_dir: str | os.PathLike, min_bytes: int | None = None) -> list[Path]:
    """The JSONL files of `run_dir` that get a copy: those of at least `min_bytes`
    (default `COPY_MIN_BYTES`)."""
    min_bytes = COPY_MIN_BYTES if min_bytes is None else min_bytes
    sources = []
    for name in FIELDS:
        path = Path(run_dir) / name
        try:
            if path.stat().st_size >= min_bytes:
                sources.append(path)
        except FileNotFoundError:
            continue
    return sources


def write_columnar_copy_soon(run_dir: str | os.PathLike) -> subprocess.Popen | None:
    """Write the columnar copy of a closed run: at once when it is small, else in a
    process of its own (niced, in a session of its own so that it outlives this process),
    which is returned and not waited for. Never raises.

    Example::

        write_columnar_copy_soon(session.run_dir)  # what the session's close does
    """
    try:
        sources = copy_sources(run_dir)
        if sum(path.stat().st_size for path in sources) < BACKGROUND_MIN_BYTES:
            write_columnar_copy(run_dir)
            return None
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(run_dir), str(COPY_MIN_BYTES)],
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except Exception:
        logger.debug("scalable-otel: no columnar copy of the run", exc_info=True)
        return None
    # reaped when it ends, so that a long-lived driver keeps no zombie
    threading.Thread(target=process.wait, name="scalable-otel-columnar", daemon=True).start()
    return process


def write_columnar_copy(run_dir: str | os.PathLike, min_bytes: int | None = None) -> list[Path]:
    """Write `.columnar/<file>.parquet` for each queried JSONL file of at least `min_bytes`
    (default `COPY_MIN_BYTES`). Returns the copies.

    Example::

        write_columnar_copy(session.run_dir, min_bytes=0)  # every file, however small
    """
    written = []
    for path in copy_sources(run_dir, min_bytes):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        copy, sidecar = columnar_copy_paths(path)
        copy.parent.mkdir(mode=0o700, exist_ok=True)
        # no sidecar while the copy is replaced: a reader never pairs it with a new copy
        sidecar.unlink(missing_ok=True)
        source = JsonlScan(path, FIELDS[path.name])
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
        with replaced_atomically(sidecar) as tmp:
            tmp.write_bytes(orjson.dumps(record | {"skipped": source.skipped_before}))
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


def main(argv: list[str]) -> int:
    """`python -m scalable_otel.exporters.columnar RUN_DIR [MIN_BYTES]`: the copy of one
    closed run."""
    try:
        os.nice(10)  # the workflow's next steps come first
    except OSError:
        pass
    try:
        write_columnar_copy(argv[0], int(argv[1]) if len(argv) > 1 else None)
    except Exception:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
