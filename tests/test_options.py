"""The session's option objects: checked when built, defaulting from the environment, and
the flat keywords of 0.1 answered with the option object to use."""

import re

import pytest

import scalable_otel
from scalable_otel import (
    ClusterOptions,
    DaskInstrumentor,
    ExportOptions,
    PipelineOptions,
    RecordingOptions,
    Redaction,
    ScalableSession,
)
from scalable_otel.exporters.settings import export_settings
from scalable_otel.options import MOVED_KEYWORDS

OPTION_CLASSES = (ClusterOptions, ExportOptions, PipelineOptions, RecordingOptions, Redaction)


def test_the_option_classes_are_public():
    for cls in OPTION_CLASSES:
        assert cls.__name__ in scalable_otel.__all__
        assert getattr(scalable_otel, cls.__name__) is cls


def test_a_session_takes_twelve_keywords_and_one_object_per_group(project_dir):
    session = ScalableSession(
        "local",
        n_workers=3,
        threads_per_worker=2,
        project="opts",
        cluster=ClusterOptions(memory_limit="1GiB", extra={"silence_logs": 40}),
        exports=ExportOptions(prometheus_port=0, otlp_file=False),
        redaction=Redaction(names=["patient_id"]),
        pipeline=PipelineOptions(span_processors=[object()]),
        recording=RecordingOptions(recorder="thread", flush_interval=0.5),
    )
    assert (session.n_workers, session.threads_per_worker) == (3, 2)
    assert session.memory_limit == "1GiB"
    assert session.cluster_options.extra == {"silence_logs": 40}
    assert session._exports.prometheus_port == 0 and session._exports.otlp_json_file is False
    assert session.redaction.is_secret_name("patient_id")
    assert len(session.pipeline_options.span_processors) == 1
    assert session.recording_options.flush_interval == 0.5


@pytest.mark.parametrize("name", sorted(MOVED_KEYWORDS))
def test_a_moved_keyword_names_the_option_object_to_use(project_dir, name):
    keyword, cls, field = MOVED_KEYWORDS[name]
    expected = f"pass {keyword}={cls}({field}=...)"
    message = f"ScalableSession({name}=...) moved: {expected}"
    with pytest.raises(TypeError, match=re.escape(message)):
        ScalableSession("local", **{name: None})
    with pytest.raises(TypeError, match=re.escape(expected)):
        ScalableSession.attach(None, **{name: None})
    (project_dir / "scalable.yaml").write_text("version: 1\nproject: {name: moved}\n")
    with pytest.raises(TypeError, match=re.escape(message)):
        ScalableSession.from_yaml(target="local", **{name: None})


def test_an_unknown_keyword_is_pythons_own_error(project_dir):
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_worker'"):
        ScalableSession("local", n_worker=2)
    with pytest.raises(TypeError, match=r"attach\(\) got an unexpected keyword argument"):
        ScalableSession.attach(None, n_workers=2)  # the client's cluster is already there


@pytest.mark.parametrize(
    "keyword, value, cls",
    [
        ("exports", {"otlp_endpoint": "http://x"}, "ExportOptions"),
        ("redaction", ["patient_id"], "Redaction"),
        ("pipeline", [object()], "PipelineOptions"),
        ("recording", "thread", "RecordingOptions"),
        ("cluster", {"memory_limit": "1GiB"}, "ClusterOptions"),
    ],
)
def test_an_option_of_the_wrong_type_names_the_class(project_dir, keyword, value, cls):
    with pytest.raises(TypeError, match=re.escape(f"{keyword}=... must be {cls}(...)")):
        ScalableSession("local", **{keyword: value})


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda: ExportOptions(otlp_protocol="grcp"), ValueError, "otlp_protocol='grcp'"),
        (lambda: ExportOptions(traces_exporter="zipkin"), ValueError, "traces_exporter"),
        (lambda: ExportOptions(metrics_exporter="otlp,statsd"), ValueError, "metrics_exporter"),
        (lambda: ExportOptions(prometheus_port="9464"), TypeError, "prometheus_port"),
        (lambda: ExportOptions(prometheus_port=70000), ValueError, "prometheus_port=70000"),
        (lambda: ExportOptions(otlp_headers="api-key=x"), TypeError, "otlp_headers"),
        (lambda: ExportOptions(otlp_file="off"), TypeError, "otlp_file"),
        (lambda: ExportOptions(otlp_endpoint=4317), TypeError, "otlp_endpoint"),
        (lambda: RecordingOptions(recorder="subprocess"), ValueError, "recorder='subprocess'"),
        (lambda: RecordingOptions(flush_interval=0), ValueError, "flush_interval=0"),
        (lambda: RecordingOptions(resource_interval="1s"), TypeError, "resource_interval"),
        (lambda: PipelineOptions(span_processors=object()), TypeError, "span_processors"),
        (lambda: ClusterOptions(memory_limit=["1GiB"]), TypeError, "memory_limit"),
        (lambda: ClusterOptions(extra=["processes"]), TypeError, "extra"),
        (lambda: Redaction(names="patient_id"), TypeError, "Redaction(names=...)"),
        (lambda: Redaction(values=r"MRN-\d+"), TypeError, "Redaction(values=...)"),
        (lambda: Redaction(record_args="off"), TypeError, "record_args"),
    ],
)
def test_a_bad_option_fails_where_it_is_written_in_one_line(build, error, message):
    with pytest.raises(error, match=re.escape(message)) as raised:
        build()
    assert "\n" not in str(raised.value)


