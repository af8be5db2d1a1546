"""exporters/collector/runs-to-logs.yaml, run as shipped by the real Collector: its
filelog receiver tails a runs directory while a run is being written (a session in a
subprocess, held on a file), picks up a run that starts after it, waits for a torn
line's end, and sends one log record per line, with the line's time, trace and span ids,
on to its file exporter and over OTLP/HTTP to a second Collector (otel-collector.yaml)."""

from __future__ import annotations

import calendar
import functools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from scalable_otel import ScalableSession
from scalable_otel.rundir import JSONL_FILES, iso
from tests import workloads
from tests.conftest import REPO, events, wait_for
from tests.integration.go_servers import (
    any_value,
    attributes,
    collector_complaints,
    log_records,
    start_shipped_collector,
)
from tests.integration.prometheus_servers import free_port

# the real servers built by servers/build (see .ci/run)
pytestmark = pytest.mark.go_servers

COLLECTOR = REPO / "exporters" / "collector"
RUNS_TO_LOGS = COLLECTOR / "runs-to-logs.yaml"
OTEL_COLLECTOR = COLLECTOR / "otel-collector.yaml"
SEVERITY = {"ERROR": 17, "WARN": 13, "INFO": 9}

# A run that completes 4 tasks, fails one and looks up the cache, then holds two tasks
# until `release` exists.
WORKFLOW = """
import sys
from pathlib import Path
from scalable_otel import ScalableSession
from tests.workloads import fail, hold_until, inc, simulate

release = sys.argv[1]
with ScalableSession(target="local", n_workers=2, threads_per_worker=1,
                     project="tailed") as session:
    Path(release + ".run").write_text(str(session.run_dir))
    session.gather(session.map(inc, range(4)))
    session.gather(session.map(simulate, [1, 1]))
    session.gather([session.submit(fail, 1)], errors="skip")
    session.gather(session.map(hold_until, [release] * 2, [1, 2]))
"""


def lines_of(run_dir: Path) -> list[tuple[str, str]]:
    """(file name, line) of every complete line of a run's event files."""
    lines = []
    for name in JSONL_FILES:
        path = run_dir / name
        if path.exists():
            text = path.read_bytes().decode()
            complete = text[: text.rfind("\n") + 1]
            lines += [(name, line) for line in complete.splitlines() if line.strip()]
    return lines


def received(records: list[dict]) -> Counter:
    """(file name, line) of each record, counted."""
    return Counter((r["attributes"]["log.file.name"], r["body"]) for r in records)


def plain(records: list[dict]) -> list[dict]:
    """Records with their attributes and body as plain values."""
    return [
        {**r, "attributes": attributes(r.get("attributes", [])), "body": any_value(r["body"])}
        for r in records
    ]


def unix_nanos(timestamp: str) -> int:
    """Nanoseconds since the epoch of a line's `timestamp`, exactly (no float)."""
    moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(moment.timetuple()) * 10**9 + moment.microsecond * 1000


@functools.cache
def severities() -> dict[str, list[str]]:
    """runs-to-logs.yaml's severity mapping: {level: [event, ...]}."""
    receiver = yaml.safe_load(RUNS_TO_LOGS.read_text())["receivers"]["file_log/runs"]
    [parser] = [op for op in receiver["operators"] if op["type"] == "json_parser"]
    return parser["severity"]["mapping"]


def severity(event: str) -> str:
    """The severity text runs-to-logs.yaml gives a line of this event."""
    [level] = [k for k, events in severities().items() if event in events]
    return level.upper()


def check_record(record: dict, file_name: str, line: str) -> None:
    fields = json.loads(line)
    assert record["body"] == line
    assert record["attributes"] == {**fields, "log.file.name": file_name}
    assert int(record["timeUnixNano"]) == unix_nanos(fields["timestamp"])
    assert record.get("traceId", "") == fields.get("trace_id", "")
    assert record.get("spanId", "") == fields.get("span_id", "")
    level = severity(fields["event"])
    assert (record["severityNumber"], record["severityText"]) == (SEVERITY[level], level)
    assert record["resource"] == {
        "scalable.run.id": fields["run_id"],
        "service.name": "scalable-otel",
    }


def test_every_event_has_a_severity():
    from scalable_otel import semconv as sc

    names = (
        sc.TASK_SUBMITTED, sc.TASK_STARTED, sc.TASK_COMPLETED, sc.TASK_FAILED,
        sc.TASK_CANCELLED, sc.WORKER_ADDED, sc.WORKER_REMOVED, sc.WORKER_CRASHED,
        sc.RESOURCE_SAMPLE, sc.TASK_RESOURCES, sc.CACHE_LOOKUP, sc.FINE_METRIC,
    )  # fmt: skip
    assert {name: severity(name) for name in names} == {
        **{name: "INFO" for name in names},
        sc.TASK_FAILED: "ERROR",
        sc.WORKER_CRASHED: "ERROR",
        sc.TASK_CANCELLED: "WARN",
    }
    receiver = yaml.safe_load(RUNS_TO_LOGS.read_text())["receivers"]["file_log/runs"]
    assert [Path(p).name for p in receiver["include"]] == list(JSONL_FILES)


