"""The real OpenTelemetry Collector misbehaving under a run that sends it spans, metrics
and log records: stopped mid-run and started again on the same ports, and answering so
slowly that it holds every request.

Stopped and started again: the run completes with a complete run directory, the SDK's
exporters deliver what comes after the restart, and run.json counts exactly what was
lost: the spans (log records) the Collector's file exporter holds plus
`telemetry_spans_dropped` (`telemetry_logs_dropped`) are the spans of traces.otlp.jsonl
(the log records the run directory's lines stand for). The exporters' timeout is cut to
0.5 s so that a batch sent while the Collector is down fails before it is back (with the
default 10 s the SDK's retries would carry a short outage, and nothing would be lost).

Slow: a Collector whose exporter forwards to a port that accepts connections and never
answers, with its sending queue and retries off, so its receiver holds each request until
that exporter gives up (HOLD_S). The workflow is not slowed and the session's close waits
for it no longer than CLOSE_WAIT_S: asserted against generous bounds far below HOLD_S,
and against a run of the same workflow without OTLP on the same cluster.
"""

from __future__ import annotations

import collections
import json
import time

import pytest
from distributed import LocalCluster

from scalable_otel import ExportOptions, ScalableSession
from scalable_otel.exporters.backends import CLOSE_WAIT_S
from tests import workloads
from tests.conftest import events
from tests.integration.go_servers import (
    otlp_receiver,
    read_otlp_json_lines,
    start_collector,
    wait_until,
)
from tests.integration.otlp_files import collector_to_files, log_records, span_ids
from tests.integration.test_otlp import SilentServer

# the real servers built by servers/build (see .ci/run)
pytestmark = pytest.mark.go_servers

PROTOCOLS = {"http/protobuf": "http", "grpc": "grpc"}
# the files whose every line is one log record (failures and workers: made of the line;
# the others: the recorder's events the line was written from)
LOG_FILES = ("failures.jsonl", "workers.jsonl", "cache.jsonl", "resources.jsonl", "metrics.jsonl")
HOLD_S = 120  # how long the slow Collector holds each request
SLACK_S = 10.0  # what a loaded 2-core machine may add to a close or a body, generously


def run_json(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def produced_log_records(run_dir) -> int:
    return sum(len(events(run_dir, name)) for name in LOG_FILES)


def produced_spans(run_dir) -> list[str]:
    return span_ids(run_dir / "traces.otlp.jsonl")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_collector_stopped_mid_run_and_started_again(
    protocol, tmp_path, project_dir, monkeypatch, capfd
):
    folder = tmp_path / "otelcol"
    folder.mkdir()
    collector = start_collector(folder, collector_to_files(folder))
    endpoint = collector.url(PROTOCOLS[protocol])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "500")  # fail a batch while it is down
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # send spans and logs often
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "200")
    exports = ExportOptions(otlp_endpoint=endpoint, otlp_protocol=protocol)
    try:
        with ScalableSession(
            target="local", n_workers=2, threads_per_worker=1, project="restart", exports=exports
        ) as session:
            before = session.map(workloads.sleep_then, range(4), seconds=0.1, pure=False)
            assert session.gather(before) == list(range(4))
            wait_until(
                lambda: span_ids(folder / "traces.json") and log_records(folder / "logs.json"),
                60,
                "spans and log records in the Collector before it stops",
            )
            collector.stop()
            capfd.readouterr()
            during = session.map(workloads.sleep_then, range(6), seconds=0.1, pure=False)
            assert session.gather(during) == list(range(6))
            # the telemetry process says once per signal that a send failed
            said = []
            wait_until(
                lambda: (
                    said.append(capfd.readouterr().err)
                    or all(f"OTLP {s} to" in "".join(said) for s in ("traces", "logs"))
                ),
                60,
                "a failed send of spans and of log records",
                lambda: "".join(said)[-2000:],
            )
            collector.restart()
            after = session.map(workloads.inc, range(5), pure=False)
            assert session.gather(after) == list(range(1, 6))
        run_dir = session.run_dir
        meta = run_json(run_dir)
        assert meta["status"] == "completed" and meta["tasks_completed"] == 15
        assert len(events(run_dir, event="task_completed")) == 15  # the run directory
        spans = produced_spans(run_dir)
        assert len(spans) == len(set(spans)) > 15
        lost_spans, lost_logs = meta["telemetry_spans_dropped"], meta["telemetry_logs_dropped"]
        assert lost_spans > 0 and lost_logs > 0, meta
        logs = produced_log_records(run_dir)

        def delivered():
            got_spans = span_ids(folder / "traces.json")
            got_logs = log_records(folder / "logs.json")
            return got_spans, got_logs, len(got_spans) + lost_spans, len(got_logs) + lost_logs

        def all_accounted_for():
            got = delivered()
            return got if got[2] >= len(spans) and got[3] >= logs else None

        got_spans, got_logs, *_ = wait_until(
            all_accounted_for,
            60,
            "delivered and counted lost spans and log records adding up to the run's",
            lambda: f"(spans {delivered()[2]} of {len(spans)}, logs {delivered()[3]} of {logs})",
        )
        # delivered + counted lost == produced, and nothing delivered twice
        assert len(got_spans) + lost_spans == len(spans)
        assert len(got_logs) + lost_logs == logs
        assert collections.Counter(got_spans) <= collections.Counter(spans)
        # what came after the restart was delivered: the last tasks' spans, the run's span
        last = {line["span_id"] for line in events(run_dir, event="task_completed")[-5:]}
        assert last <= set(got_spans)
        assert meta["trace_id"] and any(
            r["eventName"] == "worker_removed" for r in got_logs
        )  # the close's records
        assert read_otlp_json_lines(folder / "metrics.json")
        print(
            f"\n{protocol}: spans {len(got_spans)} delivered + {lost_spans} lost = {len(spans)}; "
            f"log records {len(got_logs)} delivered + {lost_logs} lost = {logs}"
        )
    finally:
        collector.stop()


