"""JGCRI's Scalable tool (the `scalable` package on PyPI): its tags and its cache, recorded.

Two parts of that package are instrumented once it is imported (nothing is imported
here: a post-import hook waits for it):

- `ScalableClient.submit` and `ScalableClient.map`: their `tag=` (the container kind a
  task must run on, given to Dask as a resource) becomes the task's component: on the
  task_submitted line, the task span (`scalable.task.component`) and in plan.json. The
  client itself is a `distributed.Client`, so `DaskInstrumentor` already records its run;
  the keys are chosen before submitting, as `ScalableSession.submit` does, so that each
  task is described before the scheduler reports it.
- `cacheable`: every lookup becomes a cache.jsonl line (in the client and inside tasks
  on workers, wherever a run's sink is set; see `scalable_otel.cache.report_lookup`).
  Its decorator builds a `diskcache.Cache` per call through the module's global name
  `Cache`; that name is replaced by `WatchedCache`, a subclass that watches the lookup,
  so functions decorated before instrumenting are recorded too. The function's own code
  is never wrapped: the package hashes its source and reads its argument names.

  A decorated function is a closure, which Dask pickles by value with the globals it
  uses: it reaches workers with `Cache` bound to `WatchedCache` when the client process
  is instrumented. `WatchedCache` is importable from this module (made on first access),
  so it travels by reference; in the worker it reports to the worker's run.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import weakref

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from .. import cache, compat
from .. import semconv as sc
from ..submission import (
    MAP_OPTIONS,
    SUBMIT_OPTIONS,
    describe_tasks,
    function_kwargs,
    map_keys,
    submit_key,
)

logger = logging.getLogger(__name__)

CLIENT_MODULE = "scalable.client"
CACHING_MODULE = "scalable.caching"
_TAG_OPTIONS = ("tag", "n")

_lock = threading.Lock()
_hooks_registered: set[str] = set()
_wanted = {"client": None, "cache": False}  # what the hooks install when the module loads


# --- ScalableClient: tag= as the component ------------------------------------------------
def instrument_client(session_of) -> None:
    """Describe each task a `ScalableClient` submits, with its tag as the component.

    `session_of(client)` gives the `ScalableSession` recording the client's run, or None.
    """
    with _lock:
        _wanted["client"] = session_of
    _when_imported(CLIENT_MODULE, _patch_client)


def uninstrument_client() -> None:
    """Undo `instrument_client` (for a module already imported; a later import is left)."""
    with _lock:
        _wanted["client"] = None
    module = sys.modules.get(CLIENT_MODULE)
    client = getattr(module, "ScalableClient", None)
    if client is not None and hasattr(client.submit, "__wrapped__"):
        unwrap(client, "submit")
        unwrap(client, "map")


def _patch_client(module) -> None:
    session_of = _wanted["client"]
    client = getattr(module, "ScalableClient", None)
    if session_of is None or client is None or hasattr(client.submit, "__wrapped__"):
        return
    wrapt.wrap_function_wrapper(client, "submit", _SubmitWrapper(session_of))
    wrapt.wrap_function_wrapper(client, "map", _MapWrapper(session_of))


class _SubmitWrapper:
    def __init__(self, session_of):
        self._session_of = session_of

    def _describe(self, client, fn, keyed_args, fn_kwargs, kwargs) -> None:
        session = self._session_of(client)
        if session is not None:
            describe_tasks(
                session._recording,
                fn,
                keyed_args,
                fn_kwargs,
                _tag(kwargs),
                redaction=session.redaction,
            )

    def __call__(self, wrapped, client, args, kwargs):
        try:
            if args and self._session_of(client) is not None:
                fn, fn_args = args[0], args[1:]
                fn_kwargs = function_kwargs(kwargs, SUBMIT_OPTIONS + _TAG_OPTIONS)
                key = kwargs.get("key")
                if key is None:
                    key = submit_key(fn, fn_args, fn_kwargs, kwargs.get("pure", True))
                self._describe(client, fn, [(key, fn_args)], fn_kwargs, kwargs)
                kwargs = dict(kwargs, key=key)
        except Exception:  # telemetry never changes what the client does
            logger.debug("scalable-otel: ScalableClient.submit not described", exc_info=True)
        return wrapped(*args, **kwargs)


class _MapWrapper(_SubmitWrapper):
    def __call__(self, wrapped, client, args, kwargs):
        try:
            if len(args) > 1 and self._session_of(client) is not None:
                fn = args[0]
                iterables = [a if isinstance(a, (list, tuple)) else list(a) for a in args[1:]]
                args = (fn, *iterables)  # generators read once, here
                fn_kwargs = function_kwargs(kwargs, MAP_OPTIONS + _TAG_OPTIONS)
                keys = map_keys(
                    fn, iterables, fn_kwargs, kwargs.get("key"), kwargs.get("pure", True)
                )
                self._describe(client, fn, zip(keys, zip(*iterables)), fn_kwargs, kwargs)
                kwargs = dict(kwargs, key=keys)
        except Exception:
            logger.debug("scalable-otel: ScalableClient.map not described", exc_info=True)
        return wrapped(*args, **kwargs)


def _tag(kwargs: dict) -> str | None:
    tag = kwargs.get("tag")
    return None if tag is None else str(tag)


# --- cacheable: each lookup a cache.jsonl line ----------------------------------------------
def record_cache_lookups() -> None:
    """Report each lookup of the package's `cacheable` in this process (idempotent)."""
    from .task_context import add_task_end_hook

    with _lock:
        _wanted["cache"] = True
    add_task_end_hook(settle_open_lookups)
    _when_imported(CACHING_MODULE, _patch_cache)


