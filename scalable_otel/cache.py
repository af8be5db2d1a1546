"""`@cacheable`: content-addressed results under `.scalable/cache/`, every lookup recorded.

The key is a SHA-256 of the function's code and its arguments. An entry is one
file: an HMAC, under a key kept in the cache directory (owner-only), of a small
JSON header and the pickle that follow it; so the cache never unpickles bytes
it did not write itself. Each lookup (in the client or inside a task on a
worker) becomes a cache.jsonl line through the active run's recorder; a miss says
why (`first`, `arguments`, `code`, `evicted` or `corrupt`), from the index of what each
function stored (`scalable_otel.cache_index`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import logging
import os
import pickle
import secrets
import sys
import tempfile
import time
from pathlib import Path

import orjson

from . import semconv as sc
from .cache_index import CacheIndex, argument_tokens
from .rundir import make_private_dirs

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "SCALABLE_CACHE_DIR"
DEFAULT_CACHE_DIR = Path(".scalable") / "cache"

# Where lookups are reported: set by the worker plugin in worker processes and
# by an active session in the client process.
_worker_sink = None
_worker_cache_dir: str | None = None
_driver_sink = None
_driver_cache_dir: str | None = None
# When each sink was set (its run began here): a miss compares with what was stored before.
_worker_since: float | None = None
_driver_since: float | None = None


def set_worker_sink(sink, cache_dir: str | None) -> None:
    global _worker_sink, _worker_cache_dir, _worker_since
    _worker_sink, _worker_cache_dir, _worker_since = sink, cache_dir, time.time()
    _watch_other_caches(sink)


def set_driver_sink(sink, cache_dir: str | None) -> None:
    global _driver_sink, _driver_cache_dir, _driver_since
    _driver_sink, _driver_cache_dir, _driver_since = sink, cache_dir, time.time()
    _watch_other_caches(sink)


def clear_driver_sink(sink) -> None:
    """Stop sending the client process's lookups to `sink`, unless another run has taken
    them since (runs that share a process: the last one started gets them)."""
    global _driver_sink, _driver_cache_dir
    if sink is not None and _driver_sink is sink:
        _driver_sink, _driver_cache_dir = None, None


# Called each time a run starts to receive this process's lookups: the instrumentation of
# another library's cache (`instrumentation.scalable_library`) adds itself here, so that
# this module, below the instrumentation, imports none of it.
_sink_hooks: list = []


def add_sink_hook(hook) -> None:
    """Call `hook()` whenever a sink is set, so that a run also gets the lookups of another
    library's cache (idempotent)."""
    if hook not in _sink_hooks:
        _sink_hooks.append(hook)


def _watch_other_caches(sink) -> None:
    if sink is not None:
        for hook in list(_sink_hooks):
            hook()


def report_lookup(
    function: str,
    cache_key: str | None,
    result: str,
    lookup_s: float,
    saved_s: float | None,
    compute_s: float | None,
    miss_reason: str | None = None,
    miss_arguments: list[str] | None = None,
) -> None:
    """Send one cache lookup to the run of this process, if any: inside a Dask task to the
    worker's run (with the task's key), elsewhere to the client's session. A miss may say
    why (`semconv.CACHE_MISS_REASONS`) and, for `arguments`, which arguments differed."""
    task_key, worker = _current_task()
    sink = _worker_sink if worker is not None else _driver_sink
    if sink is None:
        return
    record = {
        "t": time.time(),
        "function": function,
        "cache_key": cache_key,
        "result": result,
        "lookup_s": lookup_s,
        "saved_s": saved_s,
        "compute_s": compute_s,
        "key": task_key,
        "worker": worker,
    }
    if miss_reason is not None:
        record["miss_reason"] = miss_reason
        if miss_arguments is not None:
            record["miss_arguments"] = list(miss_arguments)
    sink(record)


def _run_began() -> float | None:
    """When the run that receives this process's lookups began here; None when no run
    receives them (a miss's reason would go nowhere)."""
    _, worker = _current_task()
    sink, since = (_worker_sink, _worker_since) if worker else (_driver_sink, _driver_since)
    return since if sink is not None else None


