"""A run's metrics in a real Prometheus: scraped from a real session's endpoint while it
runs, or pushed to a real Pushgateway when the run ends. The exporter's own mechanics
(a registry per run, a busy port, an unreachable Pushgateway) are tested with
`RunMetrics`, instruments made like the recorder's; what the recorder itself exports is
tested through sessions.

The servers are Debian's `prometheus` and `prometheus-pushgateway`, started by each test
on 127.0.0.1 on free ports with temporary config and storage, and stopped by it. Without
them the tests that need them skip (fail under SCALABLE_CI).
"""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import urllib.error
import urllib.request

import psutil
import pytest
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, generate_latest

from scalable_otel import semconv as sc
from scalable_otel.exporters.prometheus import prometheus_export
from scalable_otel.exporters.settings import ExportSettings
from tests import workloads
from tests.conftest import read_jsonl, wait_for
from tests.integration.prometheus_servers import (
    PROMETHEUS,
    PUSHGATEWAY,
    SHIPPED_CONFIG,
    free_port,
    http_get,
    prometheus_config,
    require,
    start_prometheus,
    start_pushgateway,
)
from tests.integration.promql import (
    by_label,
    dashboard_queries,
    finite,
    grafana_to_promql,
    readme_queries,
    readme_series,
    run_phase,
)

LOGGER = "scalable_otel.exporters.prometheus"
PROJECT = "proj"
JOB = "scalable"
SCALABLE_SERIES = {
    "scalable_tasks_submitted_total",
    "scalable_tasks_completed_total",
    "scalable_tasks_failed_total",
    "scalable_task_duration_seconds_bucket",
    "scalable_task_duration_seconds_sum",
    "scalable_task_duration_seconds_count",
    "scalable_task_queue_wait_seconds_bucket",
    "scalable_task_queue_wait_seconds_sum",
    "scalable_task_queue_wait_seconds_count",
    "scalable_workers_active",
    "scalable_worker_cpu_utilization",
    "scalable_worker_memory_usage_bytes",
    "scalable_cache_hits_total",
    "scalable_cache_misses_total",
    "scalable_energy_joules_total",
    "scalable_carbon_grams_total",
    "scalable_dask_fine_time_seconds_total",
    "scalable_dask_fine_data_bytes_total",
}
# Dask's fine performance metrics: read on the scheduler every 10 s, so a scrape of a
# short run may come before the first reading
FINE_SERIES = {"scalable_dask_fine_time_seconds_total", "scalable_dask_fine_data_bytes_total"}


def grouping(run_id: str) -> dict[str, str]:
    return {sc.RUN_ID: run_id, sc.PROJECT: PROJECT}


