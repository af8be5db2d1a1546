"""Why a cache lookup missed: the index of the entries each cached function stored.

Beside each entry, the cache (`scalable_otel.cache`) writes one small index file in a
folder of the function's own::

    <cache root>/index/<function folder>/<arguments token>.<cache key>.idx

signed like an entry, holding the entry's key, its code fingerprint, when it was first
stored (`created`, Unix seconds) and one Dask token per argument (the call bound to the
function's signature, defaults applied). One file per entry, written whole under a
temporary name and renamed: processes storing at once never rewrite a shared file. On
a miss whose entry file is absent, the folder tells why:

- this key's own index file: `evicted`, the entry was stored and its file is gone;
- an index file of the same arguments and other code: `code`;
- no index file written before the run began: `first`, the function never stored an
  entry here (before this run: a sweep's first run is all `first`);
- otherwise `arguments`, naming the arguments that differ from the nearest entry stored
  before the run (the fewest differing arguments, an entry of the same code preferred).

`evicted` and `code` are exact whatever the folder's size (a file's existence, and the
folder's listing). `first` and `arguments` look at `MAX_SCANNED` index files at most
(any of them: the listing's order): beyond that, an entry stored before the run may go
unseen (a `first` that should be `arguments`), and `miss_arguments` may name more
arguments than the nearest of all would. Index files that fail verification are ignored.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from pathlib import Path

import orjson

from . import semconv as sc

INDEX_DIR = "index"
#: Index files read to find the nearest entry of a missed call.
MAX_SCANNED = 256
_SUFFIX = ".idx"


def argument_tokens(fn, args: tuple, kwargs: dict) -> dict[str, str]:
    """A Dask token per argument of the call, by parameter name (defaults applied); by
    position (`arg0`, …) and keyword when the call does not bind to the signature."""
    from dask.base import tokenize

    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        bound.apply_defaults()
        items = list(bound.arguments.items())
    except (TypeError, ValueError):
        items = [(f"arg{i}", a) for i, a in enumerate(args)] + sorted(kwargs.items())
    return {name: tokenize(value) for name, value in items}


def _arguments_token(tokens: dict[str, str]) -> str:
    return hashlib.sha256(orjson.dumps(tokens, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def differing(tokens: dict[str, str], stored: dict[str, str]) -> list[str]:
    """Names of the arguments whose tokens differ (or that only one call has), sorted."""
    return sorted(n for n in tokens.keys() | stored.keys() if tokens.get(n) != stored.get(n))


class CacheIndex:
    """The index files of one function (`module.qualname`) in one cache.

    `store` signs and verifies: `write_signed(path, data)`, `read_signed(path)` (the data,
    or None when the file is missing or fails verification).
    """

    def __init__(self, store, function_id: str):
        self.store = store
        name = hashlib.sha256(function_id.encode()).hexdigest()[:24]
        self.folder = Path(store.root) / INDEX_DIR / name

    def _path(self, key: str, tokens: dict[str, str]) -> Path:
        return self.folder / f"{_arguments_token(tokens)}.{key}{_SUFFIX}"

    def add(self, key: str, code: str, tokens: dict[str, str]) -> None:
        """Record that `key` was stored by `code` for a call of these argument tokens (an
        index file already there is kept: its time says since when the entry is known)."""
        path = self._path(key, tokens)
        if self.store.read_signed(path) is not None:
            return
        data = orjson.dumps({"key": key, "code": code, "args": tokens, "created": time.time()})
        self.store.write_signed(path, data)

    def _read(self, name: str) -> dict | None:
        data = self.store.read_signed(self.folder / name)
        if data is None:
            return None
        try:
            record = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(record, dict) or not isinstance(record.get("args"), dict):
            return None
        return record

    def _stored_before(self, names: list[str], since: float | None):
        """The index records of up to `MAX_SCANNED` of `names` that were written before
        `since` (all of them when it is None)."""
        for name in names[:MAX_SCANNED]:
            if since is not None:
                try:
                    # surely written since (a file's time is coarse: keep a margin); no read
                    if os.stat(self.folder / name).st_mtime > since + 1.0:
                        continue
                except OSError:
                    continue
            record = self._read(name)
            if record is None:
                continue
            created = record.get("created")
            if since is None or (isinstance(created, (int, float)) and created < since):
                yield record

    def why(
        self, key: str, code: str, tokens: dict[str, str], since: float | None = None
    ) -> tuple[str, list[str] | None]:
        """Why `key` (of this code and these argument tokens) has no entry file:
        (reason, the differing argument names for `arguments`, else None).

        `since` is when the run began: entries stored from then on (earlier calls of the
        same run) are not what the call could have found, so a sweep's first run is all
        `first`, and a later run's `arguments` compare with what earlier runs stored.
        """
        own = self._path(key, tokens)
        if own.exists() and self._read(own.name) is not None:
            return sc.CACHE_MISS_EVICTED, None
        try:
            names = [n for n in os.listdir(self.folder) if n.endswith(_SUFFIX)]
        except (FileNotFoundError, NotADirectoryError):
            names = []
        same_arguments = own.name.split(".", 1)[0] + "."
        for name in names:
            if name.startswith(same_arguments) and name != own.name:
                record = self._read(name)
                if record is not None and record.get("code") != code:
                    return sc.CACHE_MISS_CODE, None
        nearest = None
        for record in self._stored_before(names, since):
            names_differing = differing(tokens, record["args"])
            rank = (len(names_differing), record.get("code") != code)
            if nearest is None or rank < nearest[0]:
                nearest = (rank, names_differing)
        if nearest is None:  # nothing stored before (or nothing verified): as good as none
            return sc.CACHE_MISS_FIRST, None
        return sc.CACHE_MISS_ARGUMENTS, nearest[1]
