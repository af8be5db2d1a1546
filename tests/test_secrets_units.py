"""The pieces that keep secrets out of what a run stores and prints, one by one (the
whole run: tests/test_secrets_everywhere.py)."""

import logging

import pytest

from scalable_otel.analysis.replay import ReplayError, replay
from scalable_otel.args import REDACTED, Redaction
from scalable_otel.exporters.settings import HTTP, ExportOptions, OtlpTarget, export_settings
from scalable_otel.instrumentation.worker_logs import scrub_worker_logs
from scalable_otel.span_records import scrubbed


def test_run_json_describes_exporters_without_credentials_or_headers():
    settings = export_settings(
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ann:pw-1@otel:4318",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=hdr-2",
            "SCALABLE_PUSHGATEWAY_URL": "http://pg:pw-3@gateway:9091",
        }
    )
    described = settings.describe()
    assert described == {
        "otlp_traces": "http://otel:4318/v1/traces (http/protobuf)",
        "otlp_metrics": "http://otel:4318/v1/metrics (http/protobuf)",
        "otlp_logs": "http://otel:4318/v1/logs (http/protobuf)",
        "pushgateway": "http://gateway:9091",
    }
    assert settings.otlp_traces.endpoint == "http://ann:pw-1@otel:4318/v1/traces"  # still used
    assert "hdr-2" not in repr(OtlpTarget("http://otel:4318", headers={"x-api-key": "hdr-2"}))


def test_exception_events_and_status_of_a_span_from_a_task_are_scrubbed():
    record = {
        "name": "login password=kept-as-named",
        "attributes": {"note": "token=user-set"},
        "events": [
            ["exception", 1, {"exception.message": "token=s3cr3t", "exception.escaped": False}],
            ["retry", 2, {"why": "token=user-event"}],
        ],
        "status": [2, "PermissionError: password=s3cr3t"],
    }
    clean = scrubbed(record, Redaction().scrub)
    assert clean["events"][0][2] == {
        "exception.message": f"token={REDACTED}",
        "exception.escaped": False,
    }
    assert clean["status"] == [2, f"PermissionError: password={REDACTED}"]
    # what user code names and sets itself is the user's choice
    assert clean["name"] == record["name"] and clean["attributes"] == record["attributes"]
    assert clean["events"][1] == record["events"][1]
    assert scrubbed({**record, "status": [0, None]}, Redaction().scrub)["status"] == [0, None]


def test_dask_worker_failure_logs_are_scrubbed_while_a_run_is_attached(caplog):
    dask_logger = logging.getLogger("distributed.worker")
    undo = scrub_worker_logs(Redaction(values=[r"MRN-\d{6}"]))
    try:
        with caplog.at_level(logging.ERROR, logger="distributed.worker"):
            dask_logger.error("Compute Failed\nException: %r", "ValueError('token=abc123')")
            try:
                raise ValueError("patient MRN-123456")
            except ValueError:
                dask_logger.exception("failed")
    finally:
        undo()
    text = caplog.text
    assert "abc123" not in text and "MRN-123456" not in text
    assert f"token={REDACTED}" in text and f"patient {REDACTED}" in text
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="distributed.worker"):
        dask_logger.error("token=abc123")
    assert "token=abc123" in caplog.text  # undone: Dask's logs as they were


def test_export_options_and_settings_show_no_credentials_or_headers():
    options = ExportOptions(
        otlp_endpoint="http://ann:pw-1@otel:4318",
        otlp_headers={"x-api-key": "hdr-2"},
        pushgateway_url="http://pg:pw-3@gateway:9091",
    )
    settings = export_settings(options, env={})
    shown = repr(options) + repr(settings) + str(settings.otlp_traces)
    for secret in ("pw-1", "hdr-2", "pw-3"):
        assert secret not in shown
    assert "http://otel:4318/v1/traces" in shown and "http://gateway:9091" in shown


def test_replay_names_its_endpoint_without_credentials(tmp_path):
    with pytest.raises(ReplayError) as refused:
        replay(tmp_path, endpoint="http://ann:pw-4@127.0.0.1:9/v1/traces", protocol=HTTP)
    message = str(refused.value)
    assert "http://127.0.0.1:9/v1/traces" in message and "pw-4" not in message
