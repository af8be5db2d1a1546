"""Dask's fine performance metrics: metrics.jsonl and the OTel metrics hold Dask's own
figures of the run's task prefixes and spans (`distributed.span`), read from a real
LocalCluster's scheduler."""

import pytest
from distributed import Client, LocalCluster, span
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from scalable_otel import PipelineOptions, ScalableSession
from scalable_otel import semconv as sc
from tests import workloads
from tests.conftest import events, wait_for

BURN_S = (0.3, 0.31, 0.32, 0.33)
NAP_S = (0.2, 0.21, 0.22)


def nap(seconds):
    """Sleep: time on the task's thread without CPU."""
    import time

    time.sleep(seconds)
    return seconds


def _dask_figures(dask_scheduler):
    """Dask's own figures: the execute metrics by prefix, and each span's own (its
    subtree's less its children's) with its name."""
    prefixes = {
        k: v
        for k, v in dask_scheduler.cumulative_worker_metrics.items()
        if isinstance(k, tuple) and k[0] == "execute" and len(k) == 4
    }
    spans = {}
    for span_id, sp in dask_scheduler.extensions["spans"].spans.items():
        own = dict(sp.cumulative_worker_metrics)
        for child in sp.children:
            for k, v in child.cumulative_worker_metrics.items():
                own[k] = own.get(k, 0) - v
        spans[span_id] = (list(sp.name), {k: v for k, v in own.items() if k[1] != "N/A"})
    return prefixes, spans


def _workflow(client):
    with span("study"):
        burned = client.map(workloads.burn_cpu, BURN_S)
        with span("naps"):
            napped = client.map(nap, NAP_S)
        client.gather(burned + napped)


def _last(lines):
    """Each row's last value (a row is written again each time it grows)."""
    last = {}
    for line in lines:
        row = tuple(
            tuple(v) if isinstance(v, list) else v
            for k, v in line.items()
            if k in sc.FINE_METRIC_FIELDS and k != "value"
        )
        last[row] = line
    return list(last.values())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor

    root = tmp_path_factory.mktemp("fine")
    reader, logs = InMemoryMetricReader(), InMemoryLogExporter()
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        with ScalableSession.attach(
            client,
            project="fine",
            runs_dir=root / "runs",
            cache_dir=root / "cache",
            pipeline=PipelineOptions(
                metric_readers=[reader], log_processors=[SimpleLogRecordProcessor(logs)]
            ),
        ) as session:
            _workflow(client)
            # the session's close reads them too; here the OTel metrics are still open
            client.run(_heartbeat)
            client.run_on_scheduler(
                _send, name=sc.per_run(sc.SCHEDULER_PLUGIN_NAME, session.run_id)
            )
            metrics = wait_for(lambda: _fine_points(reader))
        prefixes, spans = client.run_on_scheduler(_dask_figures)
    session.fine_logs = [
        r.log_record for r in logs.get_finished_logs() if r.log_record.event_name == sc.FINE_METRIC
    ]
    return session, prefixes, spans, metrics


async def _heartbeat(dask_worker):
    await dask_worker.heartbeat()


def _send(dask_scheduler, name):
    dask_scheduler.plugins[name].send_fine_metrics()


def _fine_points(reader):
    data = reader.get_metrics_data()
    points = {}
    for rm in data.resource_metrics if data else ():
        for scope in rm.scope_metrics:
            for metric in scope.metrics:
                if metric.name == sc.METRIC_FINE_TIME:
                    for p in metric.data.data_points:
                        points[tuple(sorted(p.attributes.items()))] = p.value
    burn = [a for a in points if (sc.M_TASK, "burn_cpu") in a]
    return points if burn else None


def test_metrics_jsonl_holds_dask_s_figures_of_each_prefix(recorded):
    session, prefixes, _, _ = recorded
    lines = _last(events(session.run_dir, "metrics.jsonl"))
    by_prefix = {
        (x["prefix"], x["activity"], x["unit"]): x["value"]
        for x in lines
        if x["scope"] == sc.SCOPE_PREFIX
    }
    assert {p for p, _, _ in by_prefix} == {"burn_cpu", "nap"}
    for (prefix, activity, unit), value in by_prefix.items():
        assert value == pytest.approx(prefixes["execute", prefix, activity, unit], abs=1e-6)
    # what the tasks did: burning is CPU time (the thread's, within its process's as the
    # worker measured it), sleeping is not; each ran its seconds on its thread
    measured = events(session.run_dir, "resources.jsonl", "task_resources")
    burn_cpu_s = sum(x["cpu_seconds"] for x in measured if x["task"] == "burn_cpu")
    burn = by_prefix["burn_cpu", "thread-cpu", "seconds"]
    assert 0 < burn <= burn_cpu_s + 0.01
    assert burn + by_prefix["burn_cpu", "thread-noncpu", "seconds"] >= sum(BURN_S) * 0.99
    assert by_prefix["nap", "thread-noncpu", "seconds"] >= sum(NAP_S) * 0.99
    assert by_prefix.get(("nap", "thread-cpu", "seconds"), 0) < burn
    assert all(
        x["group"] is None and x["group_path"] is None for x in lines if x["scope"] != "group"
    )


