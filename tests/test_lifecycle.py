"""The recorder fed with lifecycle records directly: cases a real cluster produces only
by timing (which worker's batch arrives first)."""

import logging

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from scalable_otel import semconv as sc
from scalable_otel.ids import execution_span_id
from scalable_otel.recording import RunRecording
from tests.conftest import events, unit_run_config

W0, W1 = "tcp://127.0.0.1:40000", "tcp://127.0.0.1:40001"


@pytest.fixture
def recording(tmp_path):
    exporter = InMemorySpanExporter()
    rec = RunRecording(unit_run_config(tmp_path), span_processors=[SimpleSpanProcessor(exporter)])
    for address, name in ((W0, "0"), (W1, "1")):
        rec.recorder.handle([("worker_added", 100.0, address, name, 1, 2**30, "h", 1, None)])
    yield rec, exporter, tmp_path
    rec.finish(200.0, None)


def usage(key, start, stop, cpu, peak, name, run_id):
    return {"name": name, "usage": [(key, start, stop, cpu, peak, False, run_id)]}


def spans_named(exporter, name):
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_late_measurement_of_a_retried_attempt_is_not_taken_for_the_last(recording):
    rec, exporter, run_dir = recording
    key = "sim-1"
    rec.handle(
        [
            ("submit", 101.0, key, "sim", (), None),
            ("processing", 101.0, key, W1, 1),
            ("worker_batch", 101.1, W1, {"name": "1", "started": [(key, 101.0, 1)]}),
            ("requeue", 101.2, key, "waiting", "task-erred-1", 1),  # attempt 1 raised: retried
            ("processing", 101.2, key, W0, 2),
            ("done", 101.4, key, W0, 101.3, 101.35, 24, "float", 2),  # attempt 2, on worker 0
            # worker 1 measured attempt 1 and sends it only now
            ("worker_batch", 101.5, W1, usage(key, 101.0, 101.12, 0.1, 300e6, "1", 1)),
        ]
    )
    # the task's line is written when its result is in, without waiting for a measurement
    (task_span,) = spans_named(exporter, "sim")
    (completed,) = events(run_dir, event="task_completed")
    assert completed["attempt"] == 2 and completed["reason"] == "retry"
    assert sc.TASK_PEAK_MEMORY not in task_span.attributes
    # attempt 1's measurement is attempt 1's; attempt 2's span waits for its own
    (first,) = spans_named(exporter, "execute")
    assert first.attributes[sc.TASK_ATTEMPT] == 1 and first.attributes[sc.WORKER] == W1
    assert first.attributes[sc.TASK_PEAK_MEMORY] == 300_000_000
    rec.handle([("worker_batch", 101.6, W0, usage(key, 101.3, 101.35, 0.04, 200e6, "0", 2))])
    first, second = spans_named(exporter, "execute")
    assert second.attributes[sc.TASK_ATTEMPT] == 2 and second.attributes[sc.WORKER] == W0
    assert second.attributes[sc.WORKER_NAME] == "0"
    assert second.attributes[sc.TASK_PEAK_MEMORY] == 200_000_000
    assert second.end_time == int(101.35e9)  # the execution's own end, not the measurement's
    rec.finish(102.0, None)
    lines = events(run_dir, "resources.jsonl", "task_resources")
    by_worker = {line["worker"]: line for line in lines}
    assert by_worker[W0]["worker_name"] == "0" and by_worker[W0]["wall_s"] == 0.05
    assert by_worker[W1]["worker_name"] == "1" and by_worker[W1]["wall_s"] == 0.12
    assert (by_worker[W1]["attempt"], by_worker[W0]["attempt"]) == (1, 2)
    assert {line["span_id"] for line in lines} == {completed["span_id"]}


def test_an_earlier_attempt_on_the_same_worker_is_not_taken_for_the_last(recording):
    rec, exporter, run_dir = recording
    key = "sim-2"
    rec.handle(
        [
            ("submit", 101.0, key, "sim", (), None),
            ("processing", 101.0, key, W0, 1),
            ("requeue", 101.2, key, "waiting", "task-erred-1", 1),
            ("processing", 101.2, key, W0, 2),
            ("done", 101.4, key, W0, 101.3, 101.35, 24, "float", 2),
            # one batch with both attempts' measurements, the earlier first
            (
                "worker_batch",
                101.5,
                W0,
                {
                    "name": "0",
                    "usage": [
                        (key, 101.0, 101.1, 0.1, 300e6, False, 1),
                        (key, 101.3, 101.35, 0.04, 200e6, False, 2),
                    ],
                },
            ),
        ]
    )
    by_attempt = {s.attributes[sc.TASK_ATTEMPT]: s for s in spans_named(exporter, "execute")}
    assert by_attempt[1].attributes[sc.TASK_PEAK_MEMORY] == 300_000_000
    assert by_attempt[2].attributes[sc.TASK_PEAK_MEMORY] == 200_000_000
    assert by_attempt[2].attributes[sc.TASK_WALL] == 0.05


