"""exporters/collector/otel-collector.yaml, run as shipped by the real Collector: a real
session sends it OTLP; its Prometheus exporter is scraped by a real Prometheus (the
shipped prometheus.yml's `collector` job), and its traces reach a real Jaeger. The
PromQL of README.md and exporters/prometheus/README.md (with the Collector's names,
exporters/collector/README.md) answer what the run directory says."""

from __future__ import annotations

import math
import re

import pytest

from scalable_otel import ExportOptions, ScalableSession
from scalable_otel.exporters.otlp_json import TRACES_FILE
from tests.conftest import read_jsonl, wait_for
from tests.integration.go_servers import (
    collector_complaints,
    jaeger,  # noqa: F401  (the fixture)
    read_otlp_json_lines,
    start_shipped_collector,
)
from tests.integration.prometheus_servers import (
    PROMETHEUS,
    prometheus_config,
    require,
    start_prometheus,
)
from tests.integration.promql import (
    REPO,
    RunFigures,
    by_label,
    dashboard_queries,
    finite,
    front_readme_queries,
    grafana_to_promql,
    readme_queries,
    readme_series,
    run_phase,
)

# the real servers built by servers/build (see .ci/run)
pytestmark = pytest.mark.go_servers

COLLECTOR_CONFIG = REPO / "exporters" / "collector" / "otel-collector.yaml"
COLLECTOR_README = REPO / "exporters" / "collector" / "README.md"
PROJECT = "through-collector"
# The names that differ through the Collector's Prometheus exporter (unit `1` on a gauge)
COLLECTOR_NAMES = {"scalable_worker_cpu_utilization": "scalable_worker_cpu_utilization_ratio"}


def through_collector(promql: str) -> str:
    for sdk, collector in COLLECTOR_NAMES.items():
        promql = re.sub(rf"\b{sdk}\b", collector, promql)
    return promql


def collector_readme_queries() -> list[str]:
    text = COLLECTOR_README.read_text()
    return [q.strip() for q in re.findall(r"```promql\n(.*?)```", text, re.S)]


def test_the_collector_readme_names_what_changes():
    text = COLLECTOR_README.read_text()
    for sdk, collector in COLLECTOR_NAMES.items():
        assert f"`{sdk}`" in text and f"`{collector}`" in text
    queries = collector_readme_queries()
    assert queries == [through_collector(q) for q in queries]
    assert any(collector in q for q in queries for collector in COLLECTOR_NAMES.values())


