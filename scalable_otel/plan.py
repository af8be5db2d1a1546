"""plan.json: the run's plan, and its task graph kept up while the run goes on.

The graph is a projection of tasks.jsonl (one entry per `task_submitted` line whose
`reason` is null, in file order; docs/telemetry-schema.md, "plan.json"). Reading a
100,000-task tasks.jsonl back at the close cost most of a second, so `PlanGraph` follows
the file instead: a thread reads what was appended since its last look, every
`interval` seconds, and spools each entry, already in plan.json's formatting, to an
anonymous file beside the run directory's (nothing of it is left behind, even by a
crash). The close reads only the last lines and writes plan.json from the spool: the
same bytes a whole read would give, and nothing per task kept in memory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import orjson

from . import semconv as sc
from .manifest import Manifest
from .rundir import PLAN_JSON, TASKS, blocks_holding, replaced_atomically

logger = logging.getLogger(__name__)

_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
# the writer's own lines are compact JSON, so the event's bytes are known
_SUBMITTED = f'"event":"{sc.TASK_SUBMITTED}"'.encode()
_ENTRY_INDENT = b"    "  # an entry of `graph`, two levels down in plan.json


def plan_header(manifest: Manifest, *, run_id, target, provider) -> dict:
    """plan.json without its `graph`: what the session writes when the run starts."""
    tasks = {name: manifest.task_resources(name) for name in (manifest.data.get("tasks") or {})}
    return {
        "schema_version": sc.SCHEMA_VERSION,
        "run_id": run_id,
        "target": target,
        "provider": provider,
        "manifest_hash": manifest.hash,
        "tasks": tasks,
    }


def graph_entry(line: dict, manifest: Manifest, requests: dict) -> dict | None:
    """The graph's entry for one tasks.jsonl line, or None when the line is not a task's
    first submission: a task carries its `component` and requested `resources` (the
    component it was submitted with, the Scalable tool's `tag=`, else the one the manifest
    gives its name)."""
    if line is None or line.get("event") != sc.TASK_SUBMITTED or line.get("reason"):
        return None  # a key's later lives (resubmitted, recomputed) are not new tasks
    entry = {
        "key": line.get("key"),
        "task": line.get("task"),
        "dependencies": line.get("dependencies", []),
    }
    if line.get("component"):
        entry.update(manifest.component_request(line["component"]))
    else:
        entry.update(requests.get(line.get("task"), {}))
    if line.get("group"):  # submitted in a distributed.span block
        entry["group"] = line["group"]
        entry["group_path"] = line.get("group_path")
    return entry


def _entry_bytes(entry: dict) -> bytes:
    """One entry as `orjson.dumps(plan, OPT_INDENT_2)` writes it inside `graph` (JSON text
    holds no raw newline, so indenting every line is safe)."""
    return _ENTRY_INDENT + orjson.dumps(entry, option=_OPTIONS).replace(
        b"\n", b"\n" + _ENTRY_INDENT
    )


class PlanGraph:
    """plan.json's `graph`, kept up with `run_dir`'s tasks.jsonl; `write()` at the close.

    Example::

        graph = PlanGraph(run_dir, manifest, header)
        graph.follow()          # a thread catches up every `interval` seconds
        ...
        graph.write()           # the rest of tasks.jsonl, then plan.json with the graph
    """

    def __init__(self, run_dir: Path, manifest: Manifest, header: dict, interval: float = 2.0):
        self.path = Path(run_dir) / TASKS
        self.plan_path = Path(run_dir) / PLAN_JSON
        self.header = header
        self._manifest = manifest
        self._requests = manifest.task_requests()
        self._interval = interval
        self._offset = 0  # tasks.jsonl's bytes read (whole lines)
        self.entries = 0
        self._spool = None
        self._broken = False  # a spool write failed: the close reads the whole file again
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self) -> None:
        """Catch up with tasks.jsonl in a thread, every `interval` seconds, until `stop()`.

        The spool is opened now, not at the thread's first catch-up: a process's open
        files then stay as they were once its run has started (Dask's own tests count
        them around a client's life)."""
        with self._lock:
            self._open_spool()
        self._thread = threading.Thread(target=self._loop, name="scalable-otel-plan", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.catch_up()
            except Exception:  # the close reads what is left, from where this stopped
                logger.debug("scalable-otel: plan graph not caught up", exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def catch_up(self, final: bool = False) -> int:
        """Spool the entries of the whole lines appended since the last call (with `final`,
        of a last line with no newline too: the file is complete). Returns how many."""
        with self._lock:
            if self._broken:
                self._restart()
            try:
                return self._catch_up(final)
            except BaseException:
                self._broken = True
                raise

    def _restart(self) -> None:
        self._drop_spool()
        self._offset, self.entries, self._broken = 0, 0, False

    def _drop_spool(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            try:
                spool.close()
            except OSError:  # its buffer not flushed (a full disk): dropped anyway
                pass

    def _open_spool(self) -> None:
        if self._spool is None:
            # O_TMPFILE where the filesystem has it: a file with no name, gone with us
            self._spool = tempfile.TemporaryFile(dir=self.path.parent)

    def _catch_up(self, final: bool) -> int:
        self._open_spool()
        added = 0
        for offset, lines in blocks_holding(self.path, _SUBMITTED, self._offset, final):
            self._offset = offset
            chunks = []
            for line in lines:
                entry = graph_entry(line, self._manifest, self._requests)
                if entry is not None:
                    chunks.append(_entry_bytes(entry))
            if chunks:
                if self.entries:
                    self._spool.write(b",\n")
                self._spool.write(b",\n".join(chunks))
                self.entries += len(chunks)
                added += len(chunks)
        return added

    def write(self) -> None:
        """Read the rest of tasks.jsonl and write plan.json with the graph (atomically)."""
        self.stop()
        try:
            self.catch_up(final=True)
        except Exception:  # once more, from the file's start
            self.catch_up(final=True)
        with self._lock:
            head = orjson.dumps(self.header, option=_OPTIONS)
            with replaced_atomically(self.plan_path) as tmp, open(tmp, "wb") as out:
                if not self.entries:
                    out.write(orjson.dumps(self.header | {"graph": []}, option=_OPTIONS))
                else:
                    # the header's closing brace becomes the graph's
                    out.write(head[: head.rindex(b"}")].rstrip(b"\n") + b',\n  "graph": [\n')
                    self._spool.flush()
                    self._spool.seek(0)
                    shutil.copyfileobj(self._spool, out, 1 << 20)
                    self._spool.seek(0, os.SEEK_END)
                    out.write(b"\n  ]\n}")
                out.write(b"\n")

    def close(self) -> None:
        """Stop following and drop the spool."""
        self.stop()
        with self._lock:
            self._drop_spool()
