"""Why a cache lookup missed: the index of the entries each cached function stored.

Beside each entry, the cache (`scalable_otel.cache`) writes one small index file in a
folder of the function's own::

    <cache root>/index/<function folder>/<arguments>.<key>.<code>.<created>.<hashes>.idx

Its name says, in short hashes, which call stored the entry and when: the call's
arguments as a whole, the entry's key, the function's code fingerprint, the time in
milliseconds (hex), and one 8-hex hash per argument (its name and Dask token; the call
bound to the function's signature, defaults applied; the first `MAX_NAMED` arguments).
Its content, signed like an entry, says it in full: key, code fingerprint and a token
per argument. One file per save, written whole under a temporary name and renamed:
processes storing at once never rewrite a shared file (an entry stored again, after it
was evicted, say, gets a second index file).

On a miss whose entry file is absent, the index tells why:

- an index file of this very key: `evicted`, the entry was stored and its file is gone;
- an entry of the same arguments and other code: `code`;
- no entry stored before the run began: `first` (entries stored since, by earlier calls
  of the same run, are not what the call could have found: a sweep's first run is all
  `first`);
- otherwise `arguments`, naming the arguments that differ from the nearest entry stored
  before the run (the fewest differing arguments, an entry of the same code preferred).

A process lists the function's folder once per run, at its first miss (what was stored
before the run does not change while it goes on); each miss then costs a look-up in
memory and one read of the index file its reason comes from, verified before it is
believed (a file that fails verification is passed over: never a reason from bytes the
cache did not write). Limits: an entry stored and evicted in the same run after that
listing is not seen (its miss says `first` or `arguments`); entries stored before this
index existed have no index file (`first`); a folder's first `MAX_LISTED` names are read,
the rest unseen. The nearest entry is found by key when one is a single argument apart
(calls of up to `MAX_ONE_APART` arguments); otherwise among the first `MAX_COMPARED`
entries listed, so `miss_arguments` may then name more arguments than the nearest of
all would.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple

import orjson

from . import semconv as sc

INDEX_DIR = "index"
#: Index files of one function a process lists per run, at most.
MAX_LISTED = 50_000
#: Arguments hashed into an index file's name (a name is at most 255 bytes).
MAX_NAMED = 20
#: Calls of up to this many arguments find an entry one argument apart by key.
MAX_ONE_APART = 8
#: Entries compared one by one when none is one argument apart.
MAX_COMPARED = 2_000
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
    created: float  # Unix seconds
    hashes: str  # the arguments' hashes, `_HASH` characters each


def _name(key: str, code: str, tokens: dict[str, str], created: float) -> str:
    arguments = _short(orjson.dumps(tokens, option=orjson.OPT_SORT_KEYS).decode(), 16)
    hashes = "".join(_short(f"{n}\0{t}", _HASH) for n, t in list(tokens.items())[:MAX_NAMED])
    return f"{arguments}.{key[:16]}.{code[:8]}.{int(created * 1000):x}.{hashes}{_SUFFIX}"


def _parse(name: str) -> _Call | None:
    parts = name[: -len(_SUFFIX)].split(".")
    if len(parts) != 5 or len(parts[4]) % _HASH:
        return None
    try:
        created = int(parts[3], 16) / 1000
    except ValueError:
        return None
    return _Call(parts[0], parts[1], parts[2], created, parts[4])


def _chunks(hashes: str) -> list[str]:
    return [hashes[i : i + _HASH] for i in range(0, len(hashes), _HASH)]


def _all_but_one(hashes: str) -> list[str]:
    """Keys of the calls that differ from this one in one argument, the j-th: `j:` and
    the other hashes (for calls of up to `MAX_ONE_APART` arguments)."""
    n = len(hashes) // _HASH
    if n > MAX_ONE_APART:
        return []
    return [f"{j}:{hashes[: j * _HASH]}{hashes[(j + 1) * _HASH :]}" for j in range(n)]


class _Listing(NamedTuple):
    """A function's index files as a run's first miss in this process found them."""

    keys: dict  # short key -> file name, of every entry listed
    calls: list  # [(file name, _Call)] of the entries stored before the run began
    by_arguments: dict  # arguments hash -> indices into calls
    all_but_one: dict  # the argument hashes but the j-th, keyed `j:rest` -> indices


# (function folder, run start) -> _Listing: made at a run's first miss of a function
_listings: OrderedDict = OrderedDict()
_listings_lock = threading.Lock()
_LISTINGS_KEPT = 64


def _listing(folder: Path, since: float) -> _Listing:
    with _listings_lock:
        known = _listings.get((folder, since))
        if known is not None:
            _listings.move_to_end((folder, since))
            return known
    keys, calls, by_arguments, all_but_one = {}, [], {}, {}
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    before = int(since * 1000)
    # inlined `_parse`: a folder of 100,000 files is read at one miss
    for name in names[:MAX_LISTED]:
        parts = name[: -len(_SUFFIX)].split(".")
        if len(parts) != 5 or not name.endswith(_SUFFIX):
            continue
        arguments, short_key, code, created, hashes = parts
        try:
            created = int(created, 16)
        except ValueError:
            continue
        keys[short_key] = name
        if created > before:  # stored since the run began (in its first millisecond: before)
            continue
        i = len(calls)
        calls.append((name, _Call(arguments, short_key, code, created / 1000, hashes)))
        by_arguments.setdefault(arguments, []).append(i)
        for one in _all_but_one(hashes):
            all_but_one.setdefault(one, []).append(i)
    known = _Listing(keys, calls, by_arguments, all_but_one)
    with _listings_lock:
        _listings[(folder, since)] = known
        while len(_listings) > _LISTINGS_KEPT:
            _listings.popitem(last=False)
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
        """Record that `key` was stored now by `code`, for a call of these arguments."""
        data = orjson.dumps({"key": key, "code": code, "args": tokens})
        self.store.write_signed(self.folder / _name(key, code, tokens, time.time()), data)

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
        listing = _listing(self.folder, since)
        own = listing.keys.get(key[:16])
        if own is not None:
            record = self._read(own)
            if record is not None and record.get("key") == key:
                return sc.CACHE_MISS_EVICTED, None
        mine = _parse(_name(key, code, tokens, since))
        for i in listing.by_arguments.get(mine.arguments, ()):
            name, call = listing.calls[i]
            if call.code != mine.code:
                record = self._read(name)
                if record is not None and record.get("code") != code:
                    return sc.CACHE_MISS_CODE, None
        for name in self._nearest(listing, mine):
            record = self._read(name)
            if record is not None:
                return sc.CACHE_MISS_ARGUMENTS, differing(tokens, record["args"])
        return sc.CACHE_MISS_FIRST, None

    @staticmethod
    def _nearest(listing: _Listing, mine: _Call, tries: int = 3) -> list[str]:
        """Names of up to `tries` entries nearest to the call, the nearest first: of the
        same arguments (passed another way), else one argument apart (found by key), else
        the fewest argument hashes not shared among the first `MAX_COMPARED`; entries of
        the same code before others at each distance."""

        def first_same_code(indices) -> list[str]:
            ordered = sorted(indices, key=lambda i: listing.calls[i][1].code != mine.code)
            return [listing.calls[i][0] for i in ordered[:tries]]

        same = [
            i
            for i in listing.by_arguments.get(mine.arguments, ())
            if listing.calls[i][1].code == mine.code
        ]
        if same:
            return first_same_code(same)
        apart = [i for one in _all_but_one(mine.hashes) for i in listing.all_but_one.get(one, ())]
        if apart:
            return first_same_code(apart)
        own = set(_chunks(mine.hashes))

        def rank(i):
            call = listing.calls[i][1]
            return (len(own.symmetric_difference(_chunks(call.hashes))), call.code != mine.code)

        nearest = heapq.nsmallest(tries, range(min(len(listing.calls), MAX_COMPARED)), key=rank)
        return [listing.calls[i][0] for i in nearest]
