"""The HTML report's figures as data, from hand-made run directories (no browser)."""

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest

from scalable_otel.analysis import load_run, report
from scalable_otel.analysis.html import header_counts, html_report
from scalable_otel.analysis.html.attempts import busy_bin_count
from scalable_otel.analysis.html.durations import MAX_DURATION_DOTS
from scalable_otel.analysis.html.failures import MAX_FAILURE_ROWS
from scalable_otel.analysis.html.figures import figures, payload
from scalable_otel.analysis.html.page import asset
from scalable_otel.analysis.html.resources import MAX_RESOURCE_POINTS
from scalable_otel.exporters.columnar import write_columnar_copy
from tests.conftest import REPO

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
A, B = "tcp://a:1", "tcp://b:1"


def stamp(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(event, t, key, worker=None, attempt=1, **extra) -> dict:
    return {
        "event": event,
        "timestamp": stamp(t),
        "task": key.split("-")[0],
        "key": key,
        "worker": worker,
        "attempt": attempt,
        **extra,
    }


def run_dir(tmp_path: Path, run: dict | None = None, **files: list[dict]):
    """A run directory written by hand (run.json, then each named JSONL file), loaded."""
    name = "run-20261128T120000Z-figures-0123abcd"
    path = tmp_path / name
    path.mkdir()
    meta = {"run_id": name, "status": "completed", "start_time": stamp(0), "end_time": stamp(10)}
    (path / "run.json").write_bytes(orjson.dumps(meta | (run or {})))
    for file in ("tasks", "resources", "workers", "cache", "failures"):
        content = b"".join(orjson.dumps(e) + b"\n" for e in files.get(file, []))
        (path / f"{file}.jsonl").write_bytes(content)
    return load_run(path)


def worker(event, t, address, name, nthreads=1, **extra) -> dict:
    return {
        "event": event,
        "timestamp": stamp(t),
        "worker": address,
        "worker_name": name,
        "nthreads": nthreads,
        **extra,
    }


def bars(fig: dict) -> dict:
    """(key, attempt) -> (status, start, end, worker address, lane) of each drawn bar."""
    rows = fig["workers"]
    return {
        (b["key"], b["attempt"]): (b["status"], b["start"], b["end"], rows[b["w"]]["address"])
        + (b["lane"],)
        for b in fig["drawn"]
    }


# --- attempt matching ------------------------------------------------------------------------


def test_each_attempt_is_matched_to_its_own_end(tmp_path):
    tasks = [
        # a retried task: attempt 1 failed, attempt 2 completed on the other worker
        line("task_started", 0.1, "retry-1", A),
        line("task_failed", 0.3, "retry-1", A, duration_s=0.2, error_type="ValueError"),
        line("task_started", 0.4, "retry-1", B, attempt=2),
        line("task_completed", 0.9, "retry-1", B, attempt=2, duration_s=0.5),
        # the end lines of attempt 2 come first in the file: matching is by attempt
        line("task_completed", 2.0, "order-2", A, attempt=2, duration_s=0.5),
        line("task_started", 1.5, "order-2", A, attempt=2),
        line("task_started", 1.0, "order-2", A),
        # no task_started line (lost): the bar starts duration_s before its end line
        line("task_completed", 3.0, "nostart-3", B, duration_s=0.25),
        # a dependency failure never ran, a task cancelled before it started: no bars
        line("task_failed", 3.5, "dep-4", None, duration_s=0.0),
        line("task_cancelled", 3.6, "never-5", None),
        # started and never ended, no later attempt, worker still there: unfinished
        line("task_started", 4.0, "open-6", B),
    ]
    fig = figures(run_dir(tmp_path, tasks=tasks, workers=[worker("worker_added", 0, A, "0")]))
    assert bars(fig) == {
        ("retry-1", 1): ("failed", 0.1, 0.3, A, 0),
        ("retry-1", 2): ("completed", 0.4, 0.9, B, 0),
        ("order-2", 1): ("lost", 1.0, 1.5, A, 0),  # retried: ends at the next attempt's start
        ("order-2", 2): ("completed", 1.5, 2.0, A, 0),
        ("nostart-3", 1): ("completed", 2.75, 3.0, B, 0),
        ("open-6", 1): ("unfinished", 4.0, 10.0, B, 0),  # up to run.json's end
    }
    assert fig["total_attempts"] == 6 and fig["busy"] is None
    failed = next(b for b in fig["drawn"] if b["status"] == "failed")
    assert failed["error"] == "ValueError"  # from the task_failed line: no failures.jsonl
    stats = {s["task"]: s for s in fig["stats"]}
    assert stats["retry"]["attempts"] == 2 and stats["retry"]["failed"] == 1
    assert stats["dep"]["attempts"] == 0 and stats["dep"]["n"] == 0  # never ran: no duration
    assert stats["never"]["cancelled"] == 1


def test_a_lost_attempt_ends_at_its_measurement_else_its_workers_end(tmp_path):
    tasks = [
        line("task_started", 0.1, "crash-1", A),  # its worker crashes at 0.5
        line("task_started", 0.6, "crash-1", B, attempt=2),
        line("task_completed", 1.0, "crash-1", B, attempt=2, duration_s=0.4),
        line("task_started", 0.7, "measured-2", B),  # its task_resources line says 0.05 s
        line("task_started", 0.9, "measured-2", B, attempt=2),
        line("task_completed", 1.1, "measured-2", B, attempt=2, duration_s=0.2),
        line("task_started", 1.3, "both-3", B),  # the two-thread worker's second lane
        line("task_completed", 1.4, "both-3", B, duration_s=0.1),
    ]
    measured = {"event": "task_resources", "timestamp": stamp(0.85), "key": "measured-2"}
    workers = [
        worker("worker_added", 0, A, "0"),
        worker("worker_added", 0, B, "1", nthreads=2),
        worker("worker_crashed", 0.5, A, "0", reason="connection lost"),
    ]
    resources = [measured | {"worker": B, "wall_s": 0.05}]
    fig = figures(run_dir(tmp_path, tasks=tasks, workers=workers, resources=resources))
    assert bars(fig) == {
        ("crash-1", 1): ("lost", 0.1, 0.5, A, 0),
        ("crash-1", 2): ("completed", 0.6, 1.0, B, 0),
        ("measured-2", 1): ("lost", 0.7, 0.75, B, 1),
        ("measured-2", 2): ("completed", 0.9, 1.1, B, 1),
        ("both-3", 1): ("completed", 1.3, 1.4, B, 0),
    }
    assert [(w["name"], w["lanes"], w.get("end"), w.get("ended")) for w in fig["workers"]] == [
        ("0", 1, "crashed", 0.5),
        ("1", 2, None, None),
    ]


def test_the_same_figures_from_the_jsonl_and_from_its_columnar_copy(tmp_path):
    tasks = []
    for i in range(40):
        outcome = "task_failed" if i % 7 == 0 else "task_completed"
        tasks += [
            line("task_submitted", i * 0.1, f"t{i % 3}-{i}", args={"i": i}),
            line("task_started", i * 0.1 + 0.01, f"t{i % 3}-{i}", [A, B][i % 2]),
            line(outcome, i * 0.1 + 0.2, f"t{i % 3}-{i}", [A, B][i % 2], duration_s=0.19),
        ]
    run = run_dir(tmp_path, tasks=tasks)
    before = payload(figures(run, max_bars=10))
    assert write_columnar_copy(run.path, min_bytes=0)
    assert payload(figures(run, max_bars=10)) == before
    assert before["bars"]["args"][0] == '{"i": 0}'


# --- a capped timeline --------------------------------------------------------------------


def test_over_the_cap_every_unfinished_attempt_stays_and_busy_bins_hold_all(tmp_path):
    tasks = []
    for i in range(30):  # on A: one at a time, 0.2 s each; every 10th fails
        start, outcome = i * 0.3, "task_failed" if i % 10 == 0 else "task_completed"
        length = 0.2 + (i % 5) * 0.01
        tasks += [
            line("task_started", start, f"a-{i}", A),
            line(outcome, start + length, f"a-{i}", A, duration_s=length),
        ]
    tasks.append(line("task_started", 2.0, "long-1", B))  # on B: one attempt of 6 s
    tasks.append(line("task_completed", 8.0, "long-1", B, duration_s=6.0))
    run = run_dir(tmp_path, tasks=tasks)
    fig = figures(run, max_bars=8)
    drawn = fig["drawn"]
    assert fig["total_attempts"] == 31 and len(drawn) == 8
    assert sum(b["status"] == "failed" for b in drawn) == 3  # every failed attempt
    kept = sorted(b["end"] - b["start"] for b in drawn if b["status"] == "completed")
    assert kept[0] >= 0.24 - 1e-9  # then the longest: 6 s, and those of 0.24 s
    assert [b["start"] for b in drawn] == sorted(b["start"] for b in drawn)

    busy = fig["busy"]
    rows = {fig["workers"][r["w"]]["address"]: r["v"] for r in busy["rows"]}
    assert len(rows[A]) == busy_bin_count(len(fig["workers"]))
    width = busy["width"]
    # busy time is kept: the levels times the bin width add up to every attempt's time
    lengths = sum(0.2 + (i % 5) * 0.01 for i in range(30))
    assert sum(rows[A]) * width == pytest.approx(lengths, abs=0.01)
    assert sum(rows[B]) * width == pytest.approx(6.0, abs=0.01)
    assert max(rows[A]) <= 1.0 + 1e-3 and max(rows[B]) == pytest.approx(1.0, abs=1e-3)
    inside = [v for b, v in enumerate(rows[B]) if 2.1 < b * width < 7.9]  # bins inside it
    assert inside and all(v == pytest.approx(1.0, abs=1e-3) for v in inside)

    page = html_report(run, max_bars=8)
    assert "This run has 31 attempts: the timeline draws 8 of them" in page
    assert "shaded band" in page


def test_busy_bins_of_many_workers_keep_the_page_small(tmp_path):
    n = 500
    tasks = []
    for i in range(n):
        tasks += [
            line("task_started", i * 0.01, f"w-{i}", f"tcp://w:{i}"),
            line("task_completed", i * 0.01 + 1.0, f"w-{i}", f"tcp://w:{i}", duration_s=1.0),
        ]
    workers = [worker("worker_added", 0, f"tcp://w:{i}", str(i)) for i in range(n // 2)]
    fig = figures(run_dir(tmp_path, tasks=tasks, workers=workers), max_bars=10)
    bins = busy_bin_count(n)
    assert bins < 600 and len(fig["busy"]["rows"]) == n
    for row in fig["busy"]["rows"]:
        assert len(row["v"]) == bins
        assert sum(row["v"]) * fig["busy"]["width"] == pytest.approx(1.0, abs=0.01)


# --- the header is the run report's -------------------------------------------------------


@pytest.mark.parametrize(
    "meta",
    [
        {"tasks_submitted": 3, "tasks_completed": 3, "tasks_failed": 0},
        # the case: run.json says 0 completed, the lines say 3
        {"telemetry_lost": True, "tasks_completed": 0},
        {"status": "running", "end_time": None, "tasks_completed": 0},
    ],
)
def test_the_header_counts_are_the_run_reports(tmp_path, meta):
    tasks = []
    for i in range(3):
        key = f"f-{i}"
        tasks += [line("task_submitted", i, key), line("task_started", i + 0.1, key, A)]
        tasks.append(line("task_completed", i + 0.5, key, A, duration_s=0.4))
    cache = [
        {"event": "cache_lookup", "timestamp": stamp(0.2), "function": "f", "result": r}
        for r in ("hit", "miss", "hit")
    ]
    run = run_dir(tmp_path, meta, tasks=tasks, cache=cache)
    summary = report(run)
    expected = {
        "submitted": summary["tasks"]["submitted"],
        "completed": summary["tasks"]["completed"],
        "failed": summary["tasks"]["failed"],
        "cache_hits": summary["cache"]["hits"],
    }
    assert header_counts(run) == expected
    page = html_report(run)
    cards = dict(
        (label, int(n)) for n, label in re.findall(r'<span class="n">(\d+)</span>(\w+)</div>', page)
    )
    assert cards["Submitted"] == expected["submitted"]
    assert cards["Completed"] == expected["completed"]
    assert cards["Failed"] == expected["failed"]
    assert cards["Hits"] == expected["cache_hits"]


# --- durations, resources, failures ----------------------------------------------------------


def test_box_plots_are_the_quantiles_of_every_duration(tmp_path):
    rng = np.random.default_rng(3)
    values = np.round(rng.lognormal(0, 1, 1000), 6)
    tasks = [
        line("task_completed", 0.001 * i, f"sim-{i}", A, duration_s=float(v))
        for i, v in enumerate(values)
    ]
    tasks.append(line("task_completed", 2.0, "sim-x", A, duration_s=float("nan")))  # no value
    (stats,) = figures(run_dir(tmp_path, tasks=tasks))["stats"]
    q1, median, q3, p95 = np.quantile(values, [0.25, 0.5, 0.75, 0.95])
    assert stats["n"] == 1000 and stats["completed"] == 1001
    assert (stats["q1"], stats["median"], stats["q3"], stats["p95"]) == pytest.approx(
        (q1, median, q3, p95), abs=1e-6
    )
    assert (stats["min"], stats["max"]) == pytest.approx((values.min(), values.max()))
    assert stats["total"] == pytest.approx(values.sum(), abs=1e-4)
    assert len(stats["dots"]) == MAX_DURATION_DOTS
    assert (stats["dots"][0], stats["dots"][-1]) == pytest.approx((values.min(), values.max()))


def test_a_long_resource_series_keeps_its_spikes(tmp_path):
    n = 5 * MAX_RESOURCE_POINTS
    samples = [
        {
            "event": "resource_sample",
            "timestamp": stamp(i * 0.001),
            "worker": A,
            "cpu_percent": 400.0 if i == 1234 else 50.0 + i % 7,
            "memory_bytes": 1.0 if i == 4321 else 2e9,
        }
        for i in range(n)
    ]
    samples.append({"event": "resource_sample", "timestamp": stamp(1), "worker": B})
    (series,) = figures(run_dir(tmp_path, resources=samples))["resources"]
    times, cpu = series["cpu"]
    assert len(cpu) <= MAX_RESOURCE_POINTS and max(cpu) == 400.0 and min(cpu) == 50.0
    assert times[cpu.index(400.0)] == pytest.approx(1.234)
    assert times == sorted(times)
    assert min(series["mem"][1]) == 1.0 and len(series["mem"][1]) <= MAX_RESOURCE_POINTS


def test_failures_keep_the_earliest_rows_and_count_all(tmp_path):
    n = MAX_FAILURE_ROWS + 50
    failures = [
        line("task_failed", (n - i) * 0.001, f"f-{i}", A, error_type="E", error_message=str(i))
        for i in range(n)
    ]
    failures.append({"event": "task_failed", "timestamp": "not a time", "key": "late"})
    fig = figures(run_dir(tmp_path, failures=failures))
    rows = fig["failures"]
    assert fig["failures_total"] == n + 1 and len(rows) == MAX_FAILURE_ROWS
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
    assert rows[0]["error_message"] == str(n - 1)  # the earliest; the one with no time last


# --- the page's files ---------------------------------------------------------------------


def test_the_pages_script_and_style_are_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = set(config["tool"]["setuptools"]["package-data"]["scalable_otel"])
    folder = REPO / "scalable_otel" / "analysis" / "html"
    shipped = {
        str(p.relative_to(REPO / "scalable_otel")) for p in folder.iterdir() if p.suffix != ".py"
    }
    assert shipped - {"analysis/html/__pycache__"} <= declared
    script = asset("report.js")
    assert "</script" not in script.lower() and "<!--" not in script
    assert "</style" not in asset("report.css").lower()
