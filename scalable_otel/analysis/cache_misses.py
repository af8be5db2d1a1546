"""Why a run's cache lookups missed: misses by reason, and the arguments that differed.

Each miss of the SDK's `@cacheable` says why on its cache_lookup line (`miss_reason`;
`miss_arguments` for `arguments`). A miss without a reason, or with one this version
does not know, counts as `unknown`: runs written before the field existed, the Scalable
tool's cache (which says only `corrupt`), and a lookup that failed before its key was
known. The counts add up to the report's misses (lookups that are not hits).
"""

from __future__ import annotations

from .. import semconv as sc
from ..rundir import CACHE

_KNOWN = ", ".join(f"'{reason}'" for reason in sc.CACHE_MISS_REASONS)
_MISSES = f"event = '{sc.CACHE_LOOKUP}' AND result IS DISTINCT FROM 'hit'"

MISS_FIGURES = f"""
SELECT CASE WHEN miss_reason IN ({_KNOWN}) THEN miss_reason
            ELSE '{sc.CACHE_MISS_UNKNOWN}' END AS reason, count(*)
FROM {{t}} WHERE {_MISSES} GROUP BY reason
"""

ARGUMENT_FIGURES = f"""
SELECT name, count(*) FROM (
    SELECT unnest(miss_arguments) AS name FROM {{t}}
    WHERE {_MISSES} AND miss_reason = '{sc.CACHE_MISS_ARGUMENTS}'
) WHERE name IS NOT NULL GROUP BY name ORDER BY count(*) DESC, name
"""

ORDER = (*sc.CACHE_MISS_REASONS, sc.CACHE_MISS_UNKNOWN)


def miss_reasons(run) -> dict:
    """The run's cache misses by reason, and for `arguments` the argument names.

    `reasons` holds only reasons that occurred, in `semconv.CACHE_MISS_REASONS` order
    (`unknown` last); `arguments` counts each argument name over the `arguments` misses
    (a miss naming two arguments counts for both), most frequent first.

    >>> miss_reasons(load_run(last=True))                           # doctest: +SKIP
    {'reasons': {'first': 8, 'arguments': 3, 'code': 1}, 'arguments': {'years': 3}}
    """
    source = run.file(CACHE, ["event", "result", "miss_reason", "miss_arguments"])
    try:
        counts = dict(source.query(MISS_FIGURES))
        arguments = dict(source.query(ARGUMENT_FIGURES))
    finally:
        source.close()
    return {
        "reasons": {reason: counts[reason] for reason in ORDER if counts.get(reason)},
        "arguments": arguments,
    }


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