class RunMetrics:
    """A MeterProvider with instruments like the session's (names, kinds, units, buckets),
    for testing `prometheus_export` by itself."""

    def __init__(self, run_id: str, reader):
        resource = Resource.create(
            {sc.RUN_ID: run_id, sc.PROJECT: PROJECT, "service.name": "scalable-otel"}
        )
        self.provider = MeterProvider(resource=resource, metric_readers=[reader])
        meter = self.provider.get_meter(sc.INSTRUMENTATION_SCOPE, "0.1.0")
        self.counts = {"submitted": {}, "completed": {}, "failed": {}}
        self.cache = {"hit": {}, "miss": {}}
        self.workers = 0
        for name, counts, label, unit in (
            (sc.METRIC_TASKS_SUBMITTED, self.counts["submitted"], sc.M_TASK, "{task}"),
            (sc.METRIC_TASKS_COMPLETED, self.counts["completed"], sc.M_TASK, "{task}"),
            (sc.METRIC_TASKS_FAILED, self.counts["failed"], sc.M_TASK, "{task}"),
            (sc.METRIC_CACHE_HITS, self.cache["hit"], sc.M_FUNCTION, "{lookup}"),
            (sc.METRIC_CACHE_MISSES, self.cache["miss"], sc.M_FUNCTION, "{lookup}"),
        ):
            meter.create_observable_counter(name, [self._observe(counts, label)], unit=unit)
        meter.create_observable_up_down_counter(
            sc.METRIC_WORKERS_ACTIVE, [lambda options: [Observation(self.workers)]], unit="{worker}"
        )
        buckets = list(sc.SECONDS_BUCKETS)
        self.duration = meter.create_histogram(
            sc.METRIC_TASK_DURATION, unit="s", explicit_bucket_boundaries_advisory=buckets
        )
        self.queue_wait = meter.create_histogram(
            sc.METRIC_TASK_QUEUE_WAIT, unit="s", explicit_bucket_boundaries_advisory=buckets
        )
        self.cpu = meter.create_gauge(sc.METRIC_WORKER_CPU, unit="1")
        self.memory = meter.create_gauge(sc.METRIC_WORKER_MEMORY, unit="By")

    @staticmethod
    def _observe(counts, label):
        return lambda options: [Observation(n, {label: k}) for k, n in list(counts.items())]

    def tasks(self, task: str, durations, failed: int = 0, queue_wait: float = 0.02) -> None:
        """Tasks that ran for `durations` seconds, and `failed` more that raised."""
        for kind, n in (("submitted", len(durations) + failed), ("completed", len(durations))):
            self.counts[kind][task] = self.counts[kind].get(task, 0) + n
        self.counts["failed"][task] = self.counts["failed"].get(task, 0) + failed
        for seconds in durations:
            self.duration.record(seconds, {sc.M_TASK: task})
            self.queue_wait.record(queue_wait, {sc.M_TASK: task})

    def lookups(self, function: str, hits: int, misses: int) -> None:
        self.cache["hit"][function] = self.cache["hit"].get(function, 0) + hits
        self.cache["miss"][function] = self.cache["miss"].get(function, 0) + misses


