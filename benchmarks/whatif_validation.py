"""Validation of the what-if replay: one workflow run with 1, 2 and 4 workers on real
LocalClusters, then each run predicted from each other run (6 predictions), and each run
replayed as it was.

The workflow is an ensemble: `--members` simulations of varied durations (seeded, so every
run has the same), in groups of `--group`, each group reduced by a `summarize` task, and the
summaries combined by one `combine` task; everything is submitted at once. Tasks sleep by
default, so that a 2-core machine does not distort 4 workers; `--cpu` makes them burn CPU
instead, to show what the host's cores do to a prediction.

The runs take /tmp/scalable-bench.lock (other benchmarks on this machine take it too).

    python benchmarks/whatif_validation.py                 # about 2 minutes
    python benchmarks/whatif_validation.py --members 12 --cpu
"""

from __future__ import annotations

import argparse
import fcntl
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scalable_otel import ScalableSession  # noqa: E402
from scalable_otel.analysis import load_run  # noqa: E402
from scalable_otel.analysis.whatif import whatif  # noqa: E402

LOCK = "/tmp/scalable-bench.lock"


def calibrate() -> float:
    start = time.perf_counter()
    for _ in range(2_000_000):
        pass
    return 2_000_000 / (time.perf_counter() - start)


def _work(seconds: float, cpu: float) -> None:
    if not cpu:
        time.sleep(seconds)
        return
    for _ in range(int(seconds * cpu)):  # a fixed amount of work: a shared core takes longer
        pass


def simulate(member: int, seconds: float, cpu: float = 0.0) -> float:
    """One ensemble member."""
    _work(seconds, cpu)
    return member * seconds


def summarize(*values: float, seconds: float = 0.5, cpu: float = 0.0) -> float:
    """One group's reduction."""
    _work(seconds, cpu)
    return sum(values)


def combine(*values: float, seconds: float = 0.3, cpu: float = 0.0) -> float:
    _work(seconds, cpu)
    return sum(values)


def durations(members: int, seed: int = 14) -> list[float]:
    """The members' durations: 0.3 to 2.5 s, the same in every run."""
    rng = random.Random(seed)
    return [round(rng.uniform(0.3, 2.5), 2) for _ in range(members)]


def run_workflow(runs_dir: Path, workers: int, members: int, group: int, cpu: float = 0.0) -> Path:
    """One run of the ensemble with `workers` workers of one thread; its run directory.
    `cpu`: 0 to sleep, else the loop iterations per second of work to burn instead."""
    with ScalableSession(
        "local",
        n_workers=workers,
        threads_per_worker=1,
        project=f"whatif-{workers}w",
        runs_dir=runs_dir,
    ) as session:
        sims = [
            session.submit(simulate, i, s, cpu, key=f"simulate-{i}")
            for i, s in enumerate(durations(members))
        ]
        sums = [
            session.submit(summarize, *sims[g : g + group], cpu=cpu, key=f"summarize-{g // group}")
            for g in range(0, members, group)
        ]
        total = session.submit(combine, *sums, cpu=cpu, key="combine")
        total.result()
        path = session.run_dir
    return Path(path)


def validate(runs: dict[int, Path]) -> list[dict]:
    """Each run predicted from each run (itself included: the replay as it was): the whole
    duration, and the task phase alone (first submission to last task end), which leaves
    out the session's start and close, taken as recorded from the run predicted from."""
    loaded = {n: load_run(path) for n, path in runs.items()}
    own = {n: whatif(run) for n, run in loaded.items()}
    rows = []
    for source, run in loaded.items():
        for target, other in own.items():
            result = whatif(run, workers=target)
            real = other.real_duration_s
            phase = real - other.before_s - other.after_s
            rows.append(
                {
                    "from": source,
                    "to": target,
                    "predicted_s": result.predicted_duration_s,
                    "real_s": real,
                    "error_percent": round(100 * (result.predicted_duration_s - real) / real, 1),
                    "predicted_tasks_s": result.makespan_s,
                    "real_tasks_s": round(phase, 3),
                    "tasks_error_percent": round(100 * (result.makespan_s - phase) / phase, 1),
                    "start_s": (other.before_s, result.before_s),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| from run | predicts | duration: predicted | real | error "
        "| task phase: predicted | real | error |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        what = "itself (replay)" if row["from"] == row["to"] else f"{row['to']} workers"
        lines.append(
            f"| {row['from']} worker{'s' if row['from'] != 1 else ''} | {what} | "
            f"{row['predicted_s']:.1f}s | {row['real_s']:.1f}s | {row['error_percent']:+.1f}% | "
            f"{row['predicted_tasks_s']:.1f}s | {row['real_tasks_s']:.1f}s | "
            f"{row['tasks_error_percent']:+.1f}% |"
        )
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    cross = [r for r in rows if r["from"] != r["to"]]
    whole = [abs(r["error_percent"]) for r in cross]
    tasks = [abs(r["tasks_error_percent"]) for r in cross]
    starts = ", ".join(
        f"{r['to']} workers {r['start_s'][0]:.1f}s" for r in rows if r["from"] == r["to"]
    )
    return (
        f"cross-predictions: duration |error| worst {max(whole):.1f}%, mean "
        f"{sum(whole) / len(whole):.1f}%; task phase |error| worst {max(tasks):.1f}%, mean "
        f"{sum(tasks) / len(tasks):.1f}%\nsession start to first submission: {starts}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=36)
    parser.add_argument("--group", type=int, default=9)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cpu", action="store_true", help="tasks burn CPU instead of sleeping")
    parser.add_argument("--runs-dir", type=Path, help="keep the runs here (default: a temp dir)")
    parser.add_argument(
        "--validate-only", action="store_true", help="predict the runs already in --runs-dir"
    )
    args = parser.parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="whatif-validation-"))
    if args.validate_only:
        runs = {}
        for path in sorted(runs_dir.iterdir()):
            runs[whatif(load_run(path)).real_workers] = path
    else:
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            speed = calibrate() if args.cpu else 0.0
            runs = {
                n: run_workflow(runs_dir, n, args.members, args.group, speed) for n in args.workers
            }
    rows = validate(runs)
    print(f"runs in {runs_dir}")
    print(table(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