def watch_when_reporting() -> None:
    """Record the package's cache lookups whenever a run receives this process's lookups
    (a sink is set in `scalable_otel.cache`); idempotent."""
    cache.add_sink_hook(record_cache_lookups)


_computing = threading.local()  # .lookups: this thread's misses still computing


def settle_open_lookups() -> None:
    """Report this thread's misses whose function raised (their cache never closed): at
    the end of a task the computation is over, whatever happened to it."""
    for lookup in list(getattr(_computing, "lookups", ())):
        lookup.report()


def stop_recording_cache_lookups() -> None:
    """Put the package's own `Cache` back (for a module already imported)."""
    with _lock:
        _wanted["cache"] = False
    module = sys.modules.get(CACHING_MODULE)
    if module is not None and _watched_class is not None and module.Cache is _watched_class:
        module.Cache = _watched_class.__mro__[2]


def _patch_cache(module) -> None:
    from diskcache import Cache

    if not _wanted["cache"]:
        return
    current = getattr(module, "Cache", None)
    if current is Cache:
        module.Cache = watched_cache_class()
    elif current is not _watched_class or current is None:
        # the package no longer opens its cache through this name: lookups go unrecorded
        compat.fell_back(compat.SCALABLE_CACHE, TypeError(f"Cache is {current!r}"))


_watched_class = None


def watched_cache_class() -> type:
    """`WatchedCache`: `diskcache.Cache` reporting each lookup of `cacheable`."""
    global _watched_class
    with _lock:
        if _watched_class is None:
            from diskcache import Cache

            _watched_class = type(
                "WatchedCache",
                (_WatchedCache, Cache),
                {"__module__": __name__, "__doc__": watched_cache_class.__doc__},
            )
        return _watched_class


def __getattr__(name: str):
    if name == "WatchedCache":
        return watched_cache_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Lookup:
    """One call of a cacheable function, as seen through the cache it opens."""

    def __init__(self, function: str):
        self.function = function
        self.started = time.perf_counter()
        self.decided = None  # when hit or miss became known
        self.cache_key = None
        self.usable = False  # a stored value was read
        self.discarded = False  # ... and then deleted (its output check failed)
        self.stored = None  # when a computed value was stored
        self.reported = False

    def decide(self) -> None:
        self.decided = time.perf_counter()
        if not self.usable:
            self.computing()

    def computing(self) -> None:
        if not hasattr(_computing, "lookups"):
            _computing.lookups = set()
        _computing.lookups.add(self)

    def report(self, finished: bool = True) -> None:
        getattr(_computing, "lookups", set()).discard(self)
        if self.reported or self.decided is None:
            return
        self.reported = True
        now = time.perf_counter()
        hit = self.usable and not self.discarded
        compute_s = None
        if not hit and finished:
            compute_s = round((self.stored or now) - self.decided, 6)
        cache.report_lookup(
            self.function,
            None if self.cache_key is None else str(self.cache_key),
            "hit" if hit else "miss",
            lookup_s=round(self.decided - self.started, 6),
            saved_s=None,  # the package keeps no compute time with a value
            compute_s=compute_s,
            # an entry was read and deleted (its output check failed); the package keeps
            # nothing to tell the other reasons apart
            miss_reason=sc.CACHE_MISS_CORRUPT if self.discarded else None,
        )


