"""Quickstart: a small model ensemble on a local Dask cluster, recorded by scalable-otel.

Runs a set of simulations (a few of which fail, as real ones do), summarizes
them with a Dask array, then prints where the run directory is and its report.
Run it twice: the second run's simulations come from the cache.

    python examples/quickstart.py --workers 2 --scenarios 40

The workflow itself, `run_simulation`, `summarize` and the session that runs them, is
scalable_otel/demo.py: it ships with the package so that `scalable demo` runs the same
code from any install. Read it there, or copy it as the start of your own workflow.
"""

from scalable_otel.demo import main

if __name__ == "__main__":
    main()
