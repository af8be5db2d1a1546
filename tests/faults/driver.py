"""Workflows the fault tests run as a separate driver process, to kill, signal or starve.

`python -m tests.faults.driver SCENARIO [options]`, with the repository on PYTHONPATH and
the project directory as the working directory. The driver prints one JSON object a line
on stdout (flushed): `{"run_dir": ...}` once the run is recorded, `{"done": key}` for each
task whose result it has, and `{"results": [...]}` at the end.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import orjson


def say(**fields) -> None:
    sys.stdout.write(orjson.dumps(fields, default=sorted).decode() + "\n")  # sets sorted
    sys.stdout.flush()


def stream(session_or_client, args) -> list:
    """Run `args.tasks` short tasks, saying each one done as its result arrives."""
    from distributed import as_completed

    from tests import workloads
    from tests.faults import tasks

    function, extra = workloads.sleep_then, {}
    if args.marks:  # each task says in this file when it ended
        function, extra = tasks.sleep_and_mark, {"marks": args.marks}
    futures = session_or_client.map(
        function, range(args.tasks), seconds=args.seconds, pure=False, **extra
    )
    results = []
    for future in as_completed(futures):
        results.append(future.result())
        say(done=future.key, t=time.time())
    return sorted(results)


def run_session(args) -> None:
    """A `with ScalableSession` workflow (the way the README shows it)."""
    if args.barrier:
        barrier()
    with session_of(args) as session:
        say(run_dir=str(session.run_dir))
        results = stream(session, args)
    say(results=results, status=session.status)


def session_of(args):
    """The session the driver's arguments ask for (not started)."""
    from scalable_otel import RecordingOptions, ScalableSession

    return ScalableSession(
        target="local",
        n_workers=args.workers,
        threads_per_worker=1,
        project=args.project,
        recording=RecordingOptions(flush_interval=args.flush_interval),
    )


def run_in_phases(args) -> None:
    """`args.tasks` tasks before and as many after a pause, and a pause before the close:
    at each pause the driver says `{"paused": n}` and waits for a line on stdin, for the
    test to inject its fault (fill the disk, free it)."""
    results = []
    with session_of(args) as session:
        say(run_dir=str(session.run_dir))
        for phase in range(2):
            results += stream(session, args)
            say(paused=phase)
            sys.stdin.readline()
    say(results=results, status=session.status)


def run_cache(args) -> None:
    """`args.rounds` rounds of `args.tasks` calls of a cacheable function in this process
    (the session records them; it needs no workers), each round with arguments new to the
    cache; says the results."""
    from scalable_otel import ScalableSession
    from tests.faults import tasks

    function = getattr(tasks, args.function)
    with ScalableSession(target="local", n_workers=0, project=args.project) as session:
        say(run_dir=str(session.run_dir))
        barrier()
        results = [
            [function(round_, i) for i in range(args.tasks)] for round_ in range(args.rounds)
        ]
    say(results=results, status=session.status)


def barrier() -> None:
    """Say ready and wait for the test's go (a line on stdin): drivers started together."""
    say(ready=True)
    sys.stdin.readline()


def run_instrumented(args) -> None:
    """A plain Dask client made after `DaskInstrumentor().instrument()`, never closed:
    its run is finished by the instrumentor when the interpreter exits."""
    from distributed import Client, LocalCluster

    from scalable_otel import DaskInstrumentor, RecordingOptions

    DaskInstrumentor().instrument(recording=RecordingOptions(flush_interval=args.flush_interval))
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    say(client=client.id)
    results = stream(client, args)
    say(results=results)


SCENARIOS = {
    "session": run_session,
    "phases": run_in_phases,
    "instrumented": run_instrumented,
    "cache": run_cache,
}


def main(argv=None) -> None:
    # A driver stands for a program run from a terminal, where Ctrl-C raises
    # KeyboardInterrupt: so it is here too, even when the tests were started in the
    # background of a shell without job control, which leaves SIGINT ignored in every
    # process it starts (and Python then installs no handler of its own).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=list(SCENARIOS))
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--project", default="faults")
    parser.add_argument("--flush-interval", type=float, default=0.2)
    parser.add_argument("--barrier", action="store_true", help="wait for a go to start")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--function", default="square")
    parser.add_argument("--marks", help="a file each task appends `<time> <key>` to as it ends")
    args = parser.parse_args(argv)
    SCENARIOS[args.scenario](args)


if __name__ == "__main__":
    main()
