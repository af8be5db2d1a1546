"""The quickstart workflow: a small model ensemble on a local Dask cluster, recorded by
scalable-otel. `scalable demo` runs it, and so does `python examples/quickstart.py`.

It runs a set of simulations (a few of which fail, as real ones do), summarizes them
with a Dask array, then prints where the run directory is and its report. Run it
twice: the second run's simulations come from the cache.

The workflow lives in the package, not in examples/, so that `scalable demo` works from
any install (a wheel has no examples/ folder), and so that the worker processes, which
the local cluster starts fresh, import `run_simulation` by its module name.

Example:
    python -m scalable_otel.demo --workers 2 --scenarios 40
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .cache import cacheable

BROKEN_SCENARIOS = {7, 23}


@cacheable
def run_simulation(scenario_id: int, years: int = 20) -> float:
    """A stand-in for a model run: some CPU work, a little sleeping, a result."""
    if scenario_id in BROKEN_SCENARIOS:
        raise RuntimeError(f"scenario {scenario_id}: solver did not converge")
    total = 0.0
    for year in range(years * 2_000):
        total += (scenario_id * year) % 7
    time.sleep(0.02 + 0.01 * (scenario_id % 5))
    return total / years


def summarize(results: list) -> dict:
    """Post-processing that depends on every successful simulation."""
    values = [r for r in results if r is not None]
    return {"n": len(values), "mean": sum(values) / max(len(values), 1)}


def run_demo(workers: int = 2, scenarios: int = 40) -> Path | None:
    """Run the workflow on `workers` local worker processes, print its outcome and its
    report, and return its run directory (None when telemetry is off)."""
    # Imported here: a worker that unpickles run_simulation needs none of them.
    import dask.array as da

    from .analysis import format_report, load_run, report
    from .session import ScalableSession

    with ScalableSession(
        target="local", n_workers=workers, threads_per_worker=1, project="quickstart"
    ) as session:
        futures = session.map(run_simulation, range(scenarios))
        results = session.gather(futures, errors="skip")
        outcome = session.gather(session.submit(summarize, results))
        field = da.random.default_rng(42).random((2_000, 2_000), chunks=(500, 500))
        anomaly = session.client.compute(field.mean()).result()
    print(
        f"{outcome['n']} of {scenarios} scenarios ran; mean {outcome['mean']:.2f}; "
        f"field anomaly {anomaly:.4f}"
    )
    if session.run_dir is None:
        print("Run directory: none, telemetry was off for this run")
        return None
    print(f"Run directory: {session.run_dir}")
    print(format_report(report(load_run(session.run_dir))))
    return session.run_dir


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def main(argv: list[str] | None = None) -> None:
    """The command line of `python -m scalable_otel.demo` and examples/quickstart.py."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=_positive, default=2, help="local Dask workers")
    parser.add_argument("--scenarios", type=_positive, default=40, help="simulations to run")
    options = parser.parse_args(argv)
    run_demo(options.workers, options.scenarios)


if __name__ == "__main__":
    main()