def slow_collector(sink_port: int):
    """A Collector config forwarding every signal to a port that never answers, holding
    each request it receives until its exporter gives up after HOLD_S."""

    def config(ports: dict[str, int]) -> dict:
        exporter = {
            "endpoint": f"http://127.0.0.1:{sink_port}",
            "timeout": f"{HOLD_S}s",
            "sending_queue": {"enabled": False},
            "retry_on_failure": {"enabled": False},
        }
        return {
            "receivers": otlp_receiver(ports),
            "exporters": {"otlphttp": exporter},
            "service": {
                "pipelines": {
                    signal: {"receivers": ["otlp"], "exporters": ["otlphttp"]}
                    for signal in ("traces", "metrics", "logs")
                }
            },
        }

    return config


def timed_run(address: str, exports=None) -> dict:
    """One run of the workflow on a cluster of its own: seconds of its body and close."""
    with ScalableSession(address, project="slow", exports=exports) as session:
        body = time.monotonic()
        results = session.gather(
            session.map(workloads.sleep_then, range(10), seconds=0.3, pure=False)
        )
        closing = time.monotonic()
    ended = time.monotonic()
    assert results == list(range(10))
    return {"run_dir": session.run_dir, "body": closing - body, "close": ended - closing}


def test_a_line_the_collector_is_still_writing_is_read_once_it_is_whole(tmp_path):
    """The file exporter writes a line per request through a buffer flushed at any byte:
    a read can end in a torn line (seen at 4,096 bytes), or in a whole request whose
    newline is still to come."""
    path = tmp_path / "traces.json"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"resourceSpans": [{"reso')
    assert read_otlp_json_lines(path) == [{"a": 1}, {"b": 2}]
    path.write_bytes(path.read_bytes() + b'urce": {}}]}')
    assert len(read_otlp_json_lines(path)) == 3
    path.write_bytes(path.read_bytes() + b"\n")
    assert len(read_otlp_json_lines(path)) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_collector_that_answers_slowly(protocol, tmp_path, project_dir, monkeypatch):
    sink = SilentServer()
    folder = tmp_path / "otelcol"
    collector = start_collector(folder, slow_collector(sink.port))
    endpoint = collector.url(PROTOCOLS[protocol])
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(HOLD_S * 2 * 1000))  # outwait it
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")  # send while the tasks run
    monkeypatch.setenv("OTEL_BLRP_SCHEDULE_DELAY", "200")
    exports = ExportOptions(otlp_endpoint=endpoint, otlp_protocol=protocol)
    try:
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            timed_run(cluster.scheduler_address)  # warm: imports, first connections
            base = timed_run(cluster.scheduler_address)
            slow = timed_run(cluster.scheduler_address, exports)
        # the Collector got the run's requests and was holding them, forwarded to the sink
        assert sink.conns, collector.log_tail()
        assert collector.process.poll() is None
        summary = "body {:.2f}s -> {:.2f}s, close {:.2f}s -> {:.2f}s".format(
            base["body"], slow["body"], base["close"], slow["close"]
        )
        # the workflow: not slowed by a backend holding every request for HOLD_S
        assert slow["body"] <= base["body"] + SLACK_S < HOLD_S, summary
        # the close: the promised wait once, not the Collector's HOLD_S
        assert slow["close"] <= base["close"] + CLOSE_WAIT_S + SLACK_S < HOLD_S, summary
        meta = run_json(slow["run_dir"])
        assert meta["status"] == "completed" and meta["tasks_completed"] == 10
        assert len(events(slow["run_dir"], event="task_completed")) == 10
        # nothing was confirmed: every span and log record is counted as not delivered
        assert meta["telemetry_spans_dropped"] == len(produced_spans(slow["run_dir"]))
        assert meta["telemetry_logs_dropped"] == produced_log_records(slow["run_dir"])
        print(f"\n{protocol}: {summary}")
    finally:
        collector.stop()
        sink.close()
