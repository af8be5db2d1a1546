"""One truth: every reader of a run directory gives the same task and cache counts.

A plain case first (the hand-made run of issue 11), then a property test over run
directories built by hypothesis, consistent and inconsistent."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalable_otel.analysis import load_run, report
from scalable_otel.analysis.compare import compare
from scalable_otel.analysis.export import export_parquet
from scalable_otel.analysis.html import html_report
from scalable_otel.analysis.runs import list_run_summaries
from scalable_otel.analysis.trends import trends
from scalable_otel.cli import main

LOST_RUN = "run-20260101T000000Z-lost-0000000a"


def _lost_run(root):
    """run.json says completed with 0 tasks, but its telemetry was lost: tasks.jsonl has 3."""
    run = root / LOST_RUN
    run.mkdir(parents=True)
    meta = {
        "run_id": LOST_RUN,
        "status": "completed",
        "start_time": "2026-01-01T00:00:00.000000Z",
        "end_time": "2026-01-01T00:01:00.000000Z",
        "duration_s": 60.0,
        "target": "local",
        "provider": "local",
        "telemetry_lost": True,
        "tasks_submitted": 0,
        "tasks_completed": 0,
        "tasks_failed": 0,
    }
    (run / "run.json").write_text(json.dumps(meta))
    stamp = "2026-01-01T00:00:01.000000Z"
    with open(run / "tasks.jsonl", "w") as f:
        for i in range(3):
            line = {"timestamp": stamp, "task": "t", "key": f"t-{i}"}
            f.write(json.dumps({**line, "event": "task_submitted"}) + "\n")
            f.write(json.dumps({**line, "event": "task_completed", "duration_s": 1.0}) + "\n")
    return run


def test_a_run_whose_telemetry_was_lost_is_counted_from_its_lines(tmp_path):
    root = tmp_path / "runs"
    run = _lost_run(root)
    assert report(load_run(run))["tasks"]["completed"] == 3
    assert report(load_run(run))["tasks"]["submitted"] == 3
    assert list_run_summaries(root)[0]["tasks_completed"] == 3
    assert trends(root).runs[0].tasks_completed == 3

    cli = CliRunner()
    shown = cli.invoke(main, ["report", "--last", "--runs-dir", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "  Completed:     3\n" in shown.output
    listed = cli.invoke(main, ["runs", "--runs-dir", str(root)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[1].split()[-2:] == ["3", "0"]  # tasks, failed
    history = cli.invoke(main, ["trends", "--runs-dir", str(root)])
    assert history.exit_code == 0, history.output
    row = next(line for line in history.output.splitlines() if line.startswith(LOST_RUN))
    assert row.split()[5:7] == ["3", "0"]  # done, failed


# --- the property: every reader agrees ------------------------------------------------------

STAMP = "2026-01-01T00:00:01.000000Z"
EVENT_OF = {"submitted": "task_submitted", "completed": "task_completed", "failed": "task_failed"}
BETA_STATE = {"task_submitted": "submitted", "task_completed": "succeeded", "task_failed": "failed"}
NON_FINITE = [b"NaN", b"nan", b"-Infinity", b"inf", b"1e999", b"-1e999", b"1" + b"0" * 400]
CORRUPT = [b"{not json", b"[1, 2]", b"42", b'{"event": "task_completed"} trailing', b"+nan"]


@dataclass
class Case:
    """A run directory to write and what its counts must read as."""

    name: str
    files: dict[str, bytes]
    lines: dict[str, int]  # what the files hold: task events and cache hits, by key
    expected: dict[str, int]  # what every reader must say
    beta: bool = False


def _task_line(event: str, i: int, beta: bool, number: bytes | None = None) -> bytes:
    """A task line; `number` is its duration's literal (by default a finite one)."""
    if beta:
        line = {"timestamp": "2026-01-01T00:00:01Z", "state": BETA_STATE[event], "task_id": f"t{i}"}
        line |= {"task_name": "sim", "event_type": "task"}
    else:
        line = {"timestamp": STAMP, "event": event, "task": "sim", "key": f"sim-{i}"}
    duration = number if number is not None else str(1.0 + i % 3).encode()
    return json.dumps(line).encode()[:-1] + b', "duration_s": ' + duration + b"}"


def _cache_line(hit: bool, beta: bool, number: bytes | None = None) -> bytes:
    if beta:
        return json.dumps({"timestamp": "2026-01-01T00:00:01Z", "hit": hit}).encode()
    line = {"timestamp": STAMP, "event": "cache_lookup", "function": "sim"}
    line["result"] = "hit" if hit else "miss"
    if not hit and number is not None:  # a miss that says why, beside misses that do not
        line |= {"miss_reason": "arguments", "miss_arguments": ["years"]}
    raw = json.dumps(line).encode()
    return raw if number is None else raw[:-1] + b', "saved_s": ' + number + b"}"


