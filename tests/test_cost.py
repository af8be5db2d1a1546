"""Estimated run cost: rates per provider, manifest overrides, and worker uptime as the basis."""

import json

import pandas as pd
import pytest

from scalable_otel.analysis import load_run
from scalable_otel.analysis.cost import (
    DEFAULT_RATES,
    REFERENCE_RATES,
    CostError,
    estimate_run_cost,
    rates_for,
    resource_cost,
)
from scalable_otel.errors import ScalableError

GIB = 2**30
RUN_ID = "run-20260520T035200Z-proj-0a0b0c0d"


def worker_line(event, w, ts, nthreads=2, memory_limit=4 * GIB, **extra):
    return {
        "schema_version": 1,
        "timestamp": ts,
        "event": event,
        "run_id": RUN_ID,
        "worker": f"tcp://127.0.0.1:{4000 + w}",
        "worker_name": str(w),
        "nthreads": nthreads,
        "memory_limit": memory_limit,
        "span_id": f"{w:016x}",
        **extra,
    }


TWO_WORKERS_ONE_HOUR = [
    worker_line("worker_added", 0, "2026-05-20T03:52:00.000000Z"),
    worker_line("worker_added", 1, "2026-05-20T03:52:00.000000Z"),
    worker_line("worker_removed", 0, "2026-05-20T04:52:00.000000Z", uptime_s=3600.0),
    worker_line("worker_removed", 1, "2026-05-20T04:52:00.000000Z", uptime_s=3600.0),
]


def write_run(tmp_path, meta, worker_lines):
    path = tmp_path / RUN_ID
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"run_id": RUN_ID, **meta}))
    (path / "workers.jsonl").write_text("".join(json.dumps(w) + "\n" for w in worker_lines))
    return load_run(path)


def meta(provider="slurm", target="hpc", end_time="2026-05-20T04:52:00.100000Z"):
    return {
        "status": "completed" if end_time else "running",
        "start_time": "2026-05-20T03:51:59.000000Z",
        "end_time": end_time,
        "target": target,
        "provider": provider,
    }


def test_rates_defaults_per_provider():
    assert rates_for("local") == {
        "provider": "local",
        "cpu_hour": 0.0,
        "memory_gb_hour": 0.0,
        "source": "default",
    }
    for provider in ("slurm", "aws", "gcp", "azure", "kubernetes"):
        rates = rates_for(provider)
        assert rates["cpu_hour"] == DEFAULT_RATES[provider]["cpu_hour"] > 0
        assert rates["memory_gb_hour"] == DEFAULT_RATES[provider]["memory_gb_hour"] > 0
    assert rates_for("K8s")["provider"] == "kubernetes"
    unknown = rates_for("mainframe")
    assert (unknown["cpu_hour"], unknown["memory_gb_hour"], unknown["source"]) == (
        None,
        None,
        "none",
    )
    assert rates_for("address")["source"] == "none"
    assert REFERENCE_RATES == DEFAULT_RATES["aws"]


def test_rates_from_the_manifest_target():
    both = rates_for("slurm", {"cost": {"cpu_hour": 0.05, "memory_gb_hour": 0.005}})
    assert (both["cpu_hour"], both["memory_gb_hour"], both["source"]) == (0.05, 0.005, "manifest")
    part = rates_for("slurm", {"provider": "slurm", "cost": {"cpu_hour": 0.05}})
    assert (part["cpu_hour"], part["memory_gb_hour"]) == (
        0.05,
        DEFAULT_RATES["slurm"]["memory_gb_hour"],
    )
    assert part["source"] == "default+manifest"
    own = rates_for("mainframe", {"cost": {"cpu_hour": 1}})
    assert (own["cpu_hour"], own["memory_gb_hour"], own["source"]) == (1.0, 0.0, "manifest")


@pytest.mark.parametrize(
    "cost, message",
    [
        ({"cpu_hour": -1}, "target 'hpc': cost.cpu_hour must be 0 or more, not -1"),
        ({"cpu_hour": "cheap"}, "target 'hpc': cost.cpu_hour must be a number"),
        ({"cpu_hours": 0.05}, "target 'hpc': unknown key cost.cpu_hours (the keys are cpu_hour"),
        (0.05, "target 'hpc': cost must be a mapping of cpu_hour and memory_gb_hour"),
    ],
)
def test_bad_rates_are_one_line_errors(cost, message):
    with pytest.raises(CostError) as info:
        rates_for("slurm", {"cost": cost}, target="hpc")
    assert isinstance(info.value, ScalableError)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_resource_cost():
    rates = {"cpu_hour": 0.02, "memory_gb_hour": 0.0025}
    assert resource_cost(4, 16 * GIB, 1.0, rates) == pytest.approx(0.12)
    assert resource_cost(4, None, 2.0, rates) == pytest.approx(0.16)
    assert resource_cost(4, GIB, 1.0, rates_for("local")) == 0.0
    assert resource_cost(4, GIB, 1.0, rates_for("mainframe")) is None