def test_records_the_recorder_cannot_handle_are_counted_and_warned_about_once(recording, caplog):
    rec, exporter, run_dir = recording
    recorder = rec.recorder
    caplog.set_level(logging.DEBUG, logger="scalable_otel")
    recorder.handle(
        [
            ("no_such_kind", 101.0, "x"),
            ("submit", 101.0, "sim-3", "sim", (), None, "one field too many"),
            ("ready", 101.0),  # one field too few
            ("worker_batch", 101.1, W0, None),  # its handler raises on a payload of None
            ("submit", 101.2, "sim-4", "sim", (), None),
            ("done", 101.4, "sim-4", W0, 101.3, 101.35, 24, "float", 1),
        ]
    )
    recorder.handle([("no_such_kind", 101.5)])
    assert recorder.unhandled == 5
    assert recorder.completed == 1  # the records around the bad ones were handled
    (warning,) = [r for r in caplog.records if "not handled" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "'no_such_kind'" in warning.getMessage() and "unknown kind" in warning.getMessage()
    assert "telemetry_records_unhandled" in warning.getMessage()
    assert "\n" not in warning.getMessage()
    assert rec.finish(102.0, None)["telemetry_records_unhandled"] == 5


def test_a_record_of_the_wrong_length_is_named_in_the_warning(recording, caplog):
    rec, exporter, run_dir = recording
    rec.recorder.handle([("done", 101.4, "sim-5", W0)])
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'done'" in warning.getMessage() and "3 fields where 8 are declared" in (
        warning.getMessage()
    )
    assert rec.recorder.unhandled == 1


def test_an_attempt_counts_from_its_dispatch_and_each_has_its_own_span(recording):
    rec, exporter, run_dir = recording
    key = "sim-6"
    rec.handle(
        [
            ("submit", 101.0, key, "sim", (), None),
            # sent to worker 1, which dies before its plugin reports the start
            ("processing", 101.0, key, W1, 11),
            ("requeue", 101.1, key, "released", "handle-worker-cleanup-101.1", 11),
            ("processing", 101.2, key, W0, 12),
            # released for a reason Dask names no worker for, and sent out again
            ("processing", 101.3, key, W0, 13),
            ("done", 101.5, key, W0, 101.35, 101.45, 24, "float", 13),
        ]
    )
    started = events(run_dir, event="task_started")
    assert [(e["attempt"], e["reason"], e["worker"]) for e in started] == [
        (1, None, W1),
        (2, "retry", W0),
        (3, "retry", W0),
    ]
    # an attempt never reported started began when the scheduler sent it out
    assert [e["timestamp"][-10:] for e in started[:2]] == ["41.000000Z", "41.200000Z"]
    ids = {execution_span_id(rec.recorder._run_id, key, n) for n in (11, 12, 13)}
    assert {int(e["span_id"], 16) for e in started} == ids
    (done,) = events(run_dir, event="task_completed")
    assert (done["attempt"], done["reason"]) == (3, "retry")
    (task,) = spans_named(exporter, "sim")
    lost = [e for e in task.events if e.name == sc.EVENT_ATTEMPT_LOST]
    assert [e.attributes["reason"] for e in lost] == ["worker lost", "rescheduled"]


def test_a_sampler_that_drops_every_span_leaves_the_run_directory_whole(tmp_path, monkeypatch):
    """Sampling decides what tracing backends get, never what the run directory holds."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    exporter = InMemorySpanExporter()
    config = unit_run_config(tmp_path, exports={"otlp_json_file": True})
    rec = RunRecording(config, span_processors=[SimpleSpanProcessor(exporter)])
    rec.handle(
        [
            ("worker_added", 100.0, W0, "0", 1, 2**30, "h", 1, None),
            ("submit", 101.0, "sim-1", "sim", (), None),
            ("processing", 101.0, "sim-1", W0, 1),
            ("done", 101.4, "sim-1", W0, 101.3, 101.35, 24, "float", 1),
            ("worker_batch", 101.5, W0, usage("sim-1", 101.3, 101.35, 0.01, 1e6, "0", 1)),
        ]
    )
    summary = rec.finish(102.0, None)
    assert summary["tasks_completed"] == 1
    assert [e["event"] for e in events(tmp_path)] == [
        "task_submitted",
        "task_started",
        "task_completed",
    ]
    assert [e["event"] for e in events(tmp_path, "resources.jsonl")] == ["task_resources"]
    assert [e["event"] for e in events(tmp_path, "workers.jsonl")] == [
        "worker_added",
        "worker_removed",
    ]
    assert exporter.get_finished_spans() == ()  # the exporter checks the flag, as the SDK's do
    assert (tmp_path / "traces.otlp.jsonl").read_bytes() == b""