@pytest.fixture
def held_run(tmp_path):
    """A session in a subprocess writing a run under tmp_path/runs, held on two tasks
    until `release()`; yields (run_dir, release)."""
    runs = tmp_path / "runs"
    release = tmp_path / "release"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCALABLE_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["SCALABLE_RUNS_DIR"] = str(runs)
    workflow = subprocess.Popen(
        [sys.executable, "-c", WORKFLOW, str(release)], cwd=tmp_path, env=env
    )
    marker = Path(f"{release}.run")
    run_dir = wait_for(lambda: marker.exists() and Path(marker.read_text()), timeout=120)

    def holding():
        started = events(run_dir, event="task_started")
        return len([e for e in started if e["task"] == "hold_until"]) == 2

    wait_for(holding, timeout=120)

    def finish():
        release.touch()
        assert workflow.wait(timeout=120) == 0

    yield run_dir, finish
    if workflow.poll() is None:
        release.touch()
        workflow.wait(timeout=120)


def downstream_env(ports: dict[str, int]) -> dict[str, str]:
    """otel-collector.yaml on free ports; no traces are sent, Jaeger's address is unused."""
    return {
        "SCALABLE_COLLECTOR_GRPC": f"127.0.0.1:{ports['grpc']}",
        "SCALABLE_COLLECTOR_HTTP": f"127.0.0.1:{ports['http']}",
        "SCALABLE_COLLECTOR_PROMETHEUS": f"127.0.0.1:{ports['prometheus']}",
        "SCALABLE_JAEGER_OTLP": f"127.0.0.1:{free_port()}",
    }


def retagged(line: str, run_id: str, **fields) -> str:
    """A line of another run, as the recorder writes it (compact JSON)."""
    return json.dumps({**json.loads(line), "run_id": run_id, **fields}, separators=(",", ":"))


def test_a_runs_directory_reaches_the_collector_as_log_records(
    held_run, tmp_path, project_dir, monkeypatch
):
    run_dir, finish = held_run
    runs = run_dir.parent
    out = tmp_path / "collector"
    downstream = start_shipped_collector(
        out / "downstream", [OTEL_COLLECTOR], downstream_env, ("grpc", "http", "prometheus")
    )
    logs = out / "tail" / "logs.jsonl"
    tail = start_shipped_collector(
        out / "tail",
        [RUNS_TO_LOGS],
        lambda ports: {
            "SCALABLE_RUNS_DIR": str(runs),
            "SCALABLE_LOGS_FILE": str(logs),
            "SCALABLE_LOGS_OTLP_ENDPOINT": downstream.url("http"),
        },
    )
    try:
        records = lambda: received(plain(log_records(logs)))  # noqa: E731

        # the held run, as far as it is written (its resource samples go on)
        wait_for(lambda: not Counter(lines_of(run_dir)) - records(), timeout=60)

        # a torn line waits for its end: ticks in another file show the Collector read
        # on for twice the default force_flush_period (500ms) after it was torn
        torn = runs / "run-torn"
        torn.mkdir()
        first, second = (
            retagged(line, "run-torn")
            for line in (run_dir / "tasks.jsonl").read_text().splitlines()[:2]
        )
        (torn / "tasks.jsonl").write_text(first + "\n" + second[:40])
        torn_at = time.time()
        [worker_line] = [line for name, line in lines_of(run_dir) if name == "workers.jsonl"][:1]
        while True:
            now = time.time()
            tick = retagged(worker_line, "run-torn", timestamp=iso(now))
            with open(torn / "workers.jsonl", "a") as ticks:
                ticks.write(tick + "\n")
            wait_for(lambda tick=tick: records()[("workers.jsonl", tick)], timeout=30)
            if now - torn_at > 1.0:
                break
        of_torn_tasks = [
            r
            for r in plain(log_records(logs))
            if r["resource"]["scalable.run.id"] == "run-torn"
            and r["attributes"]["log.file.name"] == "tasks.jsonl"
        ]
        assert [r["body"] for r in of_torn_tasks] == [first]
        with open(torn / "tasks.jsonl", "a") as rest:
            rest.write(second[40:] + "\n")

        # a run that starts after the Collector
        monkeypatch.setenv("SCALABLE_RUNS_DIR", str(runs))
        with ScalableSession(target="local", n_workers=1, project="later") as session:
            session.gather(session.map(workloads.inc, range(3)))
            session.gather([session.submit(workloads.fail, 1)], errors="skip")
        finish()

        expected = Counter(lines_of(run_dir) + lines_of(session.run_dir) + lines_of(torn))
        assert len({run for run in runs.iterdir()}) == 3
        assert all(n == 1 for n in expected.values())
        wait_for(lambda: not expected - records(), timeout=60)
        assert records() == expected  # nothing more: no torn or doubled line
        by_line = {
            (r["attributes"]["log.file.name"], r["body"]): r for r in plain(log_records(logs))
        }
        for file_name, line in expected:
            check_record(by_line[file_name, line], file_name, line)
        failures = [r for r in by_line.values() if r["attributes"]["event"] == "task_failed"]
        assert {r["attributes"]["log.file.name"] for r in failures} == {
            "tasks.jsonl",
            "failures.jsonl",
        }
        assert {r["severityNumber"] for r in failures} == {SEVERITY["ERROR"]}

        # the same records over OTLP/HTTP in the second Collector
        downstream_logs = downstream.folder / "otel-logs.jsonl"
        forwarded = lambda: received(plain(log_records(downstream_logs)))  # noqa: E731
        wait_for(lambda: not expected - forwarded(), timeout=60)
        assert forwarded() == expected
        again = {
            (r["attributes"]["log.file.name"], r["body"]): r
            for r in plain(log_records(downstream_logs))
        }
        for key, record in by_line.items():
            assert again[key] == record
        assert collector_complaints(tail) == []
    finally:
        tail.stop()
        downstream.stop()