def refused(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


@pytest.fixture
def pushgateway(tmp_path):
    """A Pushgateway of this test's own, stopped at its end."""
    require(PUSHGATEWAY)
    server = start_pushgateway(tmp_path / "pushgateway")
    yield server
    server.stop()


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus with `prometheus(sdk_targets, pushgateway)`; stopped at the test's end."""
    require(PROMETHEUS)
    started = []

    def start(sdk_targets=(), pushgateway=None):
        config = prometheus_config(sdk_targets, pushgateway)
        server = start_prometheus(tmp_path / f"prometheus-{len(started)}", config)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- without servers ----------------------------------------------------------------------


def test_nothing_to_export_without_a_port_or_a_pushgateway():
    assert prometheus_export(ExportSettings(), job=JOB, grouping=grouping("r")) is None


def test_each_run_serves_its_own_registry_and_stops_it():
    exports, runs = [], []
    try:
        for run_id in ("run-one", "run-two"):
            export = prometheus_export(
                ExportSettings(prometheus_port=0), job=JOB, grouping=grouping(run_id)
            )
            exports.append(export)
            run = RunMetrics(run_id, export.reader)
            runs.append(run)
            run.tasks(f"task_of_{run_id}", [0.1])
        assert exports[0].url != exports[1].url
        for export, run_id in zip(exports, ("run-one", "run-two")):
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", export.url)
            status, body = http_get(export.url)
            text = body.decode()
            assert status == 200
            assert "scalable_tasks_completed_total{" in text
            assert f'task="task_of_{run_id}"' in text and f'scalable_run_id="{run_id}"' in text
            other = "run-two" if run_id == "run-one" else "run-one"
            assert other not in text
        # nothing on prometheus_client's global registry
        assert b"run-one" not in generate_latest(REGISTRY)
        assert b"run-two" not in generate_latest(REGISTRY)
        for export in exports:
            export.finish()
            export.finish()  # once is enough; again is harmless
            assert refused(export.url)
    finally:
        for export in exports:
            export.close()
        for run in runs:
            run.provider.shutdown()


def test_a_port_in_use_costs_one_warning_and_the_run_goes_on(caplog):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            export = prometheus_export(
                ExportSettings(prometheus_port=port), job=JOB, grouping=grouping("r")
            )
        assert export is not None and export.url is None
        warnings = [r for r in caplog.records if r.name == LOGGER]
        assert len(warnings) == 1 and str(port) in warnings[0].getMessage()
        run = RunMetrics("r", export.reader)
        run.tasks("t", [0.1])
        assert b"scalable_tasks_completed_total" in generate_latest(export.registry)
        export.finish()
        run.provider.shutdown()


def test_an_unreachable_pushgateway_costs_one_warning_naming_it(caplog):
    port = free_port()  # nothing listens there
    url = f"http://user:s3cret@127.0.0.1:{port}"
    export = prometheus_export(ExportSettings(pushgateway_url=url), job=JOB, grouping=grouping("r"))
    assert export.url is None
    run = RunMetrics("r", export.reader)
    run.tasks("t", [0.1])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        export.finish()  # never raises
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert f"http://127.0.0.1:{port}" in message and "s3cret" not in message
    run.provider.shutdown()


def test_the_shipped_scrape_config_is_valid():
    require(PROMETHEUS, "promtool")
    promtool = subprocess.run(
        ["promtool", "check", "config", str(SHIPPED_CONFIG)], capture_output=True, text=True
    )
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    pushgateway_job = [
        job
        for job in prometheus_config(pushgateway="127.0.0.1:9091")["scrape_configs"]
        if job["job_name"] == "pushgateway"
    ]
    assert pushgateway_job and pushgateway_job[0]["honor_labels"] is True


# --- against real servers ----------------------------------------------------------------


MEMORY, CPU = "scalable_worker_memory_usage_bytes", "scalable_worker_cpu_utilization"


def telemetry_endpoint() -> str:
    """`host:port` the session's telemetry process (our only child of its kind) serves
    its metrics on: with `prometheus_port=0` the port is its own choice."""
    recorders = [
        child
        for child in psutil.Process().children(recursive=True)
        if "scalable_otel._recorder_main" in " ".join(child.cmdline())
    ]
    (recorder,) = recorders
    (port,) = {
        c.laddr.port for c in recorder.net_connections("tcp") if c.status == psutil.CONN_LISTEN
    }
    return f"127.0.0.1:{port}"


def test_prometheus_scrapes_a_sessions_endpoint(project_dir, prometheus):
    """(a) A real session's metrics, scraped from its `prometheus_port` by a real
    Prometheus while it runs: every series of the README's table, with the run's counts,
    durations, worker memory and CPU (the values its resources.jsonl holds) and cache
    lookups; every query of the README and of the Grafana dashboard answers."""
    from scalable_otel import ExportOptions, ScalableSession

    with ScalableSession(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        project=PROJECT,
        exports=ExportOptions(prometheus_port=0),
    ) as session:
        run_id = session.run_id
        address = telemetry_endpoint()
        server = prometheus([address])

        def reached(promql, value, timeout=30):
            return server.wait_for(promql, lambda r: r and r[0]["value"] == value, timeout)

        # first scrape: quick tasks, 4 misses then 2 hits, a failure
        run_phase(session, [0.05] * 10, 2, range(4))
        completed = 'sum(scalable_tasks_completed_total{task="sleep_then"})'
        reached(completed, 10)
        reached("sum(scalable_cache_hits_total)", 2)
        reached("sum(scalable_tasks_failed_total)", 1)
        # then slower tasks, 2 misses and 2 hits more, a failure: rate() sees these
        run_phase(session, [0.3] * 8 + [2.0] * 2, 2, range(4, 6))
        reached(completed, 20)
        reached("sum(scalable_cache_hits_total)", 4)
        reached("sum(scalable_cache_misses_total)", 6)
        reached("sum(scalable_tasks_failed_total)", 2)
        reached('sum(scalable_tasks_completed_total{task="simulate"})', 10)
        reached("sum(scalable_workers_active)", 2)

        names = {r["metric"]["__name__"] for r in server.query('{__name__=~"scalable_.+"}')}
        assert readme_series() == SCALABLE_SERIES
        assert SCALABLE_SERIES - FINE_SERIES <= names <= SCALABLE_SERIES
        [series] = server.query('scalable_tasks_completed_total{task="sleep_then"}')
        assert series["metric"]["scalable_run_id"] == run_id
        assert series["metric"]["scalable_project"] == PROJECT
        assert series["metric"]["otel_scope_name"] == sc.INSTRUMENTATION_SCOPE
        assert series["metric"]["instance"] == address
        assert series["metric"]["job"] == JOB
        [target] = server.query("target_info")
        assert target["metric"]["scalable_run_id"] == run_id
        assert target["metric"]["scalable_project"] == PROJECT

        def value(promql):
            [result] = server.query(promql)
            return result["value"]

        assert value('scalable_tasks_submitted_total{task="sleep_then"}') == 20
        assert value('scalable_tasks_failed_total{task="fail"}') == 2
        assert value('scalable_tasks_submitted_total{task="fail"}') == 2
        assert value('scalable_task_duration_seconds_count{task="sleep_then"}') == 20
        assert value('scalable_task_queue_wait_seconds_count{task="sleep_then"}') == 20
        # a task never takes less than it slept: lower bounds only, whatever the load
        assert value('scalable_task_duration_seconds_sum{task="sleep_then"}') >= 6.9
        buckets = by_label(
            server.query('scalable_task_duration_seconds_bucket{task="sleep_then"}'), "le"
        )
        assert buckets["0.025"] == 0 and buckets["0.25"] <= 10 and buckets["1.0"] <= 18
        assert buckets["+Inf"] == 20
        whole = (
            "histogram_quantile({}, sum by (le, task) "
            '(scalable_task_duration_seconds_bucket{{task="sleep_then"}}))'
        )
        assert value(whole.format(0.99)) > 1.0  # among the two 2 s tasks
        assert value(whole.format(0.5)) > 0.05

        lookups = read_jsonl(session.run_dir / "cache.jsonl")
        (function,) = {e["function"] for e in lookups}
        assert by_label(server.query("scalable_cache_hits_total"), "function") == {function: 4}
        assert by_label(server.query("scalable_cache_misses_total"), "function") == {function: 6}

        # worker memory and CPU: per worker, a value its resources.jsonl recorded
        memory = by_label(
            server.query("max by (worker) (scalable_worker_memory_usage_bytes)"), "worker"
        )
        cpu = by_label(server.query("max by (worker) (scalable_worker_cpu_utilization)"), "worker")
        assert len(memory) == len(cpu) == 2

        def sampled():
            lines = read_jsonl(session.run_dir / "resources.jsonl")
            samples = [e for e in lines if e["event"] == "resource_sample"]
            return all(
                any(
                    e["worker_name"] == worker and e["memory_bytes"] == memory[worker]
                    for e in samples
                )
                and any(
                    e["worker_name"] == worker and e["cpu_percent"] / 100.0 == cpu[worker]
                    for e in samples
                )
                for worker in memory
            )

        wait_for(sampled)  # the lines are written one flush interval after the samples
        assert all(10 * 2**20 < m for m in memory.values())

        # every query of exporters/prometheus/README.md and of the Grafana dashboard
        # answers, with numbers (a rate with no increase would give NaN)
        queries = [
            q.replace("$run_id", run_id).replace("$project", PROJECT) for q in readme_queries()
        ]
        assert len(queries) >= 17
        dashboard = [grafana_to_promql(q, run_id, PROJECT) for q in dashboard_queries()]
        unanswered = [q for q in queries if not finite(server.query(q))]
        assert not unanswered, unanswered
        empty = [q for q in dashboard if not server.query(q)]
        assert not empty, empty
    assert refused(f"http://{address}/metrics")


def test_final_values_reach_prometheus_through_the_pushgateway(prometheus, pushgateway):
    """(b) Values pushed at finish() are in Prometheus after the run's endpoint is gone,
    each run's under its own run id."""
    # Prometheus scrapes only the Pushgateway: what it has came through the push
    server = prometheus(pushgateway=pushgateway.address)
    urls = []
    for run_id, n in (("run-a", 3), ("run-b", 5)):
        settings = ExportSettings(prometheus_port=0, pushgateway_url=pushgateway.url)
        export = prometheus_export(settings, job=JOB, grouping=grouping(run_id))
        run = RunMetrics(run_id, export.reader)
        run.tasks("simulate", [0.2] * n, failed=1)
        run.workers = 1
        export.finish()
        run.provider.shutdown()
        urls.append(export.url)
    for url in urls:
        assert refused(url)

    completed = f'scalable_tasks_completed_total{{job="{JOB}",task="simulate"}}'
    result = server.wait_for(completed, lambda r: len(r) == 2, timeout=20)
    assert by_label(result, "scalable_run_id") == {"run-a": 3, "run-b": 5}
    for series in result:
        assert series["metric"]["scalable_project"] == PROJECT
        assert "instance" not in series["metric"]  # pushed (instance ""), not scraped
        assert "exported_job" not in series["metric"]  # honor_labels
    counts = server.query(
        'scalable_task_duration_seconds_count{task="simulate",scalable_run_id="run-b"}'
    )
    assert [c["value"] for c in counts] == [5]
    failed = by_label(server.query("scalable_tasks_failed_total"), "scalable_run_id")
    assert failed == {"run-a": 1, "run-b": 1}
    p95 = server.query(
        "histogram_quantile(0.95, sum by (le) "
        '(scalable_task_duration_seconds_bucket{scalable_run_id="run-a"}))'
    )
    assert 0.1 < p95[0]["value"] <= 0.25
    targets = by_label(server.query("target_info"), "scalable_run_id")
    assert set(targets) == {"run-a", "run-b"}


def test_a_sessions_final_values_reach_prometheus(project_dir, prometheus, pushgateway):
    """(c) A real run's final task counts and durations, in Prometheus via the Pushgateway,
    under its run id."""
    from scalable_otel import ExportOptions, ScalableSession

    server = prometheus(pushgateway=pushgateway.address)
    with ScalableSession(
        target="local",
        n_workers=1,
        threads_per_worker=1,
        project=PROJECT,
        exports=ExportOptions(prometheus_port=0, pushgateway_url=pushgateway.url),
    ) as session:
        futures = session.map(workloads.sleep_then, range(4), seconds=0.05)
        assert session.gather(futures) == [0, 1, 2, 3]
        failing = session.submit(workloads.fail, 1)
        assert session.gather([failing], errors="skip") == []
    run_id = session.run_id

    def of_run(result):
        return [r for r in result if run_id in r["metric"].values()]

    completed = server.wait_for(
        'scalable_tasks_completed_total{task="sleep_then"}', of_run, timeout=20
    )
    [series] = of_run(completed)
    assert series["value"] == 4
    assert "instance" not in series["metric"]  # pushed when the run ended
    [count] = of_run(server.query('scalable_task_duration_seconds_count{task="sleep_then"}'))
    assert count["value"] == 4
    [failed] = of_run(server.query('scalable_tasks_failed_total{task="fail"}'))
    assert failed["value"] == 1
    [target] = of_run(server.query("target_info"))
    assert target["metric"]["scalable_run_id"] == run_id
    assert target["metric"]["scalable_project"] == PROJECT
