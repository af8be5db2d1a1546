"""Resource advice: exact figures from hand-written run directories, then one real history."""

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from scalable_otel.analysis.advise import (
    Advice,
    UnknownTask,
    advise,
    advise_all,
    format_advice,
    format_memory,
    parse_cpus,
    round_cpus,
    round_memory,
    weighted_percentile,
)
from scalable_otel.analysis.facts import size_bytes
from scalable_otel.errors import ScalableError

GIB, MIB = 2**30, 2**20
T0 = datetime(2026, 5, 20, 3, 52, tzinfo=timezone.utc)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def obs(task, cpus_used, peak, shared=False, wall_s=2.0):
    return {
        "event": "task_resources",
        "task": task,
        "key": f"{task}-x",
        "worker": "tcp://127.0.0.1:1",
        "worker_name": "0",
        "cpu_seconds": None if cpus_used is None else cpus_used * wall_s,
        "cpus_used": cpus_used,
        "peak_memory_bytes": peak,
        "wall_s": wall_s,
        "cpu_shared": shared,
    }


def write_run(
    root,
    n,
    records,
    *,
    target="local",
    provider="local",
    manifest=None,
    plan_tasks=None,
    workers=None,
    end=True,
):
    """A run directory written by hand: run n of the history, started n hours after T0."""
    start = T0 + timedelta(hours=n)
    run_id = f"run-{start:%Y%m%dT%H%M%SZ}-proj-{n:08x}"
    path = root / run_id
    path.mkdir(parents=True)
    meta = {
        "schema_version": 1,
        "run_id": run_id,
        "status": "completed" if end else "running",
        "start_time": iso(start),
        "end_time": iso(start + timedelta(minutes=10)) if end else None,
        "duration_s": 600.0 if end else None,
        "target": target,
        "provider": provider,
        "settings": {"n_workers": 2, "threads_per_worker": 1},
    }
    (path / "run.json").write_text(json.dumps(meta))
    manifest = manifest or {
        "version": 1,
        "project": {"name": "proj"},
        "targets": {target: {"provider": provider}},
    }
    (path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    (path / "plan.json").write_text(
        json.dumps({"run_id": run_id, "target": target, "tasks": plan_tasks or {}})
    )
    lines = []
    for i, record in enumerate(records):
        stamp = iso(start + timedelta(seconds=i))
        lines.append({"schema_version": 1, "timestamp": stamp, "run_id": run_id, **record})
    # resource samples are not observations
    lines.append({"schema_version": 1, "timestamp": iso(start), "event": "resource_sample"})
    (path / "resources.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    worker_lines = [
        {
            "timestamp": iso(start),
            "event": "worker_added",
            "worker": f"tcp://127.0.0.1:{w}",
            "worker_name": str(w),
            "nthreads": nthreads,
            "memory_limit": limit,
            "span_id": f"{w:016x}",
        }
        for w, (nthreads, limit) in enumerate(workers or [(1, 4 * GIB), (1, 4 * GIB)])
    ]
    (path / "workers.jsonl").write_text("".join(json.dumps(x) + "\n" for x in worker_lines))
    return path


SIM_MANIFEST = {
    "version": 1,
    "project": {"name": "demeter-lulcc"},
    "targets": {"local": {"provider": "local", "max_workers": 2, "threads_per_worker": 1}},
    "components": {"sim": {"cpus": 4, "memory": "16G"}},
    "tasks": {"run_simulation": {"component": "sim"}},
}
SIM_PLAN = {"run_simulation": {"cpus": 4, "memory": "16G", "component": "sim"}}


def tutorial_observations(task="run_simulation"):
    """100 observations whose 95th percentile is exactly 1.8 CPUs and 6.2 GiB."""
    p95_mem = int(6.2 * GIB)
    values = [(1.0, 4 * GIB)] * 90 + [(1.8, p95_mem)] * 5 + [(3.5, 10 * GIB)] * 5
    return [obs(task, c, m) for c, m in values]


def write_tutorial_history(root, **kwargs):
    """The 100 observations over three runs (34 + 33 + 33), manifest asking 4 CPUs, 16G."""
    records = tutorial_observations()
    kwargs.setdefault("manifest", SIM_MANIFEST)
    kwargs.setdefault("plan_tasks", SIM_PLAN)
    for n, part in enumerate((records[0::3], records[1::3], records[2::3])):
        last = write_run(root, n, part, **kwargs)
    return last


def test_tutorial_example_exact(tmp_path):
    last = write_tutorial_history(tmp_path)
    advice = advise("run_simulation", runs_dir=tmp_path)
    assert advice.p95_cpus == 1.8
    assert advice.p95_memory_bytes == int(6.2 * GIB)
    # 1.8 x 1.15 = 2.07 -> 2 whole CPUs (0.07 over a step is within the tolerance);
    # 6.2G x 1.15 = 7.13G -> 8G
    assert advice.recommended_cpus == 2
    assert advice.recommended_memory_bytes == 8 * GIB
    assert (advice.current_cpus, advice.current_memory_bytes) == (4, 16 * GIB)
    assert advice.savings_percent == 50.0  # half the CPUs and half the memory at any rates
    assert advice.savings_usd_per_task_hour == 0.0  # local rates are $0
    assert advice.reference_rates is True
    assert (advice.observations, advice.runs, advice.confidence) == (100, 3, "high")
    assert format_advice(advice) == (
        "Resource Recommendation for 'run_simulation':\n"
        "  Current:           4 CPUs, 16G memory\n"
        "  Recommended:       2 CPUs, 8G memory\n"
        "  Reason:            95th percentile usage is 1.8 CPUs and 6.2G memory\n"
        "  Potential savings: 50% compute cost reduction\n"
        "  Confidence:        high (100 tasks over 3 runs)\n"
        f"  Current from:      manifest: component 'sim' (plan.json of {last.name})\n"
        "  Cost rates:        $0 at local rates, so the saving is $0; the % weighs CPU and "
        "memory at reference rates ($0.04048/CPU-hour, $0.004445/GB-hour)\n"
        # Green Algorithms: 8G less held x 0.3725 W/GB x PUE 1.67 = 4.98 W; x 475 g/kWh
        "  Energy:            saves 4.98 Wh, 2.36 g CO2e per task-hour "
        "(memory at 0.3725 W/GB, PUE 1.67, 475 g/kWh)"
    )
    assert advice.energy_saved_wh_per_task_hour == pytest.approx(8 * 0.3725 * 1.67)
    data = advice.to_dict()
    json.dumps(data)  # JSON-ready
    assert data["current"] == "4 CPUs, 16G memory"
    assert data["recommended"] == "2 CPUs, 8G memory"
    assert data["can_advise"] is True


def test_too_little_history_says_so(tmp_path):
    write_run(tmp_path, 0, [obs("slow", 0.9, GIB), obs("slow", 1.0, GIB)])
    advice = advise("slow", runs_dir=tmp_path)
    assert not advice.can_advise
    assert advice.confidence == "none"
    assert advice.recommended_cpus is None and advice.savings_percent is None
    text = format_advice(advice)
    assert text.splitlines()[2] == (
        "  Recommended:       cannot advise yet: 2 observations of 'slow' (at least 3 needed)"
    )
    assert "  Confidence:        none (2 tasks over 1 run)" in text
    assert "Potential savings" not in text
    assert advice.to_dict()["recommended"] is None


def test_manifest_task_never_measured_is_no_advice_not_an_error(tmp_path):
    write_run(tmp_path, 0, [obs("other", 1.0, GIB)] * 5, manifest=SIM_MANIFEST, plan_tasks=SIM_PLAN)
    advice = advise("run_simulation", runs_dir=tmp_path)
    assert advice.observations == 0 and not advice.can_advise
    assert "cannot advise yet: 0 observations" in format_advice(advice)
    assert (advice.current_cpus, advice.current_memory_bytes) == (4, 16 * GIB)


def test_current_from_session_request(tmp_path):
    # no manifest entry: one worker thread per task, worker memory_limit / nthreads
    records = [obs("prep", 0.3, 300 * MIB)] * 20
    write_run(tmp_path, 0, records[:10], workers=[(2, 8 * GIB), (2, 8 * GIB)])
    last = write_run(tmp_path, 1, records[10:], workers=[(2, 8 * GIB), (2, 8 * GIB)])
    advice = advise("prep", runs_dir=tmp_path)
    assert (advice.current_cpus, advice.current_memory_bytes) == (1, 4 * GIB)
    assert advice.current_source == (
        f"session request (1 thread per task; worker memory_limit 8G / 2 threads, {last.name})"
    )
    assert advice.confidence == "medium"  # 20 observations over 2 runs
    # 0.3 x 1.15 -> 1 CPU (whole CPUs locally); 300M x 1.15 = 345M -> 512M
    assert (advice.recommended_cpus, advice.recommended_memory_bytes) == (1, 512 * MIB)
    # reference weights: (1 x 0.04048 + 4 x 0.004445) vs (1 x 0.04048 + 0.5 x 0.004445)
    expected = 100 * (3.5 * 0.004445) / (0.04048 + 4 * 0.004445)
    assert advice.savings_percent == pytest.approx(expected, abs=1e-6)
    text = format_advice(advice)
    assert f"  Potential savings: {expected:.0f}% compute cost reduction" in text
    assert "  Current:           1 CPU, 4G memory" in text


def test_current_from_manifest_yaml_when_plan_has_none(tmp_path):
    write_run(tmp_path, 0, tutorial_observations()[:10], manifest=SIM_MANIFEST, plan_tasks={})
    advice = advise("run_simulation", runs_dir=tmp_path)
    assert (advice.current_cpus, advice.current_memory_bytes) == (4, 16 * GIB)
    assert advice.current_source.startswith("manifest: component 'sim' (manifest.yaml of run-")


def test_under_provisioned_says_what_to_increase(tmp_path):
    manifest = dict(SIM_MANIFEST, components={"sim": {"cpus": 1, "memory": "2G"}})
    plan = {"run_simulation": {"cpus": 1, "memory": "2G", "component": "sim"}}
    write_tutorial_history(tmp_path, manifest=manifest, plan_tasks=plan)
    advice = advise("run_simulation", runs_dir=tmp_path)
    assert advice.under_provisioned
    assert advice.increase == ["CPUs to 2", "memory to 8G"]
    assert advice.savings_percent < 0
    assert "  Potential savings: none — increase CPUs to 2 and memory to 8G" in format_advice(
        advice
    )


def test_under_provisioned_in_memory_only(tmp_path):
    manifest = dict(SIM_MANIFEST, components={"sim": {"cpus": 4, "memory": "4G"}})
    plan = {"run_simulation": {"cpus": 4, "memory": "4G", "component": "sim"}}
    write_tutorial_history(tmp_path, manifest=manifest, plan_tasks=plan)
    advice = advise("run_simulation", runs_dir=tmp_path)
    assert advice.increase == ["memory to 8G"]
    assert "Potential savings: none — increase memory to 8G" in format_advice(advice)


def test_allocation_that_fits_has_no_savings(tmp_path):
    manifest = dict(SIM_MANIFEST, components={"sim": {"cpus": 2, "memory": "8G"}})
    plan = {"run_simulation": {"cpus": 2, "memory": "8G", "component": "sim"}}
    write_tutorial_history(tmp_path, manifest=manifest, plan_tasks=plan)
    advice = advise("run_simulation", runs_dir=tmp_path)
    assert not advice.under_provisioned and advice.savings_percent == 0
    assert "Potential savings: none — the current allocation already fits" in format_advice(advice)


def test_slurm_rates_from_manifest_price_the_saving(tmp_path):
    manifest = {
        **SIM_MANIFEST,
        "targets": {
            "hpc": {"provider": "slurm", "cost": {"cpu_hour": 0.05, "memory_gb_hour": 0.005}}
        },
    }
    write_tutorial_history(tmp_path, target="hpc", provider="slurm", manifest=manifest)
    advice = advise("run_simulation", runs_dir=tmp_path, target="hpc")
    assert advice.rates["source"] == "manifest" and not advice.reference_rates
    # (4 x 0.05 + 16 x 0.005) - (2 x 0.05 + 8 x 0.005) = 0.14 per task-hour
    assert advice.savings_usd_per_task_hour == pytest.approx(0.14)
    assert advice.savings_percent == 50.0
    assert format_advice(advice).splitlines()[7] == (
        "  Cost rates:        $0.05/CPU-hour and $0.005/GB-hour "
        "(the target's cost: in the manifest): $0.14 less per task-hour"
    )


def test_fractional_cpus_on_kubernetes(tmp_path):
    records = [obs("fit", 0.3, 100 * MIB)] * 12
    write_run(tmp_path, 0, records[:6], target="k8s", provider="kubernetes")
    write_run(tmp_path, 1, records[6:], target="k8s", provider="kubernetes")
    advice = advise("fit", runs_dir=tmp_path)
    # 0.3 x 1.15 = 0.345 -> 0.5 (quarter CPUs); 100M x 1.15 -> the 256M floor
    assert (advice.recommended_cpus, advice.recommended_memory_bytes) == (0.5, 256 * MIB)
    assert "  Recommended:       0.5 CPUs, 256M memory" in format_advice(advice)
    assert "  Reason:            95th percentile usage is 0.30 CPUs and 100M memory" in (
        format_advice(advice)
    )


def test_shared_observations_weigh_less_and_are_named(tmp_path):
    # 40 unshared at 1.0 CPU and 4 shared at 3.0: the shared weigh 4 x 0.25 = 1 of 41 (2.4 %),
    # so the 95th percentile is an unshared value; at full weight (4 of 44, 9 %) it would not be
    records = [obs("mix", 1.0, GIB)] * 40 + [obs("mix", 3.0, 2 * GIB, shared=True)] * 4
    write_run(tmp_path, 0, records)
    advice = advise("mix", runs_dir=tmp_path)
    assert advice.p95_cpus == 1.0 and advice.p95_memory_bytes == GIB
    assert advice.shared_observations == 4
    assert (
        "  Note:              4 of 44 observations ran beside other tasks on their worker "
        "(cpu_shared): upper bounds, counted at 0.25 weight"
    ) in format_advice(advice)
    # equal weights would have put the 95th percentile on a shared value
    assert weighted_percentile([(1.0, 1.0)] * 40 + [(3.0, 1.0)] * 4) == 3.0


def test_all_shared_is_an_upper_bound(tmp_path):
    write_run(tmp_path, 0, [obs("par", 1.5, GIB, shared=True)] * 5)
    advice = advise("par", runs_dir=tmp_path)
    assert advice.recommended_cpus == 2
    assert "all 5 observations ran beside other tasks" in format_advice(advice)
    assert "upper bound" in format_advice(advice)


def test_short_tasks_give_no_cpu_figure(tmp_path):
    write_run(tmp_path, 0, [obs("tiny", None, 150 * MIB, wall_s=0.01)] * 4)
    advice = advise("tiny", runs_dir=tmp_path)
    assert advice.p95_cpus is None and advice.recommended_cpus == 1
    assert advice.reason == (
        "95th percentile usage is 150M memory (CPU not measurable: every task ran under 0.05 s)"
    )


def test_target_and_history_filter_the_runs(tmp_path):
    write_run(tmp_path, 0, [obs("t", 3.0, 3 * GIB)] * 5, target="big", provider="local")
    write_run(tmp_path, 1, [obs("t", 0.5, GIB)] * 5)
    write_run(tmp_path, 2, [obs("t", 0.7, GIB)] * 5)
    assert advise("t", runs_dir=tmp_path, target="big").p95_cpus == 3.0
    local = advise("t", runs_dir=tmp_path, target="local")
    assert (local.p95_cpus, local.runs, local.runs_considered) == (0.7, 2, 2)
    last = advise("t", runs_dir=tmp_path, history=1)
    assert (last.p95_cpus, last.observations) == (0.7, 5)
    mixed = advise("t", runs_dir=tmp_path)
    assert "observations from targets big, local" in format_advice(mixed)
    with pytest.raises(ScalableError, match=r"no runs of target 'hpc' .*targets there: big, local"):
        advise("t", runs_dir=tmp_path, target="hpc")


def test_confidence_grows_with_observations_and_runs(tmp_path):
    write_run(tmp_path, 0, [obs("t", 0.5, GIB)] * 50)
    assert advise("t", runs_dir=tmp_path).confidence == "low"  # one run
    write_run(tmp_path, 1, [obs("t", 0.5, GIB)] * 50)
    assert advise("t", runs_dir=tmp_path).confidence == "medium"  # 100 over 2 runs
    write_run(tmp_path, 2, [obs("t", 0.5, GIB)] * 5)
    assert advise("t", runs_dir=tmp_path).confidence == "high"  # 105 over 3 runs


def test_unknown_task_names_the_known_ones(tmp_path):
    write_run(tmp_path, 0, [obs("b_task", 1, GIB), obs("a_task", 1, GIB)])
    with pytest.raises(UnknownTask) as info:
        advise("nope", runs_dir=tmp_path)
    assert isinstance(info.value, ScalableError)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"no measurements of task 'nope' in the runs in {tmp_path}; known tasks: a_task, b_task"
    )


