"""Quickstart: a small model ensemble on a local Dask cluster, recorded by scalable-otel.

Runs a set of simulations (a few of which fail, as real ones do), summarizes
them with a Dask array, then prints where the run directory is and its report.
Run it twice: the second run's simulations come from the cache.

    python examples/quickstart.py --workers 2 --scenarios 40
"""

import argparse
import time

import dask.array as da

from scalable_otel import ScalableSession, cacheable
from scalable_otel.analysis import format_report, load_run, report

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenarios", type=int, default=40)
    options = parser.parse_args()

    with ScalableSession(
        target="local", n_workers=options.workers, threads_per_worker=1, project="quickstart"
    ) as session:
        futures = session.map(run_simulation, range(options.scenarios))
        results = session.gather(futures, errors="skip")
        outcome = session.gather(session.submit(summarize, results))
        field = da.random.default_rng(42).random((2_000, 2_000), chunks=(500, 500))
        anomaly = session.client.compute(field.mean()).result()
    print(
        f"{outcome['n']} of {options.scenarios} scenarios ran; mean {outcome['mean']:.2f}; "
        f"field anomaly {anomaly:.4f}"
    )
    print(f"Run directory: {session.run_dir}")
    if session.run_dir is not None:
        print(format_report(report(load_run(session.run_dir))))


if __name__ == "__main__":
    main()