def test_cost_with_default_rates(tmp_path):
    run = write_run(tmp_path, meta(), TWO_WORKERS_ONE_HOUR)
    cost = estimate_run_cost(run.meta, run.workers, None)
    # 2 workers x 1 h x 2 threads = 4 core-hours; 2 x 1 h x 4 GiB = 8 GB-hours
    assert cost["basis"]["core_hours"] == 4.0
    assert cost["basis"]["memory_gb_hours"] == 8.0
    assert cost["basis"]["worker_hours"] == 2.0
    assert cost["basis"]["workers"] == 2 and cost["basis"]["open_workers"] == 0
    assert cost["usd"] == pytest.approx(4 * 0.02 + 8 * 0.0025)
    assert (cost["provider"], cost["target"], cost["rates"]["source"]) == (
        "slurm",
        "hpc",
        "default",
    )


def test_cost_with_manifest_rates(tmp_path):
    run = write_run(tmp_path, meta(), TWO_WORKERS_ONE_HOUR)
    manifest = {
        "targets": {
            "hpc": {"provider": "slurm", "cost": {"cpu_hour": 0.05, "memory_gb_hour": 0.005}}
        }
    }
    cost = estimate_run_cost(run.meta, run.workers, manifest)
    assert cost["usd"] == pytest.approx(4 * 0.05 + 8 * 0.005)
    assert cost["rates"]["source"] == "manifest"
    # the same from the lines as read_lines gives them
    assert estimate_run_cost(run.meta, TWO_WORKERS_ONE_HOUR, manifest)["usd"] == cost["usd"]


def test_local_costs_nothing_and_unknown_is_unknown(tmp_path):
    run = write_run(tmp_path, meta(provider="local", target="local"), TWO_WORKERS_ONE_HOUR)
    assert estimate_run_cost(run.meta, run.workers, None)["usd"] == 0.0
    unknown = estimate_run_cost(dict(run.meta, provider="address"), run.workers, None)
    assert unknown["usd"] is None and unknown["basis"]["core_hours"] == 4.0


def test_crashed_run_without_end_time_bills_until_the_last_timestamp(tmp_path):
    lines = [
        worker_line("worker_added", 0, "2026-05-20T03:52:00.000000Z", nthreads=1),
        worker_line("worker_added", 1, "2026-05-20T03:52:00.000000Z", nthreads=1),
        worker_line(
            "worker_crashed", 1, "2026-05-20T04:22:00.000000Z", nthreads=1, uptime_s=1800.0
        ),
        '{"schema_version":1,"timestamp":"2026-05-20T04:23:0',  # torn by the crash
    ]
    path = tmp_path / RUN_ID
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"run_id": RUN_ID, **meta(end_time=None)}))
    (path / "workers.jsonl").write_text(
        "".join((w if isinstance(w, str) else json.dumps(w)) + "\n" for w in lines)
    )
    run = load_run(path)
    cost = estimate_run_cost(run.meta, run.workers, None)
    # worker 1: 0.5 h; worker 0 never ended: until the last timestamp seen (04:22), 0.5 h
    assert cost["basis"]["core_hours"] == 1.0
    assert cost["basis"]["open_workers"] == 1
    assert cost["basis"]["billed_until"] == "last timestamp seen"
    # a later timestamp from the run's other files bills the open worker longer
    later = estimate_run_cost(run.meta, run.workers, None, last_seen="2026-05-20T04:52:00Z")
    assert later["basis"]["core_hours"] == 1.5
    assert later["usd"] == pytest.approx(1.5 * 0.02 + 1.5 * 4 * 0.0025)


def test_open_worker_of_a_finished_run_is_billed_until_end_time(tmp_path):
    lines = [worker_line("worker_added", 0, "2026-05-20T03:52:00.000000Z", nthreads=1)]
    run = write_run(tmp_path, meta(end_time="2026-05-20T05:52:00.000000Z"), lines)
    cost = estimate_run_cost(run.meta, run.workers, None)
    assert cost["basis"]["core_hours"] == 2.0 and cost["basis"]["billed_until"] == "end_time"


def test_lines_without_span_ids_match_by_address_and_no_memory_limit_bills_no_memory():
    lines = [
        {
            "timestamp": "2026-05-20T03:00:00Z",
            "event": "worker_added",
            "worker": "a",
            "nthreads": 1,
            "memory_limit": 0,
        },
        {
            "timestamp": "2026-05-20T04:00:00Z",
            "event": "worker_removed",
            "worker": "a",
            "nthreads": 1,
            "memory_limit": 0,
        },
        {
            "timestamp": "2026-05-20T04:00:00Z",
            "event": "worker_added",
            "worker": "a",
            "nthreads": 1,
            "memory_limit": 0,
        },
        {
            "timestamp": "2026-05-20T04:30:00Z",
            "event": "worker_removed",
            "worker": "a",
            "nthreads": 1,
            "memory_limit": 0,
        },
    ]
    cost = estimate_run_cost({"provider": "aws", "end_time": "2026-05-20T05:00:00Z"}, lines)
    assert cost["basis"]["core_hours"] == 1.5 and cost["basis"]["memory_gb_hours"] == 0
    assert cost["basis"]["workers_without_memory_limit"] == 2
    assert cost["usd"] == pytest.approx(1.5 * DEFAULT_RATES["aws"]["cpu_hour"])


def test_empty_workers_frame(tmp_path):
    empty = pd.DataFrame()
    cost = estimate_run_cost(meta(provider="local", end_time=None), empty, None)
    assert cost["usd"] == 0.0
    assert cost["basis"]["core_hours"] == 0 and cost["basis"]["workers"] == 0
    assert cost["basis"]["billed_until"] is None
    assert estimate_run_cost(meta(provider="mainframe"), empty)["usd"] is None