def test_no_runs_is_a_one_line_error(tmp_path):
    with pytest.raises(ScalableError, match="no runs in"):
        advise("x", runs_dir=tmp_path / "missing")


def test_advise_all_covers_every_task(tmp_path):
    write_run(tmp_path, 0, [obs("b", 1.0, GIB)] * 3 + [obs("a", 0.5, GIB)] * 4)
    result = advise_all(runs_dir=tmp_path)
    assert [a.task for a in result] == ["a", "b"]
    assert all(isinstance(a, Advice) and a.can_advise for a in result)


def test_torn_lines_are_skipped_and_counted(tmp_path):
    path = write_run(tmp_path, 0, [obs("t", 0.5, GIB)] * 3)
    with open(path / "resources.jsonl", "a") as f:
        f.write('{"event": "task_resources", "task": "t", "cpus')
    advice = advise("t", runs_dir=tmp_path)
    assert advice.observations == 3
    assert "skipped 1 unreadable line of resources.jsonl" in format_advice(advice)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("16G", 16 * GIB),
        ("16Gi", 16 * GIB),
        ("16GiB", 16 * GIB),
        ("16GB", 16 * 10**9),
        ("512M", 512 * MIB),
        ("1.5G", int(1.5 * GIB)),
        (1024, 1024),
        ("lots", None),
        (None, None),
        (-1, None),
        (10**400, None),
        ("9" * 400 + "G", None),
        (True, None),
    ],
)
def test_sizes_are_read_as_the_manifest_reads_them(value, expected):
    assert size_bytes(value) == expected


