"""Why a cache lookup missed: the index of the entries each cached function stored.

Beside each entry, the cache (`scalable_otel.cache`) writes one small index file in a
folder of the function's own::

    <cache root>/index/<function folder>/<arguments>.<key>.<code>.<argument hashes>.idx

Its name says, in short hashes, which call stored the entry: the call's arguments as a
whole, the entry's key, the function's code fingerprint, and one 8-hex hash per argument
(name and Dask token; the call bound to the function's signature, defaults applied; the
first `MAX_NAMED` arguments). Its content, signed like an entry, says it in full: key,
code fingerprint and a token per argument. One file per entry, its name fixed by the
call, written whole under a temporary name and renamed (and not rewritten: its mtime is
when the entry was first stored): processes storing at once never rewrite a shared file.

On a miss whose entry file is absent, the index tells why:

- this call's own index file is there: `evicted`, the entry was stored and its file is
  gone;
- an entry of the same arguments and other code: `code`;
- no entry stored before the run began: `first` (entries stored since, by earlier calls
  of the same run, are not what the call could have found: a sweep's first run is all
  `first`);
- otherwise `arguments`, naming the arguments that differ from the nearest entry stored
  before the run (the fewest differing arguments, an entry of the same code preferred).

A process lists the function's folder once per run (the entries stored before the run
do not change while it goes on), so a miss costs a lookup in memory and reads one index
file: the one its reason comes from, verified before it is believed (a file that fails
verification is passed over). Names are read for the first `MAX_LISTED` files of a
folder at most; beyond that the rest are unseen (a `first` that could be `arguments`,
or a nearest entry that is not the nearest of all).
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import os
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import NamedTuple

import orjson

from . import semconv as sc

INDEX_DIR = "index"
#: Index files of one function a process lists per run, at most.
MAX_LISTED = 100_000
#: Arguments hashed into an index file's name (a name is at most 255 bytes).
MAX_NAMED = 20
_SUFFIX = ".idx"
_HASH = 8  # hex characters of one argument's hash in a name


def argument_tokens(fn, args: tuple, kwargs: dict, signature=None) -> dict[str, str]:
    """A Dask token per argument of the call, by parameter name (defaults applied); by
    position (`arg0`, …) and keyword when the call does not bind to the signature.
    `signature` is `inspect.signature(fn)` when the caller keeps it (it costs more than
    tokenizing a number)."""
    from dask.base import tokenize

    try:
        bound = (signature or inspect.signature(fn)).bind(*args, **kwargs)
        bound.apply_defaults()
        items = list(bound.arguments.items())
    except (TypeError, ValueError):
        items = [(f"arg{i}", a) for i, a in enumerate(args)] + sorted(kwargs.items())
    return {name: tokenize(value) for name, value in items}


def differing(tokens: dict[str, str], stored: dict[str, str]) -> list[str]:
    """Names of the arguments whose tokens differ (or that only one call has), sorted."""
    return sorted(n for n in tokens.keys() | stored.keys() if tokens.get(n) != stored.get(n))


def _short(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


class _Call(NamedTuple):
    """What an index file's name says of the call that stored an entry."""

    arguments: str
    key: str
    code: str
    hashes: frozenset


def _name(key: str, code: str, tokens: dict[str, str]) -> str:
    arguments = _short(orjson.dumps(tokens, option=orjson.OPT_SORT_KEYS).decode(), 16)
    hashes = "".join(_short(f"{n}\0{t}", _HASH) for n, t in list(tokens.items())[:MAX_NAMED])
    return f"{arguments}.{key[:16]}.{code[:8]}.{hashes}{_SUFFIX}"


def _parse(name: str) -> _Call | None:
    parts = name[: -len(_SUFFIX)].split(".")
    if len(parts) != 4 or len(parts[3]) % _HASH:
        return None
    hashes = frozenset(parts[3][i : i + _HASH] for i in range(0, len(parts[3]), _HASH))
    return _Call(parts[0], parts[1], parts[2], hashes)


