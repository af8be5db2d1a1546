"""Run history and regression detection: hand-built histories with known figures, and real runs."""

import socket
import statistics
import subprocess
import sys

import orjson
import pytest

from scalable_otel.analysis import load_run
from scalable_otel.analysis.compare import compare
from scalable_otel.analysis.trends import (
    OK,
    REGRESSION,
    TOO_LITTLE_HISTORY,
    UnknownTask,
    format_trends,
    format_trends_markdown,
    trends,
)
from scalable_otel.errors import RunNotFound, ScalableError
from scalable_otel.rundir import RunDirectory, iso, list_runs, parse_iso
from tests.conftest import read_jsonl

T0 = parse_iso("2026-01-01T00:00:00Z")
STEADY = [3.8, 3.9, 4.0, 4.1, 4.2]  # median 4.0


def _jsonl(path, lines):
    with open(path, "ab") as f:
        f.write(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def make_run(
    root,
    i: int,
    durations: dict[str, list[float]],
    *,
    run_s: float = 10.0,
    threads: int = 1,
    hits: int = 0,
    misses: int = 0,
    failed: list[float] = (),
    meta: dict | None = None,
):
    """Run number `i` (started i minutes after T0) with these completed task durations,
    one worker up for the whole run, and `hits`/`misses` cache lookups outside tasks."""
    start = T0 + 60 * i
    run_id = f"run-{iso(start)[:19].replace('-', '').replace(':', '')}Z-hist-{i:08x}"
    run = RunDirectory.create(root, run_id)
    tasks, n = [], 0
    for name, values in durations.items():
        for d in values:
            n += 1
            at = iso(start + 0.01 * n)
            base = {"schema_version": 1, "timestamp": at, "run_id": run_id, "task": name}
            tasks.append({**base, "event": "task_submitted", "span_id": f"{n:016x}"})
            tasks.append(
                {**base, "event": "task_completed", "duration_s": d, "span_id": f"{n:016x}"}
            )
    for d in failed:
        tasks.append(
            {"timestamp": iso(start + 1), "event": "task_failed", "task": "sim", "duration_s": d}
        )
    _jsonl(run.file("tasks.jsonl"), tasks)
    worker = {"worker": "tcp://127.0.0.1:1", "nthreads": threads, "span_id": "w" * 16}
    _jsonl(
        run.file("workers.jsonl"),
        [
            {"timestamp": iso(start), "event": "worker_added", **worker},
            {"timestamp": iso(start + run_s), "event": "worker_removed", **worker},
        ],
    )
    lookups = [{"event": "cache_lookup", "result": "hit"}] * hits
    _jsonl(
        run.file("cache.jsonl"), lookups + [{"event": "cache_lookup", "result": "miss"}] * misses
    )
    data = {
        "run_id": run_id,
        "status": "completed" if not failed else "failed",
        "start_time": iso(start),
        "end_time": iso(start + run_s),
        "duration_s": run_s,
        "tasks_completed": sum(len(v) for v in durations.values()),
        "tasks_failed": len(failed),
        "cache_hits": hits,
        "cache_misses": misses,
    }
    run.write_run_json({**data, **(meta or {})})
    return run_id


def _scaled(values, factor):
    return [round(v * factor, 6) for v in values]


def test_a_steady_history_has_no_regression(tmp_path):
    offsets = [0.0, 0.05, -0.05, 0.1, -0.1, 0.0, 0.05, -0.05]
    for i, off in enumerate(offsets):
        make_run(tmp_path, i, {"sim": [v + off for v in STEADY], "post": [0.5, 0.6]})
    history = trends(tmp_path)
    assert [t.verdict for t in history.tasks] == [OK, OK]
    assert history.regressions == []
    sim = next(t for t in history.tasks if t.task == "sim")
    assert sim.baseline_runs == 5 and sim.runs == 8
    assert sim.baseline_median_s == pytest.approx(4.0)
    assert format_trends(history).splitlines()[-1] == (
        "No regressions: 2 tasks within their baseline spread (post, sim)"
    )


def test_the_last_two_runs_fifty_percent_slower_are_flagged_from_the_first(tmp_path):
    ids = []
    for i in range(8):
        factor = 1.5 if i >= 6 else 1.0 + 0.01 * (i % 3)
        ids.append(make_run(tmp_path, i, {"sim": _scaled(STEADY, factor), "post": [0.5, 0.6]}))
    history = trends(tmp_path)
    (regression,) = history.regressions
    assert regression.task == "sim"
    assert regression.verdict == REGRESSION
    assert regression.since_run == ids[6]
    assert regression.flagged_runs == ids[6:]
    assert regression.baseline_runs == 5
    assert regression.baseline_median_s == pytest.approx(4.04)
    assert regression.recent_median_s == pytest.approx(6.0)
    assert regression.change_pct == pytest.approx(48.5, abs=0.1)
    assert [t.verdict for t in history.tasks if t.task == "post"] == [OK]
    text = format_trends(history)
    assert (
        f"Regression: sim median 4.0s → 6.0s (+49%) since {ids[6]}; "
        "baseline spread 4.0–4.1s over 5 runs"
    ) in text.splitlines()
    assert "No regressions" not in text


def test_a_regression_that_recovered_is_not_reported(tmp_path):
    for i in range(8):
        make_run(tmp_path, i, {"sim": _scaled(STEADY, 1.5 if i == 6 else 1.0)})
    assert trends(tmp_path).regressions == []


def test_a_noisy_history_is_not_flagged(tmp_path):
    # per-run medians wander between 3 and 7 s; the latest runs are slow but inside that
    medians = [3.0, 6.0, 4.0, 7.0, 3.5, 6.5, 4.5, 6.0]
    for i, m in enumerate(medians):
        make_run(tmp_path, i, {"sim": [m - 2.0, m - 1.0, m, m + 2.5, m + 4.0]})
    history = trends(tmp_path, task="sim")
    (sim,) = history.tasks
    assert sim.verdict == OK
    assert sim.baseline_median_s == pytest.approx(4.0)
    assert sim.recent_median_s == pytest.approx(6.0)  # +50% on the latest run, and still noise
    assert sim.threshold_s > 7.0


def test_a_few_stragglers_do_not_make_a_regression(tmp_path):
    for i in range(6):
        slow_tail = [30.0, 40.0] if i == 5 else []
        make_run(tmp_path, i, {"sim": STEADY * 2 + slow_tail})
    history = trends(tmp_path)
    assert history.regressions == []
    assert history.runs[-1].p90_s > 20  # the table shows them
    assert history.runs[-1].median_s == pytest.approx(4.05)


def test_too_little_history_is_said_not_flagged(tmp_path):
    make_run(tmp_path, 0, {"sim": STEADY})
    make_run(tmp_path, 1, {"sim": _scaled(STEADY, 2.0)})
    history = trends(tmp_path)
    (sim,) = history.tasks
    assert sim.verdict == TOO_LITTLE_HISTORY and sim.runs == 2
    assert history.regressions == []
    assert format_trends(history).splitlines()[-2:] == [
        "No regressions: too little history to check any task",
        "Too little history: sim (2 runs); 3 runs with a task are needed",
    ]


def test_three_runs_are_enough_with_two_as_baseline(tmp_path):
    ids = [make_run(tmp_path, i, {"sim": STEADY}) for i in range(2)]
    ids.append(make_run(tmp_path, 2, {"sim": _scaled(STEADY, 1.3)}))
    (regression,) = trends(tmp_path).regressions
    assert (regression.since_run, regression.baseline_runs) == (ids[2], 2)


def test_format_trends_exact(tmp_path):
    ids = [
        make_run(tmp_path, 0, {"sim": [1.0, 2.0, 3.0]}, hits=1, misses=3),
        make_run(tmp_path, 1, {"sim": [1.0, 2.0, 3.0]}, run_s=12.0, threads=2, failed=[0.5]),
        make_run(tmp_path, 2, {"sim": [3.0, 3.0, 4.0], "tiny": [0.0004]}, run_s=100.0),
    ]
    history = trends(tmp_path)
    assert format_trends(history) == "\n".join(
        [
            f"Trends: 3 runs in {tmp_path} (task durations: all tasks)",
            "",
            "Run                                 Start (UTC)          Status     Duration"
            "  Done  Failed  Median   P90  Util  Cache hit    Energy      CO2e",
            # Green Algorithms with no samples: each thread busy, 12 W x 1.67 PUE x uptime,
            # 475 g/kWh: 10 s x 1 thread = 200.4 J; 12 s x 2 = 481 J; 100 s x 1 = 2004 J
            f"{ids[0]}  2026-01-01 00:00:00  completed     10.0s     3       0    2.0s  2.8s"
            "   60%        25%  55.7 mWh  0.0264 g",
            f"{ids[1]}  2026-01-01 00:01:00  failed        12.0s     3       1    2.0s  2.8s"
            "   27%          -   134 mWh  0.0635 g",
            f"{ids[2]}  2026-01-01 00:02:00  completed    100.0s     4       0    3.0s  3.7s"
            "   10%          -   557 mWh   0.264 g",
            "",
            f"Regression: sim median 2.0s → 3.0s (+50%) since {ids[2]}; "
            "baseline spread 2.0–2.0s over 2 runs",
            "Too little history: tiny (1 run); 3 runs with a task are needed",
        ]
    )
    data = history.to_dict()
    assert data["runs"][1]["utilization"] == pytest.approx(6.5 / 24)
    assert data["runs"][0]["cache_hit_rate"] == 0.25
    assert data["runs"][0]["energy_kwh"] == pytest.approx(200.4 / 3.6e6)
    assert data["runs"][0]["energy_method"] == "Green Algorithms estimate"
    assert data["regressions"][0]["since_run"] == ids[2]
    orjson.dumps(data)  # JSON-ready


def test_one_task_and_the_last_runs(tmp_path):
    for i in range(5):
        make_run(tmp_path, i, {"sim": STEADY, "post": [0.1 * (i + 1)]})
    history = trends(tmp_path, task="post", last=2)
    assert [r.run_id[-1] for r in history.runs] == ["3", "4"]
    assert [r.median_s for r in history.runs] == pytest.approx([0.4, 0.5])
    assert [t.task for t in history.tasks] == ["post"]
    assert "(task durations: task post)" in format_trends(history).splitlines()[0]


def test_unknown_task_and_no_runs(tmp_path):
    make_run(tmp_path, 0, {"sim": STEADY, "post": [1.0]})
    with pytest.raises(UnknownTask) as caught:
        trends(tmp_path, task="simulate")
    assert isinstance(caught.value, ScalableError)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("known tasks: post, sim")
    with pytest.raises(RunNotFound):
        trends(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunNotFound):
        trends(tmp_path / "empty")


def test_cache_served_tasks_are_left_out_of_durations(tmp_path):
    run_id = make_run(tmp_path, 0, {"sim": [4.0, 4.0, 0.001, 0.001, 0.001]})
    # the three short tasks were hits; the first one looked up twice (a miss then a hit)
    lookups = [
        {"event": "cache_lookup", "result": "hit", "span_id": f"{n:016x}"} for n in (1, 3, 4, 5)
    ]
    lookups.append({"event": "cache_lookup", "result": "miss", "span_id": f"{1:016x}"})
    _jsonl(tmp_path / run_id / "cache.jsonl", lookups)
    (run,) = trends(tmp_path).runs
    assert (run.durations, run.median_s) == (2, 4.0)
    assert run.cache_lookups == 5 and run.cache_hit_rate == 0.8
    assert run.tasks_completed == 5


def test_crashed_and_unreadable_runs_are_shown(tmp_path):
    make_run(tmp_path, 0, {"sim": STEADY})
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    crashed = make_run(
        tmp_path,
        1,
        {"sim": [1.0, 2.0]},
        meta={"status": "running", "end_time": None, "duration_s": None, "tasks_completed": 0}
        | {"pid": int(gone.stdout), "host": socket.gethostname(), "process_start_time": 1.0},
    )
    broken = make_run(tmp_path, 2, {"sim": [2.0]}, hits=1)
    (tmp_path / broken / "run.json").write_bytes(b'{"run_id": ')
    with open(tmp_path / broken / "tasks.jsonl", "ab") as f:
        f.write(b'{"event": "task_comp')
    runs = {r.run_id: r for r in trends(tmp_path).runs}
    assert runs[crashed].status == "crashed"
    assert runs[crashed].tasks_completed == 2  # counted in tasks.jsonl: run.json never ended
    assert runs[crashed].duration_s == pytest.approx(10.0)  # up to the last worker line
    assert runs[broken].status == "unknown"
    assert runs[broken].start_time == "2026-01-01T00:02:00Z"  # from the directory name
    assert runs[broken].median_s == 2.0 and runs[broken].cache_hit_rate == 1.0
    assert runs[broken].skipped_lines == {"tasks.jsonl": 1}
    assert "unknown" in format_trends(trends(tmp_path))


def test_real_runs_agree_with_run_json(demo_project):
    root = demo_project / ".scalable" / "runs"
    history = trends(root)
    paths = list_runs(root)
    assert [r.run_id for r in history.runs] == [p.name for p in paths]
    for run, path in zip(history.runs, paths):
        meta = orjson.loads((path / "run.json").read_bytes())
        assert run.start_time == meta["start_time"]
        assert run.status == meta["status"]
        assert run.duration_s == meta["duration_s"]
        assert (run.tasks_completed, run.tasks_failed) == (
            meta["tasks_completed"],
            meta["tasks_failed"],
        )
        lookups = meta["cache_hits"] + meta["cache_misses"]
        assert run.cache_lookups == lookups
        assert run.cache_hit_rate == pytest.approx(meta["cache_hits"] / lookups)
        assert 0 < run.utilization <= 1
        # the median of completed tasks that were not served from the cache
        hits = {c["span_id"] for c in read_jsonl(path / "cache.jsonl") if c["result"] == "hit"}
        done = sorted(
            t["duration_s"]
            for t in read_jsonl(path / "tasks.jsonl")
            if t["event"] == "task_completed" and t["span_id"] not in hits
        )
        assert run.durations == len(done)
        assert run.median_s == pytest.approx(statistics.median(done))
    first, second = history.runs
    assert first.cache_hit_rate == 0 and second.cache_hit_rate > 0.5
    assert {t.verdict for t in history.tasks} == {TOO_LITTLE_HISTORY}
    text = format_trends(history)
    assert all(r.run_id in text for r in history.runs)
    assert "No regressions: too little history to check any task" in text

    sims = trends(root, task="run_simulation")
    ran = [
        t["duration_s"]
        for t in read_jsonl(paths[0] / "tasks.jsonl")
        if t["event"] == "task_completed" and t["task"] == "run_simulation"
    ]
    assert sims.runs[0].durations == len(ran)  # the first run computed every simulation
    assert sims.runs[0].median_s == pytest.approx(statistics.median(ran))
    assert sims.runs[0].median_s >= 0.02  # each simulation sleeps 20 ms or more
    assert sims.runs[1].durations < len(ran)  # the second took most from the cache
    with pytest.raises(UnknownTask, match="run_simulation"):
        trends(root, task="no_such_task")


def test_trends_as_markdown_exact(tmp_path):
    ids = []
    for i in range(4):
        factor = 1.5 if i == 3 else 1.0 + 0.01 * i
        ids.append(make_run(tmp_path, i, {"sim|x": _scaled(STEADY, factor)}))
    text = format_trends_markdown(trends(tmp_path))
    lines = text.splitlines()
    assert lines[:3] == [
        "### Trends: 1 regression over 4 runs (all tasks)",
        "",
        f"- Regression: sim\\|x median 4.0s → 6.0s (+49%) since {ids[3]}; "
        "baseline spread 4.0–4.0s over 2 runs",
    ]
    assert lines[4:6] == [
        "| Run | Start (UTC) | Status | Duration | Done | Failed | Median | P90 | Util "
        "| Cache hit | Energy | CO2e |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    assert lines[6] == (  # 10 s x 1 thread x 12 W x PUE 1.67 = 200.4 J, at 475 g/kWh
        f"| {ids[0]} | 2026-01-01 00:00:00 | completed | 10.0s | 5 | 0 | 4.0s | 4.2s | 200% | - "
        "| 55.7 mWh | 0.0264 g |"
    )
    assert lines[-1] == (f"| sim\\|x | regression | 4 | 4.0s | 6.0s | +49% | {ids[3]} |")


def test_trends_and_compare_leave_out_the_same_cache_served_tasks(demo_project):
    root = demo_project / ".scalable" / "runs"
    first, second = list_runs(root)
    history = {r.run_id: r for r in trends(root, task="run_simulation").runs}
    (row,) = [
        r
        for r in compare(load_run(first), load_run(second))["tasks"]
        if r["task"] == "run_simulation"
    ]
    assert (row["n_a"], row["n_b"]) == (
        history[first.name].durations,
        history[second.name].durations,
    )
    assert row["cached_b"] == row["completed_b"] - row["n_b"] > 0
    assert row["median_a_s"] == pytest.approx(history[first.name].median_s)