def test_units_and_rounding():
    assert parse_cpus("500m") == 0.5 and parse_cpus(4) == 4.0 and parse_cpus("x") is None
    assert [format_memory(v) for v in (8 * GIB, 6.2 * GIB, 768 * MIB, 1.5 * GIB)] == [
        "8G",
        "6.2G",
        "768M",
        "1.5G",
    ]
    assert round_memory(10 * MIB) == 256 * MIB
    assert round_memory(GIB) == GIB
    assert round_memory(1.1 * GIB) == int(1.5 * GIB)
    assert round_memory(4.2 * GIB) == 5 * GIB
    assert round_cpus(0.01, "local") == 1 and round_cpus(2.0, "slurm") == 2
    # up to a fifth of a step over a step is dropped: CPU is compressible
    assert round_cpus(2.2, "slurm") == 2 and round_cpus(2.21, "slurm") == 3
    assert round_cpus(1.0 * 1.15, "local") == 1  # a saturated single-threaded task
    assert round_cpus(0.01, "aws") == 0.25 and round_cpus(0.3, "aws") == 0.25
    assert round_cpus(0.31, "aws") == 0.5


def test_advise_on_real_runs(demo_project):
    """Two real quickstart runs: run_simulation is measured and gets a sane recommendation."""
    runs = demo_project / ".scalable" / "runs"
    advice = advise("run_simulation", runs_dir=runs)
    assert advice.can_advise, format_advice(advice)
    assert advice.observations >= 30 and advice.runs >= 1
    assert advice.provider == "local" and advice.target == "local"
    assert advice.recommended_cpus >= 1 and advice.recommended_cpus == int(advice.recommended_cpus)
    # the peak RSS of a Dask worker process: tens of MiB at least, far below 64 GiB
    assert 32 * MIB < advice.p95_memory_bytes < 64 * GIB
    assert advice.recommended_memory_bytes >= advice.p95_memory_bytes * 1.15
    # no manifest: the session's request, one thread and the worker's memory per thread
    assert advice.current_cpus == 1
    assert advice.current_source.startswith("session request")
    assert advice.confidence in ("low", "medium", "high")
    text = format_advice(advice)
    assert text.startswith("Resource Recommendation for 'run_simulation':\n  Current:  ")
    assert "  Reason:            95th percentile usage is" in text
    names = [a.task for a in advise_all(runs_dir=runs)]
    assert "run_simulation" in names and names == sorted(names)
