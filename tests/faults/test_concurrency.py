"""Two processes at once in one project directory: two sessions recording into the same
runs directory under the same project name, and two processes filling one cache with
the same function and arguments.

Both drivers are started, wait at a barrier until both are ready, and are let go with
one line each on their stdin, so that their work overlaps to the millisecond.
"""

from __future__ import annotations

import glob
from pathlib import Path

from scalable_otel.cache import CacheStore
from scalable_otel.rundir import JSONL_FILES, list_runs
from tests.faults.harness import Driver, lines_of

N = 100  # calls per round
ROUNDS = 10  # each round's arguments are new to the cache: every key is raced for


SESSION_ARGS = ("--barrier", "--workers", "1", "--tasks", "40", "--seconds", "0.02")
SESSION_ARGS += ("--project", "same")


def cache_args(function: str) -> tuple[str, ...]:
    return ("--function", function, "--tasks", str(N), "--rounds", str(ROUNDS))


def start_together(drivers: list[Driver]) -> None:
    for driver in drivers:
        driver.wait_for(lambda line: "ready" in line)
    for driver in drivers:
        driver.send("go\n")


def finish(drivers: list[Driver]) -> list[dict]:
    ends = [driver.wait_for(lambda line: "results" in line, timeout=120) for driver in drivers]
    for driver in drivers:
        assert driver.finish(60) == 0, driver.stderr()[-3000:]
    return ends


def test_two_sessions_at_once_keep_their_runs_apart(project_dir):
    drivers = [Driver(project_dir, "session", *SESSION_ARGS, stdin=True) for _ in range(2)]
    try:
        start_together(drivers)
        ends = finish(drivers)
    finally:
        for driver in drivers:
            driver.cleanup()
    assert all(end["results"] == list(range(40)) for end in ends)
    runs = list_runs(project_dir / ".scalable" / "runs")
    assert len(runs) == 2 and runs[0].name != runs[1].name
    said = {
        Path(driver.wait_for(lambda line: "run_dir" in line)["run_dir"]).name: {
            key for _, key in driver.done()
        }
        for driver in drivers
    }
    assert set(said) == {run.name for run in runs}
    trace_ids = set()
    for run in runs:
        for name in JSONL_FILES + ("traces.otlp.jsonl",):
            lines, tail = lines_of(run / name)  # every line parses: none torn or interleaved
            assert tail == b"", (run.name, name)
            assert all(line.get("run_id", run.name) == run.name for line in lines)
        tasks = lines_of(run / "tasks.jsonl")[0]
        assert {e["key"] for e in tasks} == said[run.name]  # its own tasks, all of them
        assert sum(e["event"] == "task_completed" for e in tasks) == 40
        trace_ids |= {e["trace_id"] for e in tasks}
    assert len(trace_ids) == 2


def run_cache(project_dir: Path, function: str) -> tuple[list[dict], list[Driver]]:
    drivers = [Driver(project_dir, "cache", *cache_args(function), stdin=True) for _ in range(2)]
    try:
        start_together(drivers)
        return finish(drivers), drivers
    finally:
        for driver in drivers:
            driver.cleanup()


def check_cache(project_dir: Path, drivers: list[Driver]) -> None:
    """Every lookup a whole cache.jsonl line, every entry whole and verified."""
    for driver in drivers:
        assert "failed verification" not in driver.stderr()
    runs = list_runs(project_dir / ".scalable" / "runs")
    misses = 0
    for run in runs:
        lookups, tail = lines_of(run / "cache.jsonl")
        assert tail == b"" and len(lookups) == N * ROUNDS
        assert all(e["event"] == "cache_lookup" and e["result"] in ("hit", "miss") for e in lookups)
        misses += sum(e["result"] == "miss" for e in lookups)
    assert misses >= N * ROUNDS  # each key computed at least once, by one or both
    store = CacheStore(project_dir / ".scalable" / "cache")
    entries = glob.glob(str(store.root / "*" / "*.entry"))
    assert len(entries) == N * ROUNDS
    corrupt = [Path(entry).stem for entry in entries if not store.load(Path(entry).stem)[0]]
    assert corrupt == []


def test_two_processes_filling_one_cache(project_dir):
    ends, drivers = run_cache(project_dir, "square")
    expected = [[i * i for i in range(N)] for _ in range(ROUNDS)]
    assert all(end["results"] == expected for end in ends)
    check_cache(project_dir, drivers)


def test_two_processes_filling_one_cache_with_values_pickled_differently(project_dir):
    ends, drivers = run_cache(project_dir, "tagged")
    tags = [f"tag-{k}" for k in range(16)]
    expected = [[{"i": i, "tags": sorted(tags)} for i in range(N)] for _ in range(ROUNDS)]
    assert all(end["results"] == expected for end in ends)  # right results all the same
    check_cache(project_dir, drivers)
