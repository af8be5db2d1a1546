"""What recording a run adds to each Dask client: a notebook or a test suite makes many.

    python benchmarks/client_cost.py                 # 5 rounds of 10 clients an arm
    python benchmarks/client_cost.py --clients 20 --rounds 3
    python benchmarks/client_cost.py --profile       # where the instrumented client's time goes

One `LocalCluster` (2 worker processes, 1 thread each) serves every client. Each client
connects, runs one small graph (`map` of 4 no-op tasks and `gather`), and closes. Arms,
their order alternating from round to round:

- `plain`: `Client(cluster)`;
- `instrumented`: the same with `DaskInstrumentor().instrument()` active, so each client
  records a run (its own run directory, started at connection, finished at close).

Printed per arm: the median over rounds of a client's connect, work and close times;
then what recording adds per client (instrumented minus plain, same round: connect and
close separately, and in all) as a median and min..max over rounds.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import tempfile
import time


def noop(x):
    return x


def one_client(cluster) -> tuple[float, float, float]:
    """(connect, work, close) seconds of one client."""
    from distributed import Client

    t0 = time.perf_counter()
    client = Client(cluster)
    t1 = time.perf_counter()
    client.gather(client.map(noop, range(4), pure=False))
    t2 = time.perf_counter()
    client.close()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def arm(cluster, clients: int, instrumented: bool, runs_dir: str) -> list[tuple]:
    from scalable_otel.instrumentor import DaskInstrumentor

    instrumentor = DaskInstrumentor()
    if instrumented:
        instrumentor.instrument(runs_dir=runs_dir, project="client-cost", progress=False)
    try:
        return [one_client(cluster) for _ in range(clients)]
    finally:
        if instrumented:
            instrumentor.uninstrument()


def median_parts(times: list[tuple]) -> tuple[float, float, float]:
    return tuple(statistics.median(t[i] for t in times) for i in range(3))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile one instrumented arm")
    args = parser.parse_args(argv)
    from distributed import LocalCluster

    runs_dir = tempfile.mkdtemp(prefix="client-cost-")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        arm(cluster, 2, False, runs_dir)  # warm both paths: imports, connections
        arm(cluster, 2, True, runs_dir)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            arm(cluster, args.clients, True, runs_dir)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue())
            return 0
        rounds = []
        for number in range(args.rounds):
            order = (False, True) if number % 2 == 0 else (True, False)
            result = {kind: arm(cluster, args.clients, kind, runs_dir) for kind in order}
            rounds.append(result)
            added = [a - p for a, p in zip(median_parts(result[True]), median_parts(result[False]))]
            print(
                f"round {number + 1}: adds {added[0] * 1e3:.0f} ms connect, "
                f"{added[2] * 1e3:.0f} ms close, {sum(added) * 1e3:.0f} ms a client"
            )
    print(f"{args.clients} clients an arm, {args.rounds} rounds; median of the rounds' medians")
    for kind, name in ((False, "plain"), (True, "instrumented")):
        parts = [median_parts(r[kind]) for r in rounds]
        connect, work, close = (statistics.median(p[i] for p in parts) for i in range(3))
        print(
            f"  {name:>12}: connect {connect * 1e3:6.0f} ms, work {work * 1e3:5.0f} ms, "
            f"close {close * 1e3:6.0f} ms"
        )
    for label, index in (("connect", [0]), ("close", [2]), ("in all", [0, 1, 2])):
        values = []
        for r in rounds:
            inst, plain = median_parts(r[True]), median_parts(r[False])
            values.append(sum(inst[i] - plain[i] for i in index))
        print(
            f"  added per client, {label}: {statistics.median(values) * 1e3:.0f} ms "
            f"({min(values) * 1e3:.0f}..{max(values) * 1e3:.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