def test_a_sessions_metrics_through_the_collector_in_prometheus(project_dir, tmp_path, jaeger):  # noqa: F811
    require(PROMETHEUS)
    collector = start_shipped_collector(
        tmp_path / "collector",
        [COLLECTOR_CONFIG],
        lambda ports: {
            "SCALABLE_COLLECTOR_GRPC": f"127.0.0.1:{ports['grpc']}",
            "SCALABLE_COLLECTOR_HTTP": f"127.0.0.1:{ports['http']}",
            "SCALABLE_COLLECTOR_PROMETHEUS": f"127.0.0.1:{ports['prometheus']}",
            "SCALABLE_JAEGER_OTLP": f"127.0.0.1:{jaeger.ports['grpc']}",
        },
        ("grpc", "http", "prometheus"),
    )
    scraped = f"127.0.0.1:{collector.ports['prometheus']}"
    server = start_prometheus(tmp_path / "prometheus", prometheus_config(collector=scraped))
    try:
        with ScalableSession(
            target="local",
            n_workers=2,
            threads_per_worker=1,
            project=PROJECT,
            exports=ExportOptions(
                otlp_endpoint=collector.url("http"), otlp_protocol="http/protobuf"
            ),
        ) as session:
            run_id = session.run_id
            of_run = f'scalable_run_id="{run_id}"'

            def reached(promql, value, timeout=60):
                return server.wait_for(promql, lambda r: r and r[0]["value"] == value, timeout)

            # two phases, each seen by Prometheus, so that rate() and increase() see
            # the second
            run_phase(session, [0.05] * 10, 2, range(4))
            reached(f"sum(scalable_tasks_completed_total{{{of_run}}})", 16)
            reached(f"sum(scalable_tasks_failed_total{{{of_run}}})", 1)
            run_phase(session, [0.3] * 8 + [1.2] * 2, 2, range(4, 6))
            reached(f"sum(scalable_tasks_completed_total{{{of_run}}})", 30)
            reached(f"sum(scalable_tasks_failed_total{{{of_run}}})", 2)
        figures = RunFigures.of(session.run_dir)
        # the final values, exported when the session closed
        reached(f"sum(scalable_cache_misses_total{{{of_run}}})", sum(figures.cache_misses.values()))
        last_memory = {worker: samples[-1] for worker, samples in figures.memory.items()}
        memory_query = f"max by (worker) (scalable_worker_memory_usage_bytes{{{of_run}}})"
        server.wait_for(memory_query, lambda r: by_label(r, "worker") == last_memory, 60)

        def values(promql, label="task"):
            return by_label(server.query(promql), label)

        # the run's totals, exactly as its files count them
        assert (
            values(f"sum by (task) (scalable_tasks_completed_total{{{of_run}}})")
            == figures.completed
        )
        assert (
            values(f"sum by (task) (scalable_tasks_submitted_total{{{of_run}}})")
            == figures.submitted
        )
        assert values(f"sum by (task) (scalable_tasks_failed_total{{{of_run}}})") == figures.failed
        counts = values(f"sum by (task) (scalable_task_duration_seconds_count{{{of_run}}})")
        assert counts == {task: len(d) for task, d in figures.durations.items()}
        sums = values(f"sum by (task) (scalable_task_duration_seconds_sum{{{of_run}}})")
        for task, seconds in figures.durations.items():
            assert sums[task] == pytest.approx(sum(seconds), abs=1e-6 * len(seconds))
            buckets = values(
                f'scalable_task_duration_seconds_bucket{{{of_run},task="{task}"}}', "le"
            )
            assert {float(le): n for le, n in buckets.items()} == figures.buckets(task)
        assert (
            values(f"sum by (function) (scalable_cache_hits_total{{{of_run}}})", "function")
            == figures.cache_hits
        )
        last_cpu = {worker: samples[-1] for worker, samples in figures.cpu.items()}
        cpu_query = f"max by (worker) (scalable_worker_cpu_utilization_ratio{{{of_run}}})"
        assert values(cpu_query, "worker") == pytest.approx(last_cpu)

        # README.md's four queries (tasks/s, failures, p95 duration, worker memory)
        front = front_readme_queries()
        assert set(front) == {
            "tasks/s per task",
            "failures in the last 5 min",
            "p95 task duration",
            "worker memory",
        }
        rates = values(front["tasks/s per task"])
        assert set(rates) == set(figures.completed) and all(r >= 0 for r in rates.values())
        assert rates["sleep_then"] > 0  # it completed tasks in both phases
        failures = values(front["failures in the last 5 min"])
        assert set(failures) == set(figures.failed) and failures["fail"] > 0
        p95 = values(front["p95 task duration"])
        for task, value in p95.items():
            if not math.isnan(value):  # no increase in the window
                lower, upper = figures.duration_bucket_range(task)
                assert lower <= value <= upper, (task, value)
        assert not math.isnan(p95["sleep_then"])
        assert values(front["worker memory"], "worker") == last_memory

        # a run's quantile from its cumulative buckets (exporters/prometheus/README.md)
        whole = values(
            "histogram_quantile(0.95, sum by (le, task) "
            f"(scalable_task_duration_seconds_bucket{{{of_run}}}))"
        )
        assert whole == pytest.approx(
            {task: figures.duration_quantile(0.95, task) for task in figures.durations}
        )

        # the series, their labels, and every query of the READMEs and the dashboard
        names = {
            r["metric"]["__name__"] for r in server.query(f'{{__name__=~"scalable_.+",{of_run}}}')
        }
        expected_names = {COLLECTOR_NAMES.get(name, name) for name in readme_series()}
        fine = {"scalable_dask_fine_time_seconds_total", "scalable_dask_fine_data_bytes_total"}
        assert (
            expected_names - fine - {"scalable_energy_joules_total", "scalable_carbon_grams_total"}
            <= names
            <= expected_names
        )
        [series] = server.query(f'scalable_tasks_completed_total{{{of_run},task="sleep_then"}}')
        assert series["metric"]["scalable_project"] == PROJECT
        assert series["metric"]["service_name"] == "scalable-otel"
        # the Collector's own target; the session's service name and instance id come as
        # the exporter's job and instance, kept by Prometheus as exported_*
        assert series["metric"]["job"] == "collector"
        assert series["metric"]["instance"] == scraped
        assert series["metric"]["exported_job"] == "scalable-otel"
        [target] = server.query(f"target_info{{{of_run}}}")
        assert target["metric"]["scalable_project"] == PROJECT
        queries = [
            through_collector(q.replace("$run_id", run_id).replace("$project", PROJECT))
            for q in readme_queries() + collector_readme_queries()
        ]
        unanswered = [q for q in queries if not finite(server.query(q))]
        assert not unanswered, unanswered
        dashboard = [
            through_collector(grafana_to_promql(q, run_id, PROJECT)) for q in dashboard_queries()
        ]
        empty = [q for q in dashboard if not server.query(q)]
        assert not empty, empty

        # the traces pipeline: the run's trace in Jaeger and in otel-traces.jsonl
        spans = read_jsonl(session.run_dir / TRACES_FILE)
        span_ids = {
            s["spanId"]
            for line in spans
            for r in line["resourceSpans"]
            for scope in r["scopeSpans"]
            for s in scope["spans"]
        }
        assert {
            s["traceId"]
            for line in spans
            for r in line["resourceSpans"]
            for scope in r["scopeSpans"]
            for s in scope["spans"]
        } == {session.trace_id}
        trace = jaeger.trace(session.trace_id, spans=len(span_ids))
        assert {s["spanID"] for s in trace["spans"]} == span_ids

        def written():
            return {
                s["spanId"]
                for line in read_otlp_json_lines(collector.folder / "otel-traces.jsonl")
                for r in line["resourceSpans"]
                for scope in r["scopeSpans"]
                for s in scope["spans"]
            }

        wait_for(lambda: written() == span_ids, timeout=30)
        assert collector_complaints(collector) == []
    finally:
        server.stop()
        collector.stop()
