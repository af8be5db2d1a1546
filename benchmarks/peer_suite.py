"""Dask's own client tests, run once plain and once with every client recorded: which
tests the instrumentation breaks, what it costs, and whether every recorded run agrees
with itself.

    git clone https://github.com/dask/distributed && git -C distributed checkout \\
        "$(python -c 'import distributed; print(distributed.__version__)')"
    python benchmarks/peer_suite.py --source distributed
    python benchmarks/peer_suite.py --source distributed --tests test_client.py -k "map"

The suite is read from the checkout (`--source`), never copied into this project. Its
tests import the installed `distributed` (pytest runs in importlib mode from a folder
outside the checkout), with the checkout's own pytest settings (`pyproject.toml`: warnings
are errors, a 300 s timeout a test), so the checkout should be at the installed version's
tag. The instrumented arm loads `peer_suite_plugin` (beside this file), which records
every client into a temporary runs folder (`--keep DIR` keeps it).

Prints, per arm, the outcome counts and the wall time (and their ratio); the tests that
fail only when instrumented; the runs recorded; and each run whose run.json task counts
disagree with its tasks.jsonl lines (`facts.COUNTS`: run.json field against line event).
Exit code 1 when a test fails only instrumented or a run disagrees with itself.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TESTS = (
    "test_client.py",
    "test_failed_workers.py",
    "test_worker_client.py",
    "test_dask_collections.py",
)


def run_suite(source: Path, tests, extra, workdir: Path, runs_dir: Path | None) -> dict:
    """One pytest run of the suite; {"outcomes": {test id: outcome}, "wall_s": float}."""
    junit = workdir / ("instrumented.xml" if runs_dir else "plain.xml")
    argv = [
        sys.executable,
        "-m",
        "pytest",
        *[str(source / "distributed" / "tests" / name) for name in tests],
        f"--rootdir={source}",
        "-c",
        str(source / "pyproject.toml"),
        "--import-mode=importlib",
        "-p",
        "no:cacheprovider",
        "-q",
        "--color=no",
        "--durations=0",
        f"--junitxml={junit}",
        *extra,
    ]
    env = dict(os.environ)
    for name in [n for n in env if n.startswith(("OTEL_", "SCALABLE_"))]:
        del env[name]  # nothing of a user's exporters, nor a runs folder of theirs
    if runs_dir is not None:
        argv[4:4] = ["-p", "peer_suite_plugin"]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        env["SCALABLE_PEER_RUNS_DIR"] = str(runs_dir)
        env["SCALABLE_PROGRESS"] = "off"
    log = workdir / ("instrumented.log" if runs_dir else "plain.log")
    start = time.perf_counter()
    with open(log, "wb") as out:
        subprocess.run(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if not junit.exists():
        sys.exit(f"pytest wrote no results; see {log}")
    return {"outcomes": outcomes(junit), "wall_s": wall, "log": log}


def outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed, failed, error or skipped, from a JUnit XML report."""
    result = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "error" in kinds:
            result[test] = "error"
        elif "failure" in kinds:
            result[test] = "failed"
        elif "skipped" in kinds:
            result[test] = "skipped"
        else:
            result[test] = "passed"
    return result


def disagreements(runs_dir: Path) -> tuple[int, list[str], list[str]]:
    """(runs recorded, a line per run never finished, a line per run whose final
    run.json counts differ from its tasks.jsonl lines)."""
    from scalable_otel.analysis.facts import COUNTS, counts_are_final

    runs = sorted(p for p in runs_dir.glob("run-*") if p.is_dir())
    found, unfinished = [], []
    for run in runs:
        try:
            meta = json.loads((run / "run.json").read_text())
        except (OSError, ValueError) as exc:
            found.append(f"{run.name}: run.json unreadable ({exc})")
            continue
        if not counts_are_final(meta, meta.get("status")):
            unfinished.append(f"{run.name}: status {meta.get('status')}")
            continue
        lines = collections.Counter()
        tasks = run / "tasks.jsonl"
        if tasks.exists():
            for raw in tasks.read_bytes().splitlines():
                try:
                    lines[json.loads(raw).get("event")] += 1
                except ValueError:
                    lines["(unreadable)"] += 1
        differ = [
            f"{field} {meta.get(field)} vs {lines[event]} {event} lines"
            for field, event in COUNTS.values()
            if meta.get(field) != lines[event]
        ]
        if differ:
            found.append(f"{run.name} ({meta.get('tasks_submitted')} tasks): " + "; ".join(differ))
    return len(runs), unfinished, found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="a dask/distributed checkout")
    parser.add_argument("--tests", nargs="+", default=list(DEFAULT_TESTS), metavar="FILE")
    parser.add_argument("--keep", type=Path, help="keep the work folder (runs, logs) here")
    parser.add_argument(
        "--plain-from",
        type=Path,
        metavar="DIR",
        help="take the plain arm from an earlier work folder (its plain.xml and plain.log)",
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args(argv)
    source = args.source.resolve()
    if not (source / "distributed" / "tests").is_dir():
        sys.exit(f"{source} is not a dask/distributed checkout (no distributed/tests)")
    import distributed

    print(f"distributed {distributed.__version__} installed; suite from {source}")
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="peer-suite-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    runs_dir = workdir / "runs"
    if args.plain_from:
        earlier = args.plain_from.resolve()
        wall = re.search(r"in ([0-9.]+)s", (earlier / "plain.log").read_text().splitlines()[-1])
        plain = {
            "outcomes": outcomes(earlier / "plain.xml"),
            "wall_s": float(wall.group(1)) if wall else float("nan"),
            "log": earlier / "plain.log",
        }
    else:
        plain = run_suite(source, args.tests, args.pytest_args, workdir, None)
    instrumented = run_suite(source, args.tests, args.pytest_args, workdir, runs_dir)
    for name, arm in (("plain", plain), ("instrumented", instrumented)):
        counts = collections.Counter(arm["outcomes"].values())
        shown = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped"))
        print(f"{name:>12}: {shown}; {arm['wall_s']:.0f} s (log {arm['log']})")
    print(f"       ratio: {instrumented['wall_s'] / plain['wall_s']:.2f} instrumented/plain")
    broken = sorted(
        test
        for test, outcome in instrumented["outcomes"].items()
        if outcome in ("failed", "error") and plain["outcomes"].get(test) == "passed"
    )
    print(f"fail only instrumented: {len(broken)}")
    for test in broken:
        print(f"  {test}")
    recorded, unfinished, disagree = disagreements(runs_dir) if runs_dir.exists() else (0, [], [])
    print(f"runs recorded: {recorded}; never finished: {len(unfinished)}")
    for line in unfinished:
        print(f"  {line}")
    print(f"runs that disagree with their lines: {len(disagree)}")
    for line in disagree:
        print(f"  {line}")
    print(f"work folder: {workdir}")
    return 1 if broken or disagree else 0


if __name__ == "__main__":
    sys.exit(main())
