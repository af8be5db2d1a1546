"""The run's log records over OTLP, HTTP and gRPC, to the real OpenTelemetry Collector,
whose `file` exporter writes what it received: each failures.jsonl and workers.jsonl line
is one record with the line's fields, ids and time; each cache lookup, resource sample and
fine metric of the run directory is one record too."""

from __future__ import annotations

import collections
import json
import os
import signal
import time

import pytest

from scalable_otel import ExportOptions, ScalableSession
from scalable_otel.exporters.line_logs import log_record_fields
from tests import workloads
from tests.conftest import events, wait_for
from tests.integration.go_servers import start_collector, wait_until
from tests.integration.otlp_files import collector_to_files, log_records

# the real servers built by servers/build (see .ci/run)
pytestmark = pytest.mark.go_servers

LINE_FILES = ("failures.jsonl", "workers.jsonl")
EVENT_FILES = ("cache.jsonl", "resources.jsonl", "metrics.jsonl")


@pytest.fixture
def collector(tmp_path):
    folder = tmp_path / "otelcol"
    folder.mkdir()
    server = start_collector(folder, collector_to_files(folder))
    yield server
    server.stop()


def a_run_with_a_failure_a_crash_and_cache_lookups(exports=None):
    with ScalableSession(
        target="local", n_workers=2, threads_per_worker=1, project="otlp-logs", exports=exports
    ) as session:
        failed = session.submit(workloads.fail, 3)
        assert isinstance(failed.exception(timeout=60), ValueError)
        victim = wait_for(lambda: events(session.run_dir, "workers.jsonl", "worker_added"))[0]
        os.kill(victim["pid"], signal.SIGKILL)  # its nanny starts another worker
        wait_for(lambda: events(session.run_dir, "workers.jsonl", "worker_crashed"), 60)
        assert session.gather(session.submit(workloads.inc, 1)) == 2  # the run goes on
        # after the crash: a killed worker's last records (its lookups) may be lost with it
        scenario = time.time_ns()  # never looked up before, whatever the cache holds
        assert session.gather(session.submit(workloads.simulate, scenario)) == scenario * 10
        again = session.submit(workloads.simulate, scenario, pure=False)
        assert session.gather(again) == scenario * 10  # a hit
    return session.run_dir


def check_the_collector_got_the_run(run_dir, logs_file, endpoint):
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["telemetry_logs_dropped"] == 0
    assert endpoint in meta["exporters"]["otlp_logs"]
    lines = {name: events(run_dir, name) for name in LINE_FILES + EVENT_FILES}
    produced = sum(len(file_lines) for file_lines in lines.values())
    records = wait_until(
        lambda: (found := log_records(logs_file)) and len(found) >= produced and found,
        60,
        f"{produced} log records in the Collector's file",
    )
    assert len(records) == produced  # one record a line, none twice
    # every failures.jsonl and workers.jsonl line is one record made of it
    by_line = {(r["eventName"], r["spanId"]): r for r in records if r["eventName"] in _LINE_EVENTS}
    crashed = lines["workers.jsonl"][0]
    assert [line["event"] for line in lines["failures.jsonl"]] == ["task_failed"]
    assert "worker_crashed" in {line["event"] for line in lines["workers.jsonl"]}, crashed
    for line in lines["failures.jsonl"] + lines["workers.jsonl"]:
        record = by_line.pop((line["event"], line["span_id"]))
        made = log_record_fields(line)
        attributes = dict(line)
        if line["event"] == "task_failed":
            attributes.update(
                {
                    "exception.type": line["error_type"],
                    "exception.message": line["error_message"],
                    "exception.stacktrace": line["traceback"],
                }
            )
            assert 'raise ValueError(f"bad input {x}")' in attributes["exception.stacktrace"]
        assert record["attributes"] == attributes
        assert (record["traceId"], record["spanId"]) == (line["trace_id"], line["span_id"])
        assert int(record["timeUnixNano"]) == made["timestamp"]  # the line's timestamp
        assert record["severityText"] == made["severity_text"]
        assert record["severityNumber"] == made["severity_number"].value
        assert record["body"] == {"stringValue": made["body"]}
        assert record["resource"]["scalable.run.id"] == meta["run_id"]
    assert by_line == {}
    severities = collections.Counter(
        r["severityText"] for r in records if r["eventName"] in _LINE_EVENTS
    )
    assert severities["ERROR"] == 1 and severities["WARN"] >= 1
    # the recorder's events: one record per line of their files, the cache's by result
    # (with the same trace and span ids: those measured outside a task's span have none)
    got = collections.Counter(
        (r["eventName"], r.get("traceId"), r.get("spanId"))
        for r in records
        if r["eventName"] not in _LINE_EVENTS
    )
    written = collections.Counter(
        (e["event"], e.get("trace_id"), e.get("span_id"))
        for name in EVENT_FILES
        for e in lines[name]
    )
    assert got == written
    cache = collections.Counter(
        r["attributes"]["result"] for r in records if r["eventName"] == "cache_lookup"
    )
    assert cache == collections.Counter(e["result"] for e in lines["cache.jsonl"])
    assert cache == {"miss": 1, "hit": 1}
    assert cache["hit"] == meta["cache_hits"] and cache["miss"] == meta["cache_misses"]
    assert {r.get("traceId") for r in records} <= {meta["trace_id"], None}


_LINE_EVENTS = {"task_failed", "worker_added", "worker_removed", "worker_crashed"}


def test_log_records_over_otlp_http_from_session_options(collector, project_dir):
    endpoint = collector.url("http")
    exports = ExportOptions(
        otlp_endpoint=endpoint,
        otlp_protocol="http/protobuf",
        traces_exporter="none",
        metrics_exporter="none",
    )
    run_dir = a_run_with_a_failure_a_crash_and_cache_lookups(exports)
    check_the_collector_got_the_run(run_dir, collector.folder / "logs.json", endpoint)


def test_log_records_over_otlp_grpc_from_the_logs_variables(collector, project_dir, monkeypatch):
    endpoint = collector.url("grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "x-tenant=runs")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "5000")
    run_dir = a_run_with_a_failure_a_crash_and_cache_lookups()
    meta = json.loads((run_dir / "run.json").read_text())
    assert set(meta["exporters"]) == {"otlp_logs"}  # the logs variables set logs only
    check_the_collector_got_the_run(run_dir, collector.folder / "logs.json", endpoint)