class _WatchedCache:
    """Mixed in before the package's `diskcache.Cache`: watches one lookup.

    Each method calls the package's own first and returns what it returned; a failure of
    the watching is counted (`compat.SCALABLE_CACHE`) and never reaches the task.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scalable_otel_lookup = None
        try:
            self._scalable_otel_lookup = lookup = _Lookup(_calling_function())
            # a function that raised never closes its cache: its miss is reported when the
            # cache is collected, without a compute time
            weakref.finalize(self, lookup.report, False)
        except Exception as exc:
            compat.fell_back(compat.SCALABLE_CACHE, exc)

    def __contains__(self, key):
        found = super().__contains__(key)
        _watch(self, _contains, key, found)
        return found

    def get(self, key, *args, **kwargs):
        value = super().get(key, *args, **kwargs)
        _watch(self, _got, key, value)
        return value

    def delete(self, key, *args, **kwargs):
        _watch(self, _deleting)
        return super().delete(key, *args, **kwargs)

    def add(self, key, *args, **kwargs):
        _watch(self, _adding, key)
        return super().add(key, *args, **kwargs)

    def close(self, *args, **kwargs):
        try:
            return super().close(*args, **kwargs)
        finally:
            _watch(self, _closed)


def _watch(watched, step, *args) -> None:
    lookup = getattr(watched, "_scalable_otel_lookup", None)
    if lookup is None:
        return
    try:
        step(lookup, *args)
    except Exception as exc:  # never the task's problem
        compat.fell_back(compat.SCALABLE_CACHE, exc)


def _contains(lookup: _Lookup, key, found: bool) -> None:
    if lookup.cache_key is None:
        lookup.cache_key = key
        if not found:
            lookup.decide()


def _got(lookup: _Lookup, key, value) -> None:
    if lookup.decided is None:
        lookup.cache_key = key
        lookup.usable = _usable(value)
        lookup.decide()


def _deleting(lookup: _Lookup) -> None:
    lookup.discarded = True
    lookup.computing()


def _adding(lookup: _Lookup, key) -> None:
    if lookup.decided is None:  # recompute=True: no lookup, a miss
        lookup.cache_key, lookup.decided = key, lookup.started
    lookup.stored = time.perf_counter()


def _closed(lookup: _Lookup) -> None:
    if lookup.decided is None:  # recompute=True and store=False
        lookup.decided = lookup.started
    lookup.report()


def _usable(value) -> bool:
    """The package stores `[digest, value]` and recomputes when the value is None."""
    return isinstance(value, (list, tuple)) and len(value) == 2 and value[1] is not None


def _calling_function() -> str:
    """The name of the cacheable function whose call opens this cache: `func` in the
    decorator's closure, two frames up (this mixin's __init__, then the call)."""
    try:
        frame = sys._getframe(2)
        func = frame.f_locals.get("func")
        return str(getattr(func, "__name__", None) or frame.f_code.co_name)
    except Exception:
        return "cacheable"


# --- post-import hooks -----------------------------------------------------------------------
def _when_imported(module_name: str, patch) -> None:
    """Run `patch(module)` now if the module is loaded, else when it is first imported."""
    module = sys.modules.get(module_name)
    if module is not None:
        _safely(patch, module)
        return
    with _lock:
        if module_name in _hooks_registered:
            return
        _hooks_registered.add(module_name)
    # wrapt calls the hook at once if the module was imported meanwhile
    wrapt.register_post_import_hook(lambda module: _safely(patch, module), module_name)


def _safely(patch, module) -> None:
    try:
        patch(module)
    except Exception as exc:
        logger.warning(
            "scalable-otel: %s is not instrumented (%s); it works as usual", module.__name__, exc
        )


# whoever imports this module and sets a sink (a test, say) gets the package's lookups too
watch_when_reporting()