@st.composite
def jsonl(draw, make, choices, beta: bool):
    """(file content, count of lines by choice) of a file of whole, non-finite, corrupt and
    blank lines, its last line sometimes torn (no newline, cut short)."""
    raws, counted = [], {}
    for i in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["whole", "whole", "non-finite", "corrupt", "blank"]))
        choice = draw(st.sampled_from(choices))
        if kind == "corrupt":
            raws.append(draw(st.sampled_from(CORRUPT)))
            continue
        if kind == "blank":
            raws.append(b"  ")
            continue
        number = draw(st.sampled_from(NON_FINITE)) if kind == "non-finite" else None
        raws.append(make(choice, i, beta, number))
        counted[choice] = counted.get(choice, 0) + 1
    content = b"\n".join(raws) + (b"\n" if raws else b"")
    if draw(st.booleans()):  # a torn last line
        whole = make(choices[0], 99, beta, None)
        content += whole[: draw(st.integers(1, len(whole) - 1))]
    return content, counted


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


DEAD_PID = _dead_pid()
# Examples write many small files, synced as the package syncs them: in memory when it can.
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
HOST = socket.gethostname()
OURS = ["completed", "failed", "interrupted", "live", "crashed", "elsewhere", "missing", "corrupt"]


@st.composite
def cases(draw, day: int) -> Case:
    name = f"run-2026010{day}T000000Z-truth-0000000{day}"
    beta = draw(st.integers(0, 4)) == 0
    tasks, events = draw(
        jsonl(lambda e, i, b, n: _task_line(e, i, b, n), list(EVENT_OF.values()), beta)
    )
    cache, hits = draw(jsonl(lambda h, i, b, n: _cache_line(h, b, n), [True, False], beta))
    lines = {k: events.get(e, 0) for k, e in EVENT_OF.items()} | {"cache_hits": hits.get(True, 0)}

    def count(key: str):
        """run.json's count: the lines' (consistent), another, null, missing or not a count."""
        return draw(st.sampled_from([lines[key], lines[key], 7, None, ..., "5", -1, True]))

    files = {"tasks.jsonl": tasks, "cache.jsonl": cache}
    stated = {k: count(k) for k in EVENT_OF}
    if beta:
        status = draw(st.sampled_from(["succeeded", "failed", "running"]))
        meta = {"run_id": name, "started_at": "2026-01-01T00:00:00Z", "target_name": "hpc"}
        meta |= {"finished_at": "2026-01-01T00:00:50Z", "status": status}
        summary = {"total_tasks": stated["submitted"], "succeeded": stated["completed"]}
        summary |= {"failed": stated["failed"]}
        files["run.json"] = json.dumps(meta).encode()
        files["summary.json"] = json.dumps({k: v for k, v in summary.items() if v is not ...})
        files["summary.json"] = files["summary.json"].encode()
        final = status != "running"
    else:
        status = draw(st.sampled_from(OURS))
        lost = draw(st.booleans())
        meta = {"run_id": name, "status": status, "start_time": "2026-01-01T00:00:00.000000Z"}
        meta |= {"target": "local", "provider": "local", "telemetry_lost": lost}
        if status in ("completed", "failed", "interrupted"):
            meta |= {"end_time": "2026-01-01T00:01:00.000000Z", "duration_s": 60.0}
        else:
            pid = {"live": os.getpid(), "crashed": DEAD_PID}.get(status, 1)
            meta |= {
                "status": "running",
                "pid": pid,
                "host": "far" if status == "elsewhere" else HOST,
            }
        meta |= {f"tasks_{k}": v for k, v in stated.items() if v is not ...}
        if status != "missing":
            files["run.json"] = b"{corrupt" if status == "corrupt" else json.dumps(meta).encode()
        final = status in ("completed", "failed", "interrupted") and not lost
    expected = {
        k: stated[k] if final and type(stated[k]) is int and stated[k] >= 0 else lines[k]
        for k in EVENT_OF
    } | {"cache_hits": lines["cache_hits"]}
    return Case(name, files, lines, expected, beta)


def html_header_counts(run) -> dict:
    """The counts the HTML page shows: its header's cards, and the cache section's hits."""
    page = html_report(run)

    def card(label: str) -> int:
        found = re.search(rf'<span class="n">([^<]*)</span>{label}</div>', page)
        return int(found.group(1)) if found else 0

    return {
        "submitted": card("Submitted"),
        "completed": card("Completed"),
        "failed": card("Failed"),
        "cache_hits": card("Hits"),
    }


def _parquet_counts(folder: Path, beta: bool) -> dict:
    """Counts of the rows of `export --parquet`'s files."""
    counts = dict.fromkeys(EVENT_OF, 0) | {"cache_hits": 0}
    if (folder / "tasks.parquet").exists():
        column = (
            pq.read_table(folder / "tasks.parquet").to_pydict().get("state" if beta else "event")
        )
        for k, event in EVENT_OF.items():
            counts[k] = (column or []).count(BETA_STATE[event] if beta else event)
    if (folder / "cache.parquet").exists():
        rows = pq.read_table(folder / "cache.parquet").to_pylist()
        if beta:
            counts["cache_hits"] = sum(r.get("hit") is True for r in rows)
        else:
            counts["cache_hits"] = sum(
                r.get("event") == "cache_lookup" and r.get("result") == "hit" for r in rows
            )
    return counts


