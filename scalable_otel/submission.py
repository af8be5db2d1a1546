"""Task keys decided before submitting, so that a task is described before it runs.

A run names each task and summarizes its arguments from the client's side; the
scheduler reports the task by key. Choosing the key here (as Dask would, from the
function and its arguments) lets the description reach the recorder before the
scheduler's record of the same key does.
"""

from __future__ import annotations

import functools
import uuid

from dask.base import tokenize
from dask.utils import funcname

from .args import DEFAULT_REDACTION, Redaction, args_json

# keywords of Client.submit / Client.map that are Dask's, not the function's
SUBMIT_OPTIONS = (
    "workers",
    "resources",
    "retries",
    "priority",
    "fifo_timeout",
    "allow_other_workers",
    "actor",
    "actors",
)
MAP_OPTIONS = SUBMIT_OPTIONS + ("batch_size",)
_OTHER_OPTIONS = ("key", "pure")


def function_kwargs(kwargs: dict, options) -> dict:
    """The keywords of `kwargs` meant for the task's function."""
    skip = set(options) | set(_OTHER_OPTIONS)
    return {name: value for name, value in kwargs.items() if name not in skip}


def submit_key(fn, args, kwargs: dict, pure: bool = True) -> str:
    """The key for one task: `name-token` of its function and arguments (pure), or unique."""
    if pure:
        return f"{funcname(fn)}-{tokenize(fn, kwargs, *args)}"
    return f"{funcname(fn)}-{uuid.uuid4()}"


def map_keys(fn, iterables: list, kwargs: dict, key=None, pure: bool = True) -> list:
    """The keys for a map over `iterables` (lists); `key` may be a list or a prefix."""
    if isinstance(key, list):
        return key
    prefix = key or funcname(fn)
    if pure:
        token = tokenize(fn, kwargs)
        return [f"{prefix}-{tokenize(token, args)}" for args in zip(*iterables)]
    uid = uuid.uuid4()
    return [f"{prefix}-{uid}-{i}" for i in range(min(map(len, iterables), default=0))]


def qualified_name(fn) -> str | None:
    """A task function's module and qualified name (OpenTelemetry's code.function.name),
    through partials; None for a callable that has none (an instance with `__call__`).

    >>> qualified_name(functools.partial(submit_key, pure=False))
    'scalable_otel.submission.submit_key'
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str):
        return None
    module = getattr(fn, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) and module else qualname


def safe_args_json(fn, args, kwargs, redaction: Redaction = DEFAULT_REDACTION) -> str | None:
    """The arguments' summary, or None when it cannot be made (never raises)."""
    try:
        return args_json(fn, args, kwargs, redaction)
    except Exception:
        return None


def describe_tasks(
    recording,
    fn,
    keyed_args,
    kwargs: dict,
    component: str | None = None,
    redaction: Redaction = DEFAULT_REDACTION,
):
    """Describe each `(key, args)` of `keyed_args` to a run's recording; never raises.

    A task whose name or argument summary could not be made is described with what could
    be, and counted by the recording (`description_failed`, run.json's
    `telemetry_descriptions_failed`)."""
    if recording is None:
        return
    failed = 0
    try:
        name = funcname(fn)
        function = qualified_name(fn)
        for key, args in keyed_args:
            try:
                summary = args_json(fn, args, kwargs, redaction)
            except Exception:
                summary = None
                failed += 1
            try:
                recording.describe(key, name, summary, component, function)
            except Exception:
                failed += summary is not None  # not counted twice
    except Exception:  # telemetry never breaks a submission
        failed += 1
    if failed:
        try:
            recording.description_failed(failed)
        except Exception:
            pass
