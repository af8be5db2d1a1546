"""Ids shared by the telemetry process and the workers: a Dask key as text, the span id
of one execution of a task.

Both sides compute them from what they already know (the run id, the task's key and
Dask's own id of the execution), so nothing has to be sent for a span made inside a task
to find its parent.
"""

from __future__ import annotations

import functools
import hashlib
import uuid


def key_str(key) -> str:
    """A Dask key as one string, as the run directory writes it: str keys as they are,
    tuple keys as Dask prints them.

    >>> key_str(("run_simulation-1f2e", 3))
    "('run_simulation-1f2e', 3)"
    """
    return key if isinstance(key, str) else str(key)


def execution_span_id(run_id: str, key, dask_run_id: int) -> int:
    """The span id of one execution of a task (its `execute` span): the same in the
    telemetry process and on the worker that runs it.

    `dask_run_id` is Dask's id of the execution: the scheduler gives a task a new one each
    time it sends the task to a worker (`TaskState.run_id`, on the scheduler and on the
    worker), so a key run twice in one run (retried, recomputed, submitted again) has a
    distinct span for each execution.

    >>> execution_span_id("run-x", "inc-1", 7) != execution_span_id("run-x", "inc-1", 8)
    True
    """
    text = f"{run_id}\0{key_str(key)}\0{dask_run_id}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") or 1


@functools.lru_cache(maxsize=16)
def trace_hex(trace_id: int) -> str:
    """A trace id as 32 hex digits; a run's spans share one trace, so it is formatted once
    and not on every line or span."""
    return f"{trace_id:032x}"


# The namespace OpenTelemetry's semantic conventions give for a service.instance.id made
# from an inherent unique id (a version 5 UUID).
_SERVICE_INSTANCE_NAMESPACE = uuid.UUID("4d63009a-8d0f-11ee-aad7-4c796ed8e320")


def service_instance_id(run_id: str) -> str:
    """The `service.instance.id` of a run's telemetry (one instance of the service per
    run): a version 5 UUID of the run id, the same whenever the run's data is sent again.

    >>> service_instance_id("run-x") == service_instance_id("run-x")
    True
    """
    return str(uuid.uuid5(_SERVICE_INSTANCE_NAMESPACE, run_id))