class _Before(NamedTuple):
    """The entries of one function stored before a run began, as their names say."""

    calls: list  # [(file name, _Call)]
    postings: dict  # argument hash -> indices into calls
    by_arguments: dict  # arguments hash -> indices into calls


# (function folder, run start) -> _Before: filled at a run's first miss of a function
_before: OrderedDict = OrderedDict()
_before_lock = threading.Lock()
_BEFORE_KEPT = 64


def _stored_before(folder: Path, since: float) -> _Before:
    with _before_lock:
        known = _before.get((folder, since))
        if known is not None:
            _before.move_to_end((folder, since))
            return known
    calls, postings, by_arguments = [], {}, {}
    try:
        with os.scandir(folder) as entries:
            for n, entry in enumerate(entries):
                if n >= MAX_LISTED:
                    break
                if not entry.name.endswith(_SUFFIX):
                    continue
                call = _parse(entry.name)
                try:
                    if call is None or entry.stat().st_mtime >= since:
                        continue
                except OSError:
                    continue
                i = len(calls)
                calls.append((entry.name, call))
                for h in call.hashes:
                    postings.setdefault(h, []).append(i)
                by_arguments.setdefault(call.arguments, []).append(i)
    except (FileNotFoundError, NotADirectoryError):
        pass
    known = _Before(calls, postings, by_arguments)
    with _before_lock:
        _before[(folder, since)] = known
        while len(_before) > _BEFORE_KEPT:
            _before.popitem(last=False)
    return known


class CacheIndex:
    """The index files of one function (`module.qualname`) in one cache.

    `store` signs and verifies: `write_signed(path, data)`, `read_signed(path)` (the data,
    or None when the file is missing or fails verification).
    """

    def __init__(self, store, function_id: str):
        self.store = store
        self.folder = Path(store.root) / INDEX_DIR / _short(function_id, 24)

    def add(self, key: str, code: str, tokens: dict[str, str]) -> None:
        """Record that `key` was stored by `code` for a call of these argument tokens (an
        index file already there is kept: its time says since when the entry is known)."""
        path = self.folder / _name(key, code, tokens)
        if path.exists():
            return
        data = orjson.dumps({"key": key, "code": code, "args": tokens})
        self.store.write_signed(path, data)

    def _read(self, name: str) -> dict | None:
        """An index file's content, if it verifies and has the expected shape."""
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

    def why(
        self, key: str, code: str, tokens: dict[str, str], since: float
    ) -> tuple[str, list[str] | None]:
        """Why `key` (of this code and these argument tokens) has no entry file:
        (reason, the differing argument names for `arguments`, else None). `since` is
        when the run began (Unix seconds): only entries stored before it are compared."""
        own = _name(key, code, tokens)
        if (self.folder / own).exists() and self._read(own) is not None:
            return sc.CACHE_MISS_EVICTED, None
        before = _stored_before(self.folder, since)
        mine = _parse(own)
        for i in before.by_arguments.get(mine.arguments, ()):
            name, call = before.calls[i]
            if call.code != mine.code:
                record = self._read(name)
                if record is not None and record.get("code") != code:
                    return sc.CACHE_MISS_CODE, None
        for name in self._nearest(before, mine):
            record = self._read(name)
            if record is not None:
                return sc.CACHE_MISS_ARGUMENTS, differing(tokens, record["args"])
        return sc.CACHE_MISS_FIRST, None

    @staticmethod
    def _nearest(before: _Before, mine: _Call, tries: int = 3) -> list[str]:
        """Names of the entries nearest to the call (fewest argument hashes not shared,
        the same code first), the nearest first."""
        if not before.calls:
            return []
        shared = Counter()
        for h in mine.hashes:
            shared.update(before.postings.get(h, ()))
        if len(shared) < tries:  # entries sharing no argument: as near as each other
            shared.update({i: 0 for i in range(min(tries, len(before.calls)))})

        def rank(i):
            call = before.calls[i][1]
            return (len(mine.hashes) + len(call.hashes) - 2 * shared[i], call.code != mine.code)

        nearest = heapq.nsmallest(tries, shared, key=rank)
        return [before.calls[i][0] for i in nearest]
