"""Ids shared by the telemetry process and the workers: a Dask key as text, a task's span id.

Both sides compute them from what they already know (the run id and the task's key),
so nothing has to be sent for a span made inside a task to find its parent.
"""

from __future__ import annotations

import hashlib


def key_str(key) -> str:
    """A Dask key as one string, as the run directory writes it: str keys as they are,
    tuple keys as Dask prints them.

    >>> key_str(("run_simulation-1f2e", 3))
    "('run_simulation-1f2e', 3)"
    """
    return key if isinstance(key, str) else str(key)


def task_span_id(run_id: str, key) -> int:
    """The span id of a task's span: the same in the telemetry process and on workers."""
    digest = hashlib.blake2b(f"{run_id}\0{key_str(key)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1