def test_metrics_jsonl_holds_each_span_s_own_figures(recorded):
    session, _, spans, _ = recorded
    lines = [x for x in _last(events(session.run_dir, "metrics.jsonl")) if x["scope"] == "group"]
    paths = {x["group"]: x["group_path"] for x in lines}
    assert sorted(paths.values()) == [["study"], ["study", "naps"]]
    for group, path in paths.items():
        assert spans[group][0] == path  # the group is Dask's span id
    by_group = {(x["group"], x["prefix"], x["activity"], x["unit"]): x["value"] for x in lines}
    for (group, prefix, activity, unit), value in by_group.items():
        own = spans[group][1]
        assert value == pytest.approx(own["execute", prefix, activity, unit], abs=1e-6)
    # the outer span holds the burning, the inner one the naps: nested, not summed twice
    assert {p for g, p, _, _ in by_group if paths[g] == ["study"]} == {"burn_cpu"}
    assert {p for g, p, _, _ in by_group if paths[g] == ["study", "naps"]} == {"nap"}


def test_the_lines_follow_the_schema(recorded):
    session, _, _, _ = recorded
    lines = events(session.run_dir, "metrics.jsonl")
    assert lines
    for line in lines:
        assert line["event"] == sc.FINE_METRIC and line["run_id"] == session.run_id
        assert set(sc.FINE_METRIC_FIELDS) <= set(line)
        assert line["scope"] in (sc.SCOPE_PREFIX, sc.SCOPE_GROUP, sc.SCOPE_CLUSTER)
        assert (line["prefix"] is not None) == (line["context"] == "execute")
        assert isinstance(line["value"], int | float)
    assert (session.run_dir / "metrics.jsonl").stat().st_mode & 0o777 == 0o600


def test_otel_metrics_by_prefix_and_group(recorded):
    session, prefixes, _, points = recorded
    burn = {
        dict(a)[sc.M_ACTIVITY]: v
        for a, v in points.items()
        if (sc.M_TASK, "burn_cpu") in a and (sc.M_SCOPE, sc.SCOPE_PREFIX) in a
    }
    assert burn["thread-cpu"] == pytest.approx(
        prefixes["execute", "burn_cpu", "thread-cpu", "seconds"], abs=1e-6
    )
    groups = {dict(a).get(sc.M_GROUP) for a in points if (sc.M_SCOPE, sc.SCOPE_GROUP) in a}
    assert groups == {"study", "study/naps"}
    for attributes in points:
        assert session.run_id not in dict(attributes).values()
        assert {k for k, _ in attributes} <= {
            sc.M_SCOPE,
            sc.M_CONTEXT,
            sc.M_ACTIVITY,
            sc.M_TASK,
            sc.M_TASK_NAME,  # the prefix under OTel's key too
            sc.M_GROUP,
        }


