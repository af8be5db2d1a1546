"""The OTLP logs target from ExportOptions and OpenTelemetry's variables, and the log
record made of a failures.jsonl or workers.jsonl line (or counted when it cannot be)."""

import pytest
from opentelemetry.sdk._logs import LogRecordProcessor

from scalable_otel import ExportOptions
from scalable_otel import semconv as sc
from scalable_otel.exporters.line_logs import log_record_fields
from scalable_otel.exporters.settings import ExportSettings, SettingsError, export_settings
from scalable_otel.rundir import FAILURES
from scalable_otel.telemetry import build_pipeline


def test_no_endpoint_no_logs():
    assert export_settings(env={}).otlp_logs is None


def test_the_general_endpoint_turns_logs_on_like_traces():
    settings = export_settings(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/"})
    assert settings.otlp_logs.endpoint == "http://otel:4318/v1/logs"
    assert settings.otlp_logs.protocol == "http/protobuf"
    assert settings.otlp_traces.endpoint == "http://otel:4318/v1/traces"


def test_the_logs_variables_are_honoured_and_only_for_logs():
    env = {
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://logs:4317",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": "x-api-key=abc%20d",
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "9000",
    }
    settings = export_settings(env=env)
    logs = settings.otlp_logs
    assert (logs.endpoint, logs.protocol, logs.headers, logs.timeout_s) == (
        "http://logs:4317",
        "grpc",
        {"x-api-key": "abc d"},
        2.5,
    )
    assert settings.otlp_traces is None and settings.otlp_metrics is None
    assert settings.describe() == {"otlp_logs": "http://logs:4317 (grpc)"}
    assert "abc" not in repr(settings)


def test_the_logs_exporter_variable_turns_logs_on_or_off():
    general = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}
    off = export_settings(env={**general, "OTEL_LOGS_EXPORTER": "none"})
    assert off.otlp_logs is None and off.otlp_traces is not None
    on = export_settings(env={"OTEL_LOGS_EXPORTER": "otlp"})
    assert on.otlp_logs.endpoint == "http://localhost:4318/v1/logs"
    assert on.otlp_traces is None
    given = export_settings(ExportOptions(logs_exporter="none"), env=general)
    assert given.otlp_logs is None


def test_the_settings_cross_to_the_telemetry_process():
    settings = export_settings(env={"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://l:1/v1/logs"})
    again = ExportSettings.from_dict(settings.to_dict())
    assert again.otlp_logs == settings.otlp_logs


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OTEL_LOGS_EXPORTER": "kafka"}, "OTEL_LOGS_EXPORTER: unknown exporter kafka"),
        (
            {"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grcp"},
            "OTLP protocol 'grcp' is not supported",
        ),
        (
            {"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "2s"},
            "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT or OTEL_EXPORTER_OTLP_TIMEOUT must be milliseconds",
        ),
    ],
)
def test_a_bad_logs_variable_is_named(env, message):
    with pytest.raises(SettingsError, match=message):
        export_settings(env=env)


def test_a_bad_logs_option_fails_where_it_is_written():
    with pytest.raises(SettingsError, match=r"ExportOptions\(logs_exporter=...\)"):
        ExportOptions(logs_exporter="file")
    with pytest.raises(TypeError, match="logs_exporter"):
        ExportOptions(logs_exporter=1)


FAILURE = {
    "schema_version": 1,
    "timestamp": "2026-05-20T03:52:00.123456Z",
    "event": "task_failed",
    "run_id": "run-x",
    "task": "boom",
    "worker": "tcp://127.0.0.1:4000",
    "attempt": 2,
    "error_type": "ValueError",
    "error_message": "bad token=[redacted]",
    "traceback": "Traceback ...\nValueError: bad token=[redacted]\n",
    "group_path": None,
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
}


def test_a_failure_line_is_an_error_record_with_exception_attributes():
    from opentelemetry import trace

    fields = log_record_fields(FAILURE)
    assert fields["severity_text"] == "ERROR" and fields["event_name"] == "task_failed"
    assert fields["timestamp"] == 1779249120123456000
    assert fields["attributes"] == {
        **FAILURE,
        "exception.type": "ValueError",
        "exception.message": "bad token=[redacted]",
        "exception.stacktrace": FAILURE["traceback"],
    }
    assert fields["body"] == (
        "task boom failed on tcp://127.0.0.1:4000 (attempt 2): ValueError: bad token=[redacted]"
    )
    context = trace.get_current_span(fields["context"]).get_span_context()
    assert (f"{context.trace_id:032x}", f"{context.span_id:016x}") == (
        FAILURE["trace_id"],
        FAILURE["span_id"],
    )


@pytest.mark.parametrize(
    "event, severity, body",
    [
        ("worker_added", "INFO", "worker tcp://w:1 added"),
        ("worker_removed", "INFO", "worker tcp://w:1 removed (session closed)"),
        (
            "worker_crashed",
            "WARN",
            "worker tcp://w:1 crashed (session closed); 3 tasks lost with it",
        ),
    ],
)
def test_worker_lines_are_info_or_warn_records(event, severity, body):
    line = {
        "timestamp": "2026-05-20T03:52:00Z",
        "event": event,
        "worker": "tcp://w:1",
        "reason": None if event == "worker_added" else "session closed",
        "lost_tasks": 3,
    }
    fields = log_record_fields(line)
    assert (fields["severity_text"], fields["body"]) == (severity, body)
    assert fields["attributes"] == line and fields["context"] is None


class _Refusing(LogRecordProcessor):
    """A log processor that fails on every record but the first `take`."""

    def __init__(self, take: int):
        self.take, self.seen = take, 0

    def on_emit(self, log_record):
        self.seen += 1
        if self.seen > self.take:
            raise RuntimeError("refused")

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30000):
        return True


def test_lines_whose_log_record_could_not_be_made_are_counted_as_dropped(tmp_path):
    """A failures.jsonl line is written whatever its log record does, and a record that
    could not be made counts in run.json's telemetry_logs_dropped."""
    pipeline = build_pipeline(
        tmp_path, "run-x", project="p", flush_interval=0.05, log_processors=[_Refusing(1)]
    )
    for n in range(3):
        pipeline.writer.append(FAILURES, {"event": sc.TASK_FAILED, "task": "t", "key": f"t-{n}"})
    pipeline.shutdown()
    assert len((tmp_path / FAILURES).read_bytes().splitlines()) == 3
    assert pipeline.dropped_logs() == 2