_DUCKDB = None  # one connection for every example: opening one costs more than the count


def _duckdb_counts(run: Path, beta: bool) -> dict:
    """A plain DuckDB count of the same JSONL files."""
    import duckdb

    def read(name: str, columns: str) -> str:
        return (
            f"read_json('{run / name}', format='newline_delimited', "
            f"columns={{{columns}}}, records=true, ignore_errors=true)"
        )

    global _DUCKDB
    _DUCKDB = con = _DUCKDB or duckdb.connect()
    field = "state" if beta else "event"
    tasks = {}
    if (run / "tasks.jsonl").stat().st_size:
        source = read("tasks.jsonl", f"'{field}': 'VARCHAR'")
        tasks = dict(con.execute(f"SELECT {field}, count(*) FROM {source} GROUP BY 1").fetchall())
    counts = {k: tasks.get(BETA_STATE[e] if beta else e, 0) for k, e in EVENT_OF.items()}
    if not (run / "cache.jsonl").stat().st_size:
        return counts | {"cache_hits": 0}
    if beta:
        source = read("cache.jsonl", "'hit': 'BOOLEAN'")
        sql = f"SELECT count(*) FILTER (WHERE hit) FROM {source}"
    else:
        source = read("cache.jsonl", "'event': 'VARCHAR', 'result': 'VARCHAR'")
        sql = (
            "SELECT count(*) FILTER (WHERE event = 'cache_lookup' AND result = 'hit') "
            f"FROM {source}"
        )
    return counts | {"cache_hits": con.execute(sql).fetchone()[0]}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(1, 9), min_size=1, max_size=2, unique=True).flatmap(
        lambda days: st.tuples(*(cases(day) for day in sorted(days)))
    )
)
def test_every_reader_gives_the_same_counts(runs):
    base = Path(tempfile.mkdtemp(prefix="scalable-truth-", dir=SCRATCH))
    try:
        root = base / "runs"
        paths = []
        for case in runs:
            path = root / case.name
            path.mkdir(parents=True)
            for name, content in case.files.items():
                (path / name).write_bytes(content)
            paths.append(path)

        rows = {row["run_id"]: row for row in list_run_summaries(root)}
        history = {r.run_id: r for r in trends(root).runs}
        loaded = [load_run(path) for path in paths]
        compared = compare(loaded[0], loaded[-1])
        for case, path, run in zip(runs, paths, loaded):
            want = case.expected
            summary = report(run)
            said = {
                "report": {k: summary["tasks"][k] for k in EVENT_OF}
                | {"cache_hits": summary["cache"]["hits"]},
                "html": html_header_counts(run),
            }
            row = rows[case.name]
            said["runs"] = {
                "submitted": row["tasks_submitted"],
                "completed": row["tasks_completed"],
                "failed": row["failures"],
                "cache_hits": want["cache_hits"],  # not a column of `scalable runs`
            }
            trend = history[case.name]
            said["trends"] = {
                "submitted": want["submitted"],  # not a column of `scalable trends`
                "completed": trend.tasks_completed,
                "failed": trend.tasks_failed,
                "cache_hits": trend.cache_hits,
            }
            # every miss has a reason, `unknown` when its line gives none
            assert sum(summary["cache"]["miss_reasons"].values()) == summary["cache"]["misses"]
            side = compared["a"] if path == paths[0] else compared["b"]
            said["compare"] = {k: side["tasks"][k] for k in EVENT_OF}
            said["compare"]["cache_hits"] = side["cache"]["hits"]
            for reader, counts in said.items():
                assert counts == want, (reader, case)

            # The files as they are: the export and DuckDB count lines, which is what every
            # reader says too when run.json's counts are not final.
            exported = base / "parquet" / case.name
            export_parquet(path, exported)
            assert _parquet_counts(exported, case.beta) == case.lines, case
            assert _duckdb_counts(path, case.beta) == case.lines, case
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_query_of_one_field_reads_lines_as_objects(tmp_path):
    """With one column DuckDB could take each whole line as its value: a line that is not
    an object is skipped, and an object's event is its field."""
    run = tmp_path / "runs" / LOST_RUN
    run.mkdir(parents=True)
    lines = ['"task_completed"', "42", '{"event": "task_completed"}', '{"event": "task_failed"}']
    (run / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    loaded = load_run(run)
    assert loaded.event_counts() == {"task_completed": 1, "task_failed": 1}
    assert report(loaded)["skipped_lines"] == {"tasks.jsonl": 2}


def test_one_number_rule():
    from scalable_otel.analysis.facts import finite_number

    assert [finite_number(v) for v in (2, 2.5, "1.5", " 3 ", "-1e3")] == [2.0, 2.5, 1.5, 3.0, -1e3]
    odd = [True, False, None, float("nan"), float("inf"), -float("inf"), 10**400, "1e999"]
    odd += ["nan", "inf", "1_0", "1,5", "", "x", [1], {"a": 1}, "9" * 5000]
    assert [finite_number(v) for v in odd] == [None] * len(odd)