def _report(*args):
    from click.testing import CliRunner

    from scalable_otel.cli import main

    run_dir = args[0]
    where = ["--runs-dir", str(run_dir.parent)]
    result = CliRunner().invoke(main, ["report", *map(str, args), *where], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_where_the_time_went_sums_the_last_lines(recorded):
    from scalable_otel.analysis import load_run
    from scalable_otel.analysis.fine_metrics import fine_metrics

    session, prefixes, _, _ = recorded
    data = fine_metrics(load_run(session.run_dir))
    expected = {}
    for (_, prefix, activity, unit), value in prefixes.items():
        if unit == "seconds" and prefix in ("burn_cpu", "nap"):
            expected[activity] = expected.get(activity, 0.0) + value
    got = {a["activity"]: a["seconds"] for a in data["activities"]}
    assert got == pytest.approx({a: v for a, v in expected.items() if v > 0}, abs=1e-5)
    assert data["total_s"] == pytest.approx(sum(expected.values()), abs=1e-5)
    assert sum(a["share"] for a in data["activities"]) == pytest.approx(1.0, abs=1e-3)
    assert [p["prefix"] for p in data["prefixes"]] == ["burn_cpu", "nap"]  # largest first
    assert [g["group_path"] for g in data["groups"]] == [["study"], ["study", "naps"]]
    assert sum(g["seconds"] for g in data["groups"]) == pytest.approx(data["total_s"], abs=1e-5)


def test_report_time_breakdown_text_json_and_html(recorded, tmp_path):
    import json

    session, _, _, _ = recorded
    plain = _report(session.run_dir)
    assert "Where the time went" not in plain  # the tutorial's report is unchanged
    text = _report(session.run_dir, "--time-breakdown")
    assert text.startswith(plain.rstrip("\n"))
    section = text[len(plain.rstrip("\n")) :]
    assert "Where the time went (Dask's fine performance metrics)" in section
    assert "    burn_cpu: " in section and "    study / naps: " in section
    data = json.loads(_report(session.run_dir, "--time-breakdown", "--format", "json"))
    assert [p["prefix"] for p in data["fine_metrics"]["prefixes"]] == ["burn_cpu", "nap"]
    page = tmp_path / "page.html"
    _report(session.run_dir, "--html", page)
    html = page.read_text()
    assert 'id="time-breakdown-table"' in html
    assert html.count('<td class="name">') >= 4 + 2 + 2  # activities, prefixes, spans
    assert ">study / naps</td>" in html


def test_a_run_without_fine_metrics_has_no_section(recorded, tmp_path):
    import shutil

    from scalable_otel.analysis import load_run
    from scalable_otel.analysis.fine_metrics import fine_metrics, format_fine_metrics
    from scalable_otel.analysis.html import html_report

    session, _, _, _ = recorded
    older = tmp_path / session.run_dir.name
    shutil.copytree(session.run_dir, older)
    (older / "metrics.jsonl").unlink()  # a run from before metrics.jsonl
    data = fine_metrics(load_run(older))
    assert data["activities"] == [] and data["total_s"] == 0
    assert "No fine performance metrics" in format_fine_metrics(data)
    assert "time-breakdown-section" not in html_report(load_run(older))


def test_the_lines_are_otel_log_events_too(recorded):
    """What an OTLP backend gets: each metrics.jsonl line as a log event, its fields as
    attributes (nulls left out: OTel attributes have none)."""
    session, _, _, _ = recorded
    lines = events(session.run_dir, "metrics.jsonl")
    assert len(session.fine_logs) == len(lines)
    for record, line in zip(session.fine_logs, lines, strict=True):
        attributes = dict(record.attributes)
        if "group_path" in attributes:
            attributes["group_path"] = list(attributes["group_path"])
        assert attributes == {k: v for k in sc.FINE_METRIC_FIELDS if (v := line[k]) is not None}


def _burn_in_span(client, name, seconds):
    with span(name):
        client.gather(client.map(workloads.burn_cpu, seconds))


def test_runs_sharing_a_scheduler_keep_their_own_prefixes_and_spans(project_dir):
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as a_client,
        Client(cluster) as b_client,
    ):
        # the first run's tasks ran before the second began: none of them is the second's
        with ScalableSession.attach(a_client, project="alpha") as a:
            _burn_in_span(a_client, "alpha", (0.2, 0.21))
            with ScalableSession.attach(b_client, project="beta") as b:
                with span("beta"):
                    b_client.gather(b_client.map(nap, NAP_S))
    a_lines, b_lines = (_last(events(s.run_dir, "metrics.jsonl")) for s in (a, b))
    assert {x["prefix"] for x in a_lines if x["scope"] == "prefix"} == {"burn_cpu"}
    assert {x["prefix"] for x in b_lines if x["scope"] == "prefix"} == {"nap"}
    assert {tuple(x["group_path"]) for x in a_lines if x["scope"] == "group"} == {("alpha",)}
    assert {tuple(x["group_path"]) for x in b_lines if x["scope"] == "group"} == {("beta",)}


def test_a_scheduler_reached_by_address_forwards_the_figures(project_dir):
    """A `tcp://` target: the plugin's records come through Dask's event topics."""
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with ScalableSession(target=cluster.scheduler_address, project="remote") as session:
            with span("remote"):
                session.gather(session.map(nap, NAP_S))
    lines = _last(events(session.run_dir, "metrics.jsonl"))
    noncpu = {
        (x["scope"], x["prefix"]): x["value"]
        for x in lines
        if x["activity"] == "thread-noncpu" and x["unit"] == "seconds"
    }
    assert noncpu["prefix", "nap"] >= sum(NAP_S) * 0.99
    assert noncpu["group", "nap"] == noncpu["prefix", "nap"]
    assert {tuple(x["group_path"]) for x in lines if x["scope"] == "group"} == {("remote",)}
