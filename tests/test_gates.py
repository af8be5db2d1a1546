"""CI gates on real runs: `report --compare A B --fail-if-slower PCT` and `trends
--fail-on-regression` exit with 3 when the noise-aware verdict says slower, never on cache
hits alone; `--format markdown` prints tables a pull request or a job summary shows.

Runs are recorded on a real LocalCluster. The slow runs sleep twice as long per task
(0.1 s against 0.05 s, 20 tasks each), so the verdict is certain however loaded the
machine: every slow task sleeps longer than any fast one could take to start and end.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalable_otel import ScalableSession
from scalable_otel.analysis import load_run
from scalable_otel.analysis.compare import compare, gate
from scalable_otel.cli import main
from scalable_otel.cli.options import GATE_FAILED
from scalable_otel.rundir import list_runs
from tests import workloads

TASKS = 20
FAST, SLOW = 0.05, 0.1


def record(root: Path, cache: Path, fn, **kwargs) -> Path:
    """One run of `TASKS` tasks of `fn` on two worker processes; its directory."""
    with ScalableSession(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        project="gates",
        runs_dir=root,
        cache_dir=cache,
    ) as session:
        assert len(session.gather(session.map(fn, range(TASKS), **kwargs))) == TASKS
    return Path(session.run_dir)


@pytest.fixture(scope="module")
def timing(tmp_path_factory) -> dict[str, Path]:
    """Three runs of 0.05 s tasks, then one of the same tasks made slower on purpose."""
    root = tmp_path_factory.mktemp("timing")
    cache = root / "cache"
    runs = {f"fast{i}": record(root, cache, workloads.sleep_then, seconds=FAST) for i in (1, 2, 3)}
    runs["slow"] = record(root, cache, workloads.sleep_then, seconds=SLOW)
    assert list_runs(root) == list(runs.values())
    return runs


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> dict[str, Path]:
    """A run computing 20 cacheable simulations, then one served all of them by the cache."""
    root = tmp_path_factory.mktemp("cached")
    cache = root / "cache"
    return {name: record(root, cache, workloads.simulate) for name in ("computed", "served")}


def cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def compare_cli(a: Path, b: Path, *options: str):
    return cli("report", "--compare", str(a), str(b), "--runs-dir", str(a.parent), *options)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The tables of a markdown text, each a list of rows of cells (alignment rows
    checked and dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        assert line.endswith("|"), line
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if current is None:
            current = [cells]
            tables.append(current)
            continue
        if len(current) == 1:  # the alignment row under the header
            assert all(re.fullmatch(r"-{3,}:?", c) for c in cells), line
            assert len(cells) == len(current[0]), line
            current.append([])  # a marker, dropped below
            continue
        assert len(cells) == len(current[0]), line
        current.append(cells)
    return [[t[0], *t[2:]] for t in tables]


def as_dicts(table: list[list[str]]) -> list[dict[str, str]]:
    header, *rows = table
    return [dict(zip(header, row)) for row in rows]


# --- report --compare --fail-if-slower ----------------------------------------------------


def test_a_slower_run_fails_the_gate_with_exit_code_3(timing):
    result = compare_cli(timing["fast1"], timing["slow"], "--fail-if-slower", "10")
    assert result.exit_code == GATE_FAILED == 3
    assert "Verdict: B is slower: sleep_then" in result.stdout
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Gate failed: B is slower by ")
    assert "(at least 10% fails): sleep_then" in line
    slowdown = float(re.search(r"slower by (\d+)%", line).group(1))
    assert 50 <= slowdown <= 150  # twice the sleep: near +100%


def test_the_gate_holds_below_its_threshold_and_when_b_is_faster(timing):
    result = compare(load_run(timing["fast1"]), load_run(timing["slow"]))
    slowdown = result["verdict"]["executions_change_pct"]
    assert result["verdict"]["executions_verdict"] == "slower"
    assert gate(result, slowdown + 1) is None
    assert gate(result, slowdown - 1) is not None
    above = compare_cli(timing["fast1"], timing["slow"], "--fail-if-slower", "500")
    assert above.exit_code == 0 and above.stderr == ""
    faster = compare_cli(timing["slow"], timing["fast1"], "--fail-if-slower", "0")
    assert faster.exit_code == 0 and "Verdict: B is faster: sleep_then" in faster.stdout


def test_the_gate_exit_code_of_a_real_process(timing):
    args = ["report", "--compare", timing["fast2"].name, timing["slow"].name]
    args += ["--runs-dir", str(timing["slow"].parent)]
    done = subprocess.run(
        [sys.executable, "-m", "scalable_otel.cli", *args, "--fail-if-slower", "25"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("Gate failed: B is slower by ")
    assert "Run Comparison" in done.stdout


def test_cache_hits_are_credited_to_the_cache_and_never_fail_the_gate(cached):
    computed, served = cached["computed"], cached["served"]
    result = compare(load_run(computed), load_run(served))
    (row,) = result["tasks"]
    assert (row["task"], row["completed_a"], row["completed_b"]) == ("simulate", 20, 20)
    assert (row["cached_a"], row["cached_b"], row["n_a"], row["n_b"]) == (0, 20, 20, 0)
    assert row["saved_b_s"] > 20 * 0.03  # each hit saved a 50 ms sleep, less its lookup
    assert row["verdict"] == "too few samples"  # B executed none: nothing to test
    assert row["median_all_b_s"] < row["median_all_a_s"]  # the old figure, lookups and all
    verdict = result["verdict"]
    assert verdict["verdict"] == "faster from the cache"
    assert verdict["executions_verdict"] == "no clear difference"
    assert verdict["cache"]["served_b"] == 20 and verdict["cache"]["served_a"] == 0
    assert verdict["text"].startswith(
        "B is faster, from the cache: 20 of 20 simulate tasks came from B's cache (saved "
    )
    assert result["figures"]["tasks_from_cache"]["change"] == 20
    text = compare_cli(computed, served, "--fail-if-slower", "0")
    assert text.exit_code == 0 and text.stderr == ""
    # the other way round: B computed what A's cache served; B is slower only from the cache
    back = compare(load_run(served), load_run(computed))
    assert back["verdict"]["verdict"] == "slower from the cache"
    assert back["verdict"]["text"].startswith(
        "B is slower, from the cache: 20 of 20 simulate tasks came from A's cache"
    )
    assert gate(back, 0) is None
    assert compare_cli(served, computed, "--fail-if-slower", "0").exit_code == 0


def test_compare_as_a_markdown_table(timing):
    result = compare_cli(timing["fast1"], timing["slow"], "--format", "markdown")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "### Run comparison: slower"
    assert lines[2].startswith("**Verdict:** B is slower: sleep_then")
    figures, tasks = markdown_tables(result.stdout)
    figures = {row["Figure"]: row for row in as_dicts(figures)}
    assert figures["Tasks completed"]["A"] == figures["Tasks completed"]["B"] == str(TASKS)
    (task,) = as_dicts(tasks)
    assert task["Task"] == "sleep_then" and task["Verdict"] == "slower"
    assert task["A median (executions)"].endswith(f"({TASKS})")
    assert task["From cache A/B"] == "0/0"
    assert re.fullmatch(r"\+\d+%", task["Change"])


# --- trends --fail-on-regression -----------------------------------------------------------


def test_a_regression_fails_the_trends_gate(timing):
    root = timing["slow"].parent
    result = cli("trends", "--runs-dir", str(root), "--fail-on-regression")
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Gate failed: Regression: sleep_then median ")
    assert f"since {timing['slow'].name}; baseline spread " in line
    assert "Regression: sleep_then" in result.stdout
    without = cli("trends", "--runs-dir", str(root))
    assert without.exit_code == 0  # the same verdict, no gate asked for
    one_task = cli(
        "trends", "--runs-dir", str(root), "--task", "sleep_then", "--fail-on-regression"
    )
    assert one_task.exit_code == 3


def test_a_steady_history_passes_the_trends_gate(timing, tmp_path):
    for name in ("fast1", "fast2", "fast3"):
        shutil.copytree(timing[name], tmp_path / "runs" / timing[name].name)
    result = cli("trends", "--runs-dir", str(tmp_path / "runs"), "--fail-on-regression")
    assert result.exit_code == 0, result.stderr
    assert "No regressions: 1 task within its baseline spread (sleep_then)" in result.stdout


def test_too_little_history_and_cache_hits_never_fail_the_trends_gate(cached):
    root = cached["computed"].parent
    result = cli("trends", "--runs-dir", str(root), "--fail-on-regression")
    assert result.exit_code == 0 and result.stderr == ""
    assert "Too little history: simulate (1 run)" in result.stdout  # the hits are left out


def test_trends_as_a_markdown_table(timing):
    root = timing["slow"].parent
    result = cli("trends", "--runs-dir", str(root), "--format", "markdown")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "### Trends: 1 regression over 4 runs (all tasks)"
    assert lines[2].startswith("- Regression: sleep_then median ")
    runs, checks = markdown_tables(result.stdout)
    assert [row["Run"] for row in as_dicts(runs)] == [p.name for p in timing.values()]
    assert {row["Done"] for row in as_dicts(runs)} == {str(TASKS)}
    (check,) = as_dicts(checks)
    assert (check["Task"], check["Verdict"], check["Runs"]) == ("sleep_then", "regression", "4")
    assert check["Since"] == timing["slow"].name


def test_markdown_only_where_it_is_offered(timing):
    root = str(timing["slow"].parent)
    report = cli("report", "--last", "--runs-dir", root, "--format", "markdown")
    assert report.exit_code == 2 and "--format markdown is for --compare" in report.stderr
    runs = cli("runs", "--runs-dir", root, "--format", "markdown")
    assert runs.exit_code == 2 and "'markdown' is not one of" in runs.stderr