def _current_task():
    """(key, worker address) when called inside a Dask task, else (None, None)."""
    try:
        from distributed.worker import get_worker, thread_state

        key = getattr(thread_state, "key", None)
        if key is None:
            return None, None
        return key, get_worker().address
    except Exception:
        return None, None


def _code_fingerprint(fn) -> bytes:
    try:
        return inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return repr(fn).encode()
        return code.co_code + repr(code.co_consts).encode()


# What reading an entry found (`CacheStore.read`)
HIT, ABSENT, CORRUPT = "hit", "absent", "corrupt"


class CacheStore:
    """Verified pickles in a directory, addressed by key."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._key: bytes | None = None  # read once per store (a store lives for one call)

    def _secret(self) -> bytes:
        if self._key is None:
            self._key = self._read_secret()
        return self._key

    def _read_secret(self) -> bytes:
        """The cache's signing key, made once; processes racing to make it agree on one."""
        path = self.root / ".key"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
        make_private_dirs(self.root)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".key-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
            try:
                os.link(tmp, path)  # whole file or nothing: a reader never sees it half-written
            except FileExistsError:
                pass  # another process won the race: use its key
        finally:
            os.unlink(tmp)
        return path.read_bytes()

    def path(self, key: str) -> Path:
        """The entry's file: `<hmac hex>\\n<header JSON>\\n<pickle>`, replaced in one step,
        so two processes saving one key leave one whole entry, never a mix of both."""
        return self.root / key[:2] / f"{key}.entry"

    def _digest(self, signed: bytes) -> bytes:
        return hmac.new(self._secret(), signed, hashlib.sha256).hexdigest().encode()

    def read(self, key: str):
        """(state, value, header): state `hit` for a verified entry, `absent` when there
        is no entry file, `corrupt` when it is there and cannot be used (unreadable,
        failing verification, or not unpickling)."""
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return ABSENT, None, None
        except OSError as exc:
            logger.warning("scalable-otel: cache entry %s unreadable (%s); recomputing", key, exc)
            return CORRUPT, None, None
        signed = self._verified(data)
        if signed is None:
            logger.warning("scalable-otel: cache entry %s failed verification; recomputing", key)
            return CORRUPT, None, None
        try:
            head, payload = signed.split(b"\n", 1)
            return HIT, pickle.loads(payload), orjson.loads(head)
        except Exception as exc:  # signed by us, yet not loadable: a class gone, say
            logger.warning("scalable-otel: cache entry %s not loadable (%s); recomputing", key, exc)
            return CORRUPT, None, None

    def load(self, key: str):
        """(True, value, header) for a verified entry, else (False, None, None)."""
        state, value, header = self.read(key)
        return (True, value, header) if state == HIT else (False, None, None)

    def save(self, key: str, value, header: dict) -> None:
        payload = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        self.write_signed(self.path(key), orjson.dumps(header) + b"\n" + payload)

    def write_signed(self, path: Path, data: bytes) -> None:
        """`<hmac hex>\\n<data>` to `path`, replaced in one step (the header of an entry is
        signed with its pickle)."""
        make_private_dirs(path.parent)
        _write_atomic(path, self._digest(data) + b"\n" + data)

    def read_signed(self, path: Path) -> bytes | None:
        """The data of a file `write_signed` wrote, or None (missing, or not verified)."""
        try:
            return self._verified(path.read_bytes())
        except OSError:
            return None

    def _verified(self, data: bytes) -> bytes | None:
        digest, sep, signed = data.partition(b"\n")
        if not sep or not hmac.compare_digest(digest, self._digest(signed)):
            return None
        return signed


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class CacheableFunction:
    """A function whose results are cached on disk; see `cacheable`."""

    def __init__(self, fn, cache_dir=None, name: str | None = None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "function")
        self.cache_dir = cache_dir
        self._fingerprint = hashlib.sha256(_code_fingerprint(fn)).hexdigest()
        self._signature = None  # made at the first miss

    def cache_key(self, args, kwargs) -> str:
        from dask.base import tokenize

        token = tokenize(args, kwargs)
        text = f"{self.__module__}.{self.__qualname__}:{self._fingerprint}:{token}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _root(self) -> str:
        return str(
            self.cache_dir
            or _worker_cache_dir
            or _driver_cache_dir
            or os.environ.get(CACHE_DIR_ENV)
            or DEFAULT_CACHE_DIR
        )

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            key = self.cache_key(args, kwargs)
            store = CacheStore(self._root())
            state, value, header = store.read(key)
        except Exception as exc:  # an unreadable cache is a miss, never a failure
            logger.debug("scalable-otel: cache lookup failed: %s", exc)
            key, store, state, value, header = None, None, None, None, None
        if state == HIT:
            lookup_s = time.perf_counter() - t0
            compute_s = float(header.get("compute_s") or 0.0)
            self._report(key, "hit", lookup_s, max(0.0, compute_s - lookup_s), compute_s)
            return value
        reason, differing, tokens = self._why(store, key, state, args, kwargs)
        lookup_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            value = self.fn(*args, **kwargs)
        except BaseException:
            self._report(key, "miss", lookup_s, 0.0, time.perf_counter() - t1, reason, differing)
            raise
        compute_s = time.perf_counter() - t1
        if store is not None:
            try:
                store.save(
                    key,
                    value,
                    {"function": self.name, "compute_s": compute_s, "created": time.time()},
                )
            except Exception as exc:
                logger.warning("scalable-otel: result of %s not cached: %s", self.name, exc)
            else:
                self._add_to_index(store, key, tokens, args, kwargs)
        self._report(key, "miss", lookup_s, 0.0, compute_s, reason, differing)
        return value

    def _argument_tokens(self, args, kwargs) -> dict[str, str]:
        if self._signature is None:
            try:
                self._signature = inspect.signature(self.fn)
            except (TypeError, ValueError):
                self._signature = False  # none to bind to: arguments by position
        return argument_tokens(self.fn, args, kwargs, self._signature or None)

    def _add_to_index(self, store, key, tokens, args, kwargs) -> None:
        """Record the call that stored `key`, so later misses can say why (a failure costs
        only the reasons of later misses)."""
        try:
            if tokens is None:
                tokens = self._argument_tokens(args, kwargs)
            self._index(store).add(key, self._fingerprint, tokens)
        except Exception as exc:
            logger.debug("scalable-otel: %s stored but not indexed: %s", self.name, exc)

    def _index(self, store: CacheStore) -> CacheIndex:
        return CacheIndex(store, f"{self.__module__}.{self.__qualname__}")

    def _why(self, store, key, state, args, kwargs):
        """(miss reason, differing argument names, argument tokens) of a miss; reasons
        are None when the lookup itself failed."""
        if state == CORRUPT:
            return sc.CACHE_MISS_CORRUPT, None, None
        since = _run_began()
        if state != ABSENT or since is None:
            return None, None, None
        try:
            tokens = self._argument_tokens(args, kwargs)
            reason, differing = self._index(store).why(key, self._fingerprint, tokens, since)
            return reason, differing, tokens
        except Exception as exc:
            logger.debug("scalable-otel: cannot tell why %s missed: %s", self.name, exc)
            return None, None, None

    def _report(
        self, cache_key, result, lookup_s, saved_s, compute_s, reason=None, differing=None
    ) -> None:
        report_lookup(
            self.name,
            cache_key,
            result,
            round(lookup_s, 6),
            round(saved_s, 6),
            round(compute_s, 6),
            reason,
            differing,
        )

    def __dask_tokenize__(self):
        return ("scalable-otel-cacheable", self.__module__, self.__qualname__, self._fingerprint)

    def __reduce__(self):
        module = sys.modules.get(self.__module__)
        if (
            module is not None
            and module.__name__ != "__main__"
            and getattr(module, self.__qualname__, None) is self
        ):
            return self.__qualname__  # importable: pickled as a reference to itself
        return (CacheableFunction, (self.fn, self.cache_dir, self.name))


def cacheable(fn=None, *, cache_dir=None, name: str | None = None):
    """Cache a function's results on disk, keyed by its code and its arguments.

    Example::

        @cacheable
        def run_simulation(scenario_id):
            ...

    A second call with the same arguments (in this run or a later one, in the
    client or on any worker sharing the directory) returns the stored result;
    each lookup is recorded in the run's cache.jsonl as a hit or a miss.
    """
    if fn is None:
        return functools.partial(cacheable, cache_dir=cache_dir, name=name)
    return CacheableFunction(fn, cache_dir=cache_dir, name=name)
