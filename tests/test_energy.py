"""Energy and carbon: the Green Algorithms formula and its constants, a host's RAPL counters,
and the figures of real runs in report, compare, trends, advise, the HTML page and the
OTel metrics."""

import html
import socket

import orjson
import pytest
from click.testing import CliRunner
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from scalable_otel import PipelineOptions, RecordingOptions, ScalableSession
from scalable_otel import energy_model as em
from scalable_otel import semconv as sc
from scalable_otel.analysis import load_run
from scalable_otel.analysis.energy import allocation_saving, format_energy, run_energy
from scalable_otel.analysis.report import format_report, report
from scalable_otel.cli import main
from scalable_otel.manifest import Manifest, ManifestError
from scalable_otel.powercap import CounterTotals, counter_delta, read_counters, zones
from tests import workloads
from tests.conftest import events, wait_for

GIB = 2**30
MAX_RANGE = 10_000_000  # µJ: small, so that the test's increments wrap the counter
ADDED = [1_000_000, 1_000_001, 1_000_002, 1_000_003]  # distinct, so four tasks run


# --- the method ---------------------------------------------------------------------------------
def test_formula_against_the_published_method():
    # Green Algorithms: E = t x (n_c x P_c x u_c + n_m x P_m) x PUE, C = E x CI. One core at
    # 12 W fully used with 16 GB for an hour, PUE 1.67: (12 + 16 x 0.3725) x 1.67 = 29.9932 Wh
    c = em.constants()
    joules = em.energy_j(3600, 1.0, 16 * GIB, c)
    assert joules / 3600 == pytest.approx(29.9932)
    assert em.carbon_g(joules, c) == pytest.approx(0.0299932 * 475)
    # the usage factor: 4 cores at 50 % are 2 busy cores
    assert em.energy_j(3600, 4 * 0.5, 0, c) / 3600 == pytest.approx(2 * 12 * 1.67)
    assert allocation_saving(16 * GIB, 8 * GIB, c) == {
        "wh": pytest.approx(8 * 0.3725 * 1.67),
        "carbon_g": pytest.approx(8 * 0.3725 * 1.67 / 1000 * 475),
    }


def test_constants_options_over_manifest_over_defaults():
    c = em.constants({"pue": 1.2, "carbon_intensity": 100}, {"pue": 1.5})
    assert (c["pue"], c["carbon_intensity"], c["power_per_core_w"]) == (1.5, 100.0, 12.0)
    assert c["source"] == {
        "power_per_core_w": "default",
        "memory_w_per_gb": "default",
        "pue": "option",
        "carbon_intensity": "manifest",
    }
    tdp = em.constants({"processor_tdp_w": 205, "processor_cores": 32})
    assert tdp["power_per_core_w"] == pytest.approx(205 / 32)


@pytest.mark.parametrize(
    "settings, said",
    [
        ({"pue": 0.9}, "energy.pue must be a ratio, 1 or more, not 0.9"),
        ({"carbon_intensity": "high"}, "energy.carbon_intensity must be a number of grams"),
        ({"power_per_core_w": float("nan")}, "energy.power_per_core_w must be a number"),
        ({"processor_tdp_w": 205}, "go together"),
        ({"watts": 3}, "unknown key energy.watts"),
        ([1, 2], "energy must be a mapping"),
    ],
)
def test_a_bad_constant_is_a_one_line_manifest_error(settings, said):
    data = {"targets": {"hpc": {"provider": "slurm", "energy": settings}}}
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict(data)
    assert said in str(caught.value) and "targets.hpc" in str(caught.value)
    assert "\n" not in str(caught.value)