def test_option_objects_are_keyword_only_and_immutable():
    with pytest.raises(TypeError):
        ExportOptions("http://x")
    options = RecordingOptions()
    with pytest.raises(AttributeError):
        options.recorder = "thread"


def test_headers_are_not_shown_by_repr():
    options = ExportOptions(otlp_endpoint="http://x", otlp_headers={"api-key": "s3cr3t"})
    assert "s3cr3t" not in repr(options) and "http://x" in repr(options)


def test_export_options_left_at_none_come_from_the_variables():
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=from-env",
        "SCALABLE_PROMETHEUS_PORT": "9999",
        "SCALABLE_OTLP_FILE": "off",
    }
    settings = export_settings(env=env)
    assert settings.otlp_traces.endpoint == "http://collector:4318/v1/traces"
    assert settings.otlp_traces.headers == {"api-key": "from-env"}
    assert settings.prometheus_port == 9999 and settings.otlp_json_file is False
    given = ExportOptions(
        otlp_endpoint="http://mine:4317",
        otlp_protocol="grpc",
        otlp_headers={"api-key": "mine"},
        prometheus_port=0,
        otlp_file=True,
    )
    settings = export_settings(given, env=env)
    assert settings.otlp_traces.endpoint == "http://mine:4317"
    assert settings.otlp_traces.headers == {"api-key": "mine"}
    assert settings.prometheus_port == 0 and settings.otlp_json_file is True


def test_a_bad_variable_turns_exporters_off_not_the_session(project_dir, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    session = ScalableSession("local", exports=ExportOptions(otlp_endpoint="http://x:4318"))
    assert session._exports.otlp_traces is None
    assert "exporters off for this run" in caplog.text


def test_redaction_left_at_none_comes_from_the_variables(project_dir, monkeypatch):
    monkeypatch.setenv("SCALABLE_REDACT_NAMES", "patient_id, ward")
    monkeypatch.setenv("SCALABLE_RECORD_ARGS", "off")
    session = ScalableSession("local", redaction=Redaction(values=[r"MRN-\d+"]))
    assert session.redaction.is_secret_name("ward") and not session.redaction.record_args
    assert session.redaction.scrub("MRN-12") == "[redacted]"
    given = Redaction(names=["bed"], record_args=True)
    session = ScalableSession("local", redaction=given)
    assert session.redaction.is_secret_name("bed") and not session.redaction.is_secret_name("ward")
    assert session.redaction.record_args
    assert given.names == (("bed",),)  # the user's object is left as it was


def test_the_local_cluster_gets_the_cluster_options(project_dir, monkeypatch):
    import distributed

    made = {}

    def fake_cluster(**kwargs):
        made.update(kwargs)
        return "cluster"

    monkeypatch.setattr(distributed, "LocalCluster", fake_cluster)
    plugin = object()
    session = ScalableSession(
        "local",
        n_workers=2,
        threads_per_worker=1,
        cluster=ClusterOptions(
            memory_limit="1GiB",
            extra={"n_workers": 3, "scheduler_kwargs": {"port": 0, "plugins": ["theirs"]}},
        ),
    )
    assert session._start_cluster([plugin]) == "cluster"
    assert made == {
        "processes": True,
        "dashboard_address": None,
        "n_workers": 3,  # extra comes last
        "threads_per_worker": 1,
        "memory_limit": "1GiB",
        "scheduler_kwargs": {"port": 0, "plugins": ["theirs", plugin]},
    }


def test_the_manifest_sizes_a_cluster_when_the_session_does_not(project_dir):
    manifest = {
        "version": 1,
        "project": {"name": "sized"},
        "targets": {"big": {"provider": "local", "max_workers": 4, "memory": "2GiB"}},
    }
    session = ScalableSession("big", manifest=manifest)
    assert (session.n_workers, session.memory_limit) == (4, "2GiB")
    session = ScalableSession("big", manifest=manifest, cluster=ClusterOptions(memory_limit="1GiB"))
    assert session.memory_limit == "1GiB"


def test_instrument_names_the_option_object_for_a_moved_keyword(instrumentor):
    with pytest.raises(TypeError, match=re.escape("pass exports=ExportOptions(otlp_endpoint")):
        instrumentor.instrument(otlp_endpoint="http://x")
    assert not instrumentor.is_instrumented_by_opentelemetry


def test_instrument_takes_the_option_objects_of_attach(instrumentor, caplog):
    recording = RecordingOptions(flush_interval=0.1)
    instrumentor.instrument(runs_dir="runs", recording=recording, n_workers=2)
    assert DaskInstrumentor()._options == {"runs_dir": "runs", "recording": recording}
    assert "DaskInstrumentor ignores n_workers" in caplog.text


def test_instrument_accepts_exactly_the_keywords_of_attach(caplog):
    import inspect

    from scalable_otel.instrumentor import _session_options

    parameters = inspect.signature(ScalableSession.attach).parameters.values()
    attach = {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert set(_session_options(dict.fromkeys(attach))) == attach
    assert "ignores" not in caplog.text
