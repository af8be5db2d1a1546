"""Why a run's cache lookups missed: misses by reason, and the arguments that differed.

Each miss of the SDK's `@cacheable` says why on its cache_lookup line (`miss_reason`;
`miss_arguments` for `arguments`). A miss without a reason, or with one this version
does not know, counts as `unknown`: runs written before the field existed, the Scalable
tool's cache (which says only `corrupt`), and a lookup that failed before its key was
known. The counts add up to the report's misses (lookups that are not hits).

The report counts them in the same scan of cache.jsonl as its lookups and hits
(`REASON_SQL` beside its own figures, read by `from_figures`); `miss_reasons` is the same
for a caller that wants only these.
"""

from __future__ import annotations

from collections import Counter

from .. import semconv as sc
from ..rundir import CACHE

#: cache.jsonl fields the figures read, beyond `event` and `result`.
FIELDS = ["miss_reason", "miss_arguments"]

_MISSES = f"event = '{sc.CACHE_LOOKUP}' AND result IS DISTINCT FROM 'hit'"

#: Columns for a query over cache.jsonl: a count per known reason, then every argument
#: name the `arguments` misses named.
REASON_SQL = ", ".join(
    [
        *(
            f"count(*) FILTER (WHERE {_MISSES} AND miss_reason = '{reason}')"
            for reason in sc.CACHE_MISS_REASONS
        ),
        f"flatten(list(miss_arguments) FILTER "
        f"(WHERE {_MISSES} AND miss_reason = '{sc.CACHE_MISS_ARGUMENTS}'))",
    ]
)


def from_figures(misses: int, columns: tuple) -> dict:
    """The reasons of `misses` misses from the `REASON_SQL` columns of a query (see
    `miss_reasons`)."""
    counts = dict(zip(sc.CACHE_MISS_REASONS, columns[: len(sc.CACHE_MISS_REASONS)]))
    counts[sc.CACHE_MISS_UNKNOWN] = misses - sum(counts.values())
    names = Counter(n for n in columns[len(sc.CACHE_MISS_REASONS)] or () if n is not None)
    return {
        "reasons": {reason: n for reason, n in counts.items() if n > 0},
        "arguments": dict(sorted(names.items(), key=lambda item: (-item[1], item[0]))),
    }


def miss_reasons(run) -> dict:
    """The run's cache misses by reason, and for `arguments` the argument names.

    `reasons` holds only reasons that occurred, in `semconv.CACHE_MISS_REASONS` order
    (`unknown` last); `arguments` counts each argument name over the `arguments` misses
    (a miss naming two arguments counts for both), most frequent first.

    >>> miss_reasons(load_run(last=True))                           # doctest: +SKIP
    {'reasons': {'first': 8, 'arguments': 3, 'code': 1}, 'arguments': {'years': 3}}
    """
    source = run.file(CACHE, ["event", "result", *FIELDS])
    try:
        row = source.query(f"SELECT count(*) FILTER (WHERE {_MISSES}), {REASON_SQL} FROM {{t}}")
    finally:
        source.close()
    return from_figures(row[0][0], row[0][1:])


def format_miss_reasons(reasons: dict, arguments: dict, max_names: int = 5) -> str:
    """The reasons as the report prints them: `first 8, arguments 3: years/scenario, code 1`
    (the names most frequent first)."""
    parts = []
    for reason, count in reasons.items():
        text = f"{reason} {count}"
        if reason == sc.CACHE_MISS_ARGUMENTS and arguments:
            names = list(arguments)
            text += ": " + "/".join(names[:max_names])
            if len(names) > max_names:
                text += f" +{len(names) - max_names} more"
        parts.append(text)
    return ", ".join(parts)