# --- RAPL counters ------------------------------------------------------------------------------
def test_counter_wraps_and_readings_out_of_order():
    assert counter_delta(9_500_000, 500_000, MAX_RANGE) == 1_000_000  # a wrap
    assert counter_delta(2_000_000, 1_900_000, MAX_RANGE) == 0  # an older reading
    assert counter_delta(500_000, 9_500_000, MAX_RANGE) == 0  # older, from before a wrap
    totals = CounterTotals()
    # two workers of one host read the same counter: it counts once
    for host, value in [("a", 100), ("a", 100), ("b", 7), ("a", 250), ("a", 240), ("a", 300)]:
        totals.add(host, {"intel-rapl:0": value}, {"intel-rapl:0": MAX_RANGE})
    assert totals.host_uj("a") == 200 and totals.host_uj("b") == 0


def zone(root, name, label, energy=0, max_range=MAX_RANGE):
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy}\n")
    (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    return path


def test_zones_as_the_kernel_lays_them_out(tmp_path):
    package = zone(tmp_path, "intel-rapl:0", "package-0", 5)
    zone(package, "intel-rapl:0:0", "core", 3)  # inside the package: not counted again
    zone(package, "intel-rapl:0:1", "dram", 2)  # memory, outside the package
    zone(tmp_path, "intel-rapl:1", "package-1", 7)
    assert [p.name for p in zones(tmp_path)] == ["intel-rapl:0", "intel-rapl:1", "intel-rapl:0:1"]
    assert read_counters(zones(tmp_path)) == (
        {"intel-rapl:0": 5, "intel-rapl:1": 7, "intel-rapl:0:1": 2},
        {"intel-rapl:0": MAX_RANGE, "intel-rapl:1": MAX_RANGE, "intel-rapl:0:1": MAX_RANGE},
    )
    zone(tmp_path, "intel-rapl:2", "psys", 11)  # the platform covers all of them
    assert [p.name for p in zones(tmp_path)] == ["intel-rapl:2"]


def test_an_unreadable_counter_is_no_measurement(tmp_path):
    package = zone(tmp_path, "intel-rapl:0", "package-0")
    (package / "energy_uj").unlink()
    (package / "energy_uj").mkdir()  # a read fails, as a root-only file does for a user
    assert read_counters(zones(tmp_path)) is None
    assert read_counters(zones(tmp_path / "no-such-dir")) is None


# --- real runs ----------------------------------------------------------------------------------
MANIFEST = {
    "version": 1,
    "project": {"name": "energy"},
    "targets": {
        "local": {
            "provider": "local",
            "max_workers": 2,
            "threads_per_worker": 1,
            "energy": {"pue": 1.2, "carbon_intensity": 100},
        }
    },
    "components": {"big": {"cpus": 1, "memory": "2G"}},
    "tasks": {"allocate": {"component": "big"}},
}


def energy_points(metrics) -> dict:
    found = {}
    for rm in metrics.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name in (sc.METRIC_ENERGY, sc.METRIC_CARBON):
                    for point in metric.data.data_points:
                        key = (metric.name, *sorted(point.attributes.items()))
                        found[key] = point.value
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: no readable counter (estimated), with the manifest's constants. Run B: a
    powercap directory whose package counter the tasks advance, across a wrap."""
    root = tmp_path_factory.mktemp("energy")
    empty, powercap = root / "no-powercap", root / "powercap"
    empty.mkdir()
    counter = zone(powercap, "intel-rapl:0", "package-0", MAX_RANGE - 1_500_000) / "energy_uj"
    common = dict(
        target="local",
        n_workers=2,
        threads_per_worker=1,
        runs_dir=root / "runs",
        cache_dir=root / "cache",
        recording=RecordingOptions(resource_interval=0.2),
    )
    found = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCALABLE_POWERCAP_DIR", str(empty))
        reader = InMemoryMetricReader()
        with ScalableSession(
            manifest=MANIFEST, pipeline=PipelineOptions(metric_readers=[reader]), **common
        ) as s:
            s.gather(s.map(workloads.allocate, [40, 41, 42, 43], hold=0.1))
            s.gather(s.submit(workloads.burn_cpu, 0.5))
            # a worker's estimate grows from its second sample on
            found["a_metrics"] = wait_for(
                lambda: (
                    [v for k, v in energy_points(reader.get_metrics_data()).items() if v > 0]
                    and reader.get_metrics_data()
                )
            )
        found["a"] = s.run_dir

        mp.setenv("SCALABLE_POWERCAP_DIR", str(powercap))
        reader = InMemoryMetricReader()
        with ScalableSession(
            project="energy", pipeline=PipelineOptions(metric_readers=[reader]), **common
        ) as s:
            # both workers have read the counter before any task advances it
            wait_for(
                lambda: (
                    len(
                        {
                            e["worker"]
                            for e in events(s.run_dir, "resources.jsonl", "resource_sample")
                            if e["energy_uj"] is not None
                        }
                    )
                    == 2
                )
            )
            s.gather(s.map(workloads.add_energy, [str(counter)] * 4, ADDED, [MAX_RANGE] * 4))
            assert int(counter.read_text()) < MAX_RANGE - 1_500_000  # it wrapped
            measured = (
                sc.METRIC_ENERGY,
                (sc.M_HOST, socket.gethostname()),
                (sc.M_METHOD, "measured"),
            )
            wanted = sum(ADDED) / 1e6 * 1.67
            found["b_metrics"] = wait_for(
                lambda: (
                    energy_points(reader.get_metrics_data()).get(measured, 0) >= wanted - 1e-6
                    and reader.get_metrics_data()
                )
            )
        found["b"] = s.run_dir
    found["root"] = root / "runs"
    return found


def test_samples_carry_the_host_and_its_counters(runs):
    a = events(runs["a"], "resources.jsonl", "resource_sample")
    b = events(runs["b"], "resources.jsonl", "resource_sample")
    assert {e["host"] for e in a + b} == {socket.gethostname()}
    assert all(e["energy_uj"] is None and e["energy_zones"] is None for e in a)
    assert all(e["energy_zones"] == ["intel-rapl:0"] for e in b)
    assert all(e["energy_range_uj"] == [MAX_RANGE] for e in b)


def test_a_run_without_counters_is_estimated(runs):
    run = load_run(runs["a"])
    energy = report(run)["energy"]
    assert energy["method"] == em.METHOD_ESTIMATED and energy["measured"] is None
    c = energy["constants"]
    assert (c["pue"], c["carbon_intensity"]) == (1.2, 100.0)
    assert c["source"]["pue"] == "manifest" and c["source"]["power_per_core_w"] == "default"
    # memory held: each worker's memory limit for its uptime, 0.3725 W/GB, PUE 1.2
    workers = events(runs["a"], "workers.jsonl", "worker_removed")
    memory_j = sum(w["uptime_s"] * w["memory_limit"] / GIB * 0.3725 * 1.2 for w in workers)
    assert energy["estimated"]["memory_kwh"] == pytest.approx(memory_j / 3.6e6, rel=1e-3)
    assert energy["estimated"]["cpu_kwh"] > 0
    assert energy["kwh"] == pytest.approx(
        energy["estimated"]["cpu_kwh"] + energy["estimated"]["memory_kwh"], rel=1e-6
    )
    assert energy["carbon_g"] == pytest.approx(energy["kwh"] * 100, rel=1e-6)
    # per task: CPU seconds x 12 W + peak memory x wall time x 0.3725 W/GB, x PUE 1.2
    usage = events(runs["a"], "resources.jsonl", "task_resources")
    allocate_j = sum(
        (u["cpu_seconds"] * 12 + u["peak_memory_bytes"] / GIB * u["wall_s"] * 0.3725) * 1.2
        for u in usage
        if u["task"] == "allocate"
    )
    by_task = energy["tasks"]["by_task"]
    assert set(by_task) == {"allocate", "burn_cpu"}
    assert by_task["allocate"]["joules"] == pytest.approx(allocate_j, abs=1e-3)
    assert by_task["allocate"]["executions"] == 4
    # the run's workers cost more than their tasks: they were up between them too
    assert energy["joules"] > energy["tasks"]["joules"]
    line = next(x for x in format_report(report(run)).splitlines() if x.startswith("Energy:"))
    assert line.endswith("(Green Algorithms estimate; PUE 1.2, 100 g/kWh, 12 W/core)")


def test_a_run_with_counters_is_measured_across_the_wrap(runs):
    energy = run_energy(load_run(runs["b"]))
    assert energy["method"] == em.METHOD_MEASURED
    host = socket.gethostname()
    measured = energy["measured"]
    assert measured["hosts"] == {host: pytest.approx(sum(ADDED) / 1e6)}  # J, counted once
    assert measured["zones"] == ["intel-rapl:0"] and measured["unmeasured_hosts"] == []
    assert energy["joules"] == pytest.approx(sum(ADDED) / 1e6 * 1.67, abs=1e-3)  # PUE default
    assert energy["carbon_g"] == pytest.approx(sum(ADDED) / 1e6 * 1.67 / 3.6e6 * 475, rel=1e-3)
    assert energy["estimated"]["kwh"] > 0  # still there, for comparison
    assert "(measured by RAPL; PUE 1.67, 475 g/kWh)" in format_energy(energy)


def test_otel_metrics_of_both_methods(runs):
    a = energy_points(runs["a_metrics"])
    estimated = {k: v for k, v in a.items() if (sc.M_METHOD, "estimated") in k}
    assert estimated and all(v > 0 for v in estimated.values())
    assert {dict(k[1:])[sc.M_WORKER] for k in estimated} <= {"0", "1"}
    for (name, *attrs), value in estimated.items():
        if name == sc.METRIC_CARBON:  # the manifest's 100 g/kWh
            joules = a[(sc.METRIC_ENERGY, *attrs)]
            assert value == pytest.approx(joules / 3.6e6 * 100)
    b = energy_points(runs["b_metrics"])
    host = socket.gethostname()
    key = (sc.M_HOST, host), (sc.M_METHOD, "measured")
    assert b[(sc.METRIC_ENERGY, *key)] == pytest.approx(sum(ADDED) / 1e6 * 1.67)
    assert b[(sc.METRIC_CARBON, *key)] == pytest.approx(sum(ADDED) / 1e6 * 1.67 / 3.6e6 * 475)


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_command_line_constants_override_the_manifest(runs):
    root = str(runs["root"])
    a = runs["a"].name
    base = orjson.loads(invoke("report", a, "--runs-dir", root, "--format", "json"))["energy"]
    data = orjson.loads(
        invoke(
            "report",
            a,
            "--runs-dir",
            root,
            "--format",
            "json",
            "--pue",
            "1.5",
            "--carbon-intensity",
            "200",
            "--power-per-core",
            "6",
        )
    )["energy"]
    c = data["constants"]
    assert (c["pue"], c["carbon_intensity"], c["power_per_core_w"]) == (1.5, 200.0, 6.0)
    assert set(c["source"].values()) == {"option", "default"}
    est, old = data["estimated"], base["estimated"]
    assert est["memory_kwh"] == pytest.approx(old["memory_kwh"] * 1.5 / 1.2, rel=1e-6)
    assert est["cpu_kwh"] == pytest.approx(old["cpu_kwh"] * 0.5 * 1.5 / 1.2, rel=1e-6)
    assert data["carbon_g"] == pytest.approx(data["kwh"] * 200, rel=1e-6)


def test_compare_trends_and_html_show_the_same_figures(runs, tmp_path):
    root = str(runs["root"])
    a, b = runs["a"].name, runs["b"].name
    ea = run_energy(load_run(runs["a"]))
    eb = run_energy(load_run(runs["b"]))
    compared = orjson.loads(
        invoke("report", "--compare", a, b, "--runs-dir", root, "--format", "json")
    )
    figure = compared["figures"]["energy_kwh"]
    assert (figure["a"], figure["b"]) == (ea["kwh"], eb["kwh"])
    assert figure["change"] == pytest.approx(eb["kwh"] - ea["kwh"])
    assert compared["figures"]["carbon_g"]["b"] == eb["carbon_g"]
    text = invoke("report", "--compare", a, b, "--runs-dir", root)
    assert any(line.startswith("Energy ") for line in text.splitlines())
    assert any(line.startswith("Carbon (CO2e) ") for line in text.splitlines())

    history = orjson.loads(invoke("trends", "--runs-dir", root, "--format", "json"))
    assert [(r["energy_kwh"], r["energy_method"]) for r in history["runs"]] == [
        (ea["kwh"], em.METHOD_ESTIMATED),
        (eb["kwh"], em.METHOD_MEASURED),
    ]
    assert "Energy" in invoke("trends", "--runs-dir", root).splitlines()[2]

    page = tmp_path / "report.html"
    invoke("report", b, "--runs-dir", root, "--html", str(page))
    assert f"<dt>Energy</dt><dd>{html.escape(format_energy(eb))}</dd>" in page.read_text()


def test_advise_says_what_the_recommendation_saves(runs):
    root = str(runs["root"])
    data = orjson.loads(
        invoke("advise", "--task", "allocate", "--runs-dir", root, "--format", "json")
    )
    assert data["current_memory_bytes"] == 2 * GIB
    held_less = (2 * GIB - data["recommended_memory_bytes"]) / GIB
    assert data["energy_saved_wh_per_task_hour"] == pytest.approx(held_less * 0.3725 * 1.2)
    assert data["carbon_saved_g_per_task_hour"] == pytest.approx(
        held_less * 0.3725 * 1.2 / 1000 * 100
    )
    text = invoke("advise", "--task", "allocate", "--runs-dir", root, "--pue", "2")
    (line,) = [x for x in text.splitlines() if x.startswith("  Energy:")]
    saved_wh = held_less * 0.3725 * 2
    assert f"saves {saved_wh:.3g} Wh" in line and "PUE 2," in line


def test_a_bad_constant_in_a_runs_manifest_costs_the_figure_not_the_report(runs, tmp_path):
    import shutil

    import yaml

    copy = tmp_path / runs["a"].name
    shutil.copytree(runs["a"], copy)
    manifest = yaml.safe_load((copy / "manifest.yaml").read_text())
    manifest["targets"]["local"]["energy"]["pue"] = 0.5
    (copy / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    summary = report(load_run(copy))
    assert summary["energy"]["kwh"] is None
    assert summary["energy"]["error"] == (
        "target 'local': energy.pue must be a ratio, 1 or more, not 0.5"
    )
    assert "Energy:         unknown (target 'local': energy.pue" in format_report(summary)


def test_each_worker_s_readings_count_in_its_own_order_not_its_stamps(tmp_path):
    # distributed 2024.12 on a loaded host: Dask's estimate of a worker's clock offset moved
    # between samples, so stamps put a worker's reading after the wrap (2.5 J) before one
    # taken earlier (8.5 J); the file holds each worker's readings in the order it took them
    from tests.test_html_figures import run_dir, stamp, worker

    a, b = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"

    def sample(t, address, uj):
        return {
            "event": "resource_sample",
            "timestamp": stamp(t),
            "worker": address,
            "host": "node-1",
            "cpu_percent": 0.0,
            "memory_bytes": 0,
            "energy_zones": ["intel-rapl:0"],
            "energy_uj": [uj],
            "energy_range_uj": [MAX_RANGE],
        }

    resources = [
        sample(1.2, a, 8_500_000),
        sample(1.1, b, 8_500_000),
        sample(1.0, a, 2_500_006),  # stamped before, taken after
        sample(1.3, b, 2_500_006),
        sample(1.9, a, 2_500_006),
    ]
    workers = [
        worker("worker_added", 0, a, "0", memory_limit=1 << 30, host="node-1"),
        worker("worker_added", 0, b, "1", memory_limit=1 << 30, host="node-1"),
    ]
    energy = run_energy(run_dir(tmp_path, resources=resources, workers=workers))
    assert energy["method"] == em.METHOD_MEASURED
    assert energy["measured"]["hosts"] == {"node-1": pytest.approx(sum(ADDED) / 1e6)}
