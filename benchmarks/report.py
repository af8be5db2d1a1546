"""How fast `scalable report` (text, --compare, --html) reads a run of a million task events.

Makes two run directories of 1,000,000 task events each (a third submitted, a third
started, a third completed or failed, with the fields and sizes the SDK writes), then
times each command as a fresh process, with its peak memory, beside DuckDB's
`read_json` aggregation of the same file in the same run (the baseline), and
optionally `pandas.read_json`.

Timed, each as a fresh process:
- report on the JSONL alone (what a crashed or still-running run reads),
- writing the columnar copy (what a session's close adds for a run this size),
- report and report --compare on closed runs (reading the columnar copy),
- trends and advise over both runs,
- with --html, report --html on the JSONL alone and on the closed run.

    python benchmarks/report.py               # 1,000,000 events per run
    python benchmarks/report.py --events 200000 --with-pandas
    python benchmarks/report.py --html
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from scalable_otel.rundir import iso, write_json_atomic

TASK_NAMES = ["run_simulation", "postprocess", "load_inputs", "aggregate"]


def make_run(root: Path, run_id: str, events: int, slower: float, seed: int) -> Path:
    """A closed run directory with `events` task events and its workers and cache lines."""
    rng = random.Random(seed)
    path = root / run_id
    path.mkdir(parents=True)
    start = 1779249120.0
    trace = "41e447ba3103110f984cbe4749c7d75a"
    workers = [f"tcp://127.0.0.1:{40000 + i}" for i in range(8)]
    n_tasks = events // 3
    end = start
    with (
        open(path / "tasks.jsonl", "wb") as tasks,
        open(path / "cache.jsonl", "wb") as cache,
        open(path / "resources.jsonl", "wb") as resources,
    ):
        for i in range(n_tasks):
            task = TASK_NAMES[i % len(TASK_NAMES)]
            key = f"{task}-{i:032x}"
            base = {
                "schema_version": 1,
                "run_id": run_id,
                "task": task,
                "key": key,
                "trace_id": trace,
                "span_id": f"{i:016x}",
            }
            submitted = start + i * 0.002
            duration = rng.lognormvariate(0.0, 0.5) * slower
            worker = workers[i % len(workers)]
            end = max(end, submitted + 0.01 + duration)
            lines = [
                {"timestamp": iso(submitted), "event": "task_submitted", **base,
                 "args": {"scenario_id": i}, "dependencies": []},
                {"timestamp": iso(submitted + 0.01), "event": "task_started", **base,
                 "worker": worker, "attempt": 1, "queue_wait_s": 0.01},
                {"timestamp": iso(submitted + 0.01 + duration),
                 "event": "task_failed" if i % 97 == 0 else "task_completed", **base,
                 "args": {"scenario_id": i}, "worker": worker, "attempt": 1,
                 "duration_s": round(duration, 6), "queue_wait_s": 0.01,
                 "submitted_at": iso(submitted), "nbytes": 24, "result_type": "float"},
            ]  # fmt: skip
            tasks.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))
            resources.write(orjson.dumps({
                "schema_version": 1, "timestamp": iso(submitted + 0.01 + duration),
                "event": "task_resources", "run_id": run_id, "task": task, "key": key,
                "worker": worker, "worker_name": "0", "cpu_seconds": round(duration * 0.9, 6),
                "cpus_used": 0.9, "peak_memory_bytes": rng.randrange(200 << 20, 900 << 20),
                "wall_s": round(duration, 6), "cpu_shared": False, "trace_id": trace,
                "span_id": base["span_id"],
            }) + b"\n")  # fmt: skip
            if task == "run_simulation":
                hit = rng.random() < 0.3
                cache.write(orjson.dumps({
                    "schema_version": 1, "timestamp": iso(submitted + 0.01),
                    "event": "cache_lookup", "run_id": run_id, "function": task,
                    "result": "hit" if hit else "miss", "lookup_s": 0.0004,
                    "saved_s": duration if hit else 0.0, "key": key, "task": task,
                }) + b"\n")  # fmt: skip
    with open(path / "workers.jsonl", "wb") as f:
        for i, worker in enumerate(workers):
            span = {"worker": worker, "worker_name": str(i), "nthreads": 4,
                    "memory_limit": 4 << 30, "span_id": f"{i:016x}"}  # fmt: skip
            f.write(orjson.dumps({"timestamp": iso(start), "event": "worker_added", **span}))
            f.write(b"\n")
            f.write(orjson.dumps({"timestamp": iso(end), "event": "worker_removed", **span}))
            f.write(b"\n")
    (path / "failures.jsonl").touch()
    completed = n_tasks - len(range(0, n_tasks, 97))
    write_json_atomic(
        path / "run.json",
        {
            "schema_version": 1, "run_id": run_id, "project": "bench", "status": "completed",
            "start_time": iso(start), "end_time": iso(end), "duration_s": end - start,
            "target": "local", "provider": "local", "tasks_submitted": n_tasks,
            "tasks_completed": completed, "tasks_failed": n_tasks - completed,
        },
    )  # fmt: skip
    return path


def measure(argv: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one command run as a
    fresh process. On a shared machine the CPU seconds are the steadier figure."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def best_of(rounds: int, argv: list[str]) -> tuple[float, float, float]:
    results = [measure(argv) for _ in range(rounds)]
    medians = (statistics.median(r[i] for r in results) for i in (0, 1))
    return *medians, max(r[2] for r in results)


DUCKDB = """
import duckdb, sys
duckdb.sql(
    "select event, count(*), avg(duration_s), max(duration_s), sum(duration_s) "
    f"from read_json('{sys.argv[1]}', format='newline_delimited') group by event"
).fetchall()
"""

PANDAS = """
import pandas as pd, sys
tasks = pd.read_json(sys.argv[1], lines=True)
tasks.groupby("event")["duration_s"].agg(["count", "mean", "max", "sum"])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="Median of N runs of each.")
    parser.add_argument("--with-pandas", action="store_true", help="Also time pandas.read_json.")
    parser.add_argument("--keep", action="store_true", help="Keep the generated runs.")
    parser.add_argument(
        "--html", action="store_true", help="Also time report --html (the page of a run)."
    )
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="scalable-report-bench-")) / "runs"
    try:
        started = time.perf_counter()
        a = make_run(root, "run-20260520T035200Z-bench-a1b2c3d4", options.events, 1.0, 1)
        b = make_run(root, "run-20260520T045200Z-bench-b1b2c3d4", options.events, 0.9, 2)
        size = (a / "tasks.jsonl").stat().st_size / 1e6
        print(
            f"{options.events:,} task events per run, tasks.jsonl {size:.0f} MB "
            f"(made in {time.perf_counter() - started:.0f} s); median of {options.rounds}"
        )
        cli = [sys.executable, "-m", "scalable_otel.cli"]
        rows = []
        try:
            import duckdb  # noqa: F401

            baseline = best_of(
                options.rounds, [sys.executable, "-c", DUCKDB, str(a / "tasks.jsonl")]
            )
            rows.append(("duckdb read_json aggregation (baseline)", *baseline))
        except ImportError:
            baseline = None
            print("duckdb is not installed (pip install duckdb): no baseline")
        if options.with_pandas:
            pandas = best_of(1, [sys.executable, "-c", PANDAS, str(a / "tasks.jsonl")])
            rows.append(("pandas.read_json aggregation", *pandas))
        report = cli + ["report", "--runs-dir", str(root)]
        rows.append(
            (
                "report, JSONL only (crashed/running run)",
                *best_of(options.rounds, report + [a.name]),
            )
        )
        page = root.parent / "report.html"
        html = report + [a.name, "--html", str(page)]
        if options.html:
            rows.append(("report --html, JSONL only", *best_of(options.rounds, html)))
        copy = [
            sys.executable, "-c", "import sys; from scalable_otel.exporters.columnar import "
            "write_columnar_copy as w; w(sys.argv[1])",
        ]  # fmt: skip
        rows.append(("columnar copy of one run (at its close)", *measure(copy + [str(a)])))
        measure(copy + [str(b)])
        rows.append(("report (closed run)", *best_of(options.rounds, report + [a.name])))
        compare = report + ["--compare", a.name, b.name]
        rows.append(("report --compare (closed runs)", *best_of(options.rounds, compare)))
        history = ["--runs-dir", str(root)]
        trends = cli + ["trends"] + history
        rows.append(("trends (both closed runs)", *best_of(options.rounds, trends)))
        advise = cli + ["advise", "--task", "run_simulation"] + history
        rows.append(("advise --task (both closed runs)", *best_of(options.rounds, advise)))
        if options.html:
            rows.append(("report --html (closed run)", *best_of(options.rounds, html)))

        print(f"\n{'':<44}{'seconds':>9}{'CPU s':>9}{'peak MB':>9}{'time vs duckdb':>16}")
        for label, seconds, cpu, peak in rows:
            ratio = f"{seconds / baseline[0]:.2f}" if baseline else "-"
            print(f"{label:<44}{seconds:>9.2f}{cpu:>9.2f}{peak:>9.0f}{ratio:>16}")
        if options.html:
            print(f"\nHTML page of one run: {page.stat().st_size / 1e6:.1f} MB")
    finally:
        if options.keep:
            print(f"\nruns kept in {root}")
        else:
            shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
