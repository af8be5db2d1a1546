"""`lookup_s` of `@cacheable` with N entries of one function stored, in one process.

Three phases, each a "run" (a sink receiving the lookups, as a session sets one):
a first run of N calls (N misses), a second run of the same calls (N hits), and a third
with another value of one argument (N misses, each finding its reason among the N
entries stored before it). Prints median and p99 `lookup_s` of each, and the lookup_s
of the third run's first miss (which lists the function's index folder).

    python benchmarks/cache_lookup.py            # N = 10,000
    python benchmarks/cache_lookup.py 3000
"""

import statistics
import sys
import tempfile
from collections import Counter

from scalable_otel import cache
from scalable_otel.cache import cacheable


def main(n: int) -> None:
    import dask.base

    dask.base.tokenize(1)  # import dask before timing
    with tempfile.TemporaryDirectory() as root:

        @cacheable(cache_dir=root)
        def model(scenario, years=10):
            return scenario * years

        def run(calls):
            seen = []
            cache.set_driver_sink(seen.append, None)
            try:
                for args, kwargs in calls:
                    model(*args, **kwargs)
            finally:
                cache.set_driver_sink(None, None)
            return seen

        def line(label, seen):
            xs = [s["lookup_s"] * 1e6 for s in seen]
            p99 = statistics.quantiles(xs, n=100)[98]
            reasons = dict(Counter(s.get("miss_reason") or s["result"] for s in seen))
            print(
                f"{label:<22} median {statistics.median(xs):6.0f} us  p99 {p99:7.0f} us  {reasons}"
            )

        line("first run (misses)", run([((i,), {}) for i in range(n)]))
        line("second run (hits)", run([((i,), {}) for i in range(n)]))
        later = run([((i,), {"years": 20}) for i in range(n)])
        line("years=20 (misses)", later)
        print(f"its first miss (lists {n:,} index files): {later[0]['lookup_s'] * 1e3:.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
