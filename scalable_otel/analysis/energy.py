"""Energy and carbon of a run and of its tasks, measured or estimated.

Every energy and carbon figure the commands, the JSON, the HTML page and `advise` show
comes from here; the arithmetic itself is `energy_model`'s (the Green Algorithms method,
its constants and their sources), which the run's OTel metrics use as well.

- **Run, estimated (Green Algorithms).** Per worker: uptime (from `workers.jsonl`, as the
  cost estimate counts it) x (busy cores x power per core + memory held x power per GB) x
  PUE. Busy cores are the worker's `resource_sample` lines' `cpu_percent / 100`, averaged
  over time (each sample covers the time since the previous one, the first since the
  worker was added), so an idle worker costs its memory and next to no CPU; a worker
  without samples counts its `nthreads` as busy (Green Algorithms' usage factor 1).
  Memory held is the worker's `memory_limit`, or without one the mean of its sampled RSS
  (Green Algorithms counts memory available).
- **Run, measured (RAPL).** Where the samples carry a host's powercap counters
  (`energy_uj`), the microjoules they advanced per host and zone (`powercap.CounterTotals`:
  several workers of a host read one counter, which counts once; a wrap at
  `max_energy_range_uj` is taken across) x PUE. The run's figure is the measurement when
  every host that sampled was measured, else the estimate; `method` says which. A
  counter is the whole host's: other work on it counts too.
- **Tasks.** Per `task_resources` line: its CPU seconds x power per core + its peak
  memory x its wall time x power per GB, x PUE. Always an estimate; the run's figure
  less the tasks' is what the workers cost while idle or busy with their own work.

Carbon is energy x carbon intensity. The constants: `--power-per-core`, `--pue` and
`--carbon-intensity` over the target's `energy:` in the run's manifest.yaml over the
defaults (`energy_model.DEFAULTS`).
"""

from __future__ import annotations

from .. import energy_model as em
from .. import semconv as sc
from ..powercap import CounterTotals
from ..rundir import RESOURCES, WORKERS, parse_iso
from .columns import epoch_us_sql
from .cost import target_settings, worker_uptimes
from .facts import finite_number
from .load import Run

__all__ = [
    "allocation_saving",
    "energy_constants",
    "format_carbon",
    "format_energy",
    "format_kwh",
    "run_energy",
]

# Each worker's sampled CPU integrated over time (a sample's cpu_percent covers the time
# since the previous one), its first sample (which covers the time since the plugin
# started, about when the worker was added), and its mean RSS.
_SAMPLES = f"""
WITH s AS (
    SELECT worker, cpu_percent, memory_bytes, {epoch_us_sql()} AS us
    FROM {{t}} WHERE event = '{sc.RESOURCE_SAMPLE}'
), d AS (
    SELECT worker, cpu_percent, memory_bytes, us,
           (us - lag(us) OVER (PARTITION BY worker ORDER BY us)) / 1e6 AS dt
    FROM s WHERE us IS NOT NULL
)
SELECT worker, sum(cpu_percent / 100 * dt) FILTER (WHERE dt > 0),
       sum(dt) FILTER (WHERE dt > 0 AND cpu_percent IS NOT NULL),
       min(us) / 1e6, arg_min(cpu_percent, us), avg(memory_bytes)
FROM d GROUP BY worker
"""

# The hosts' counter readings in time order.
# In file order, which is each worker's sampling order: the timestamps are each worker's
# clock corrected by Dask's estimate of its offset, which can move by more than a
# sampling interval between two samples (seen with distributed 2024.12 on a loaded host),
# and would put a worker's readings out of their order.
_RAPL = f"""
SELECT host, energy_zones, energy_uj, energy_range_uj FROM {{t}}
WHERE event = '{sc.RESOURCE_SAMPLE}' AND energy_uj IS NOT NULL AND host IS NOT NULL
"""
_HOSTS = f"SELECT DISTINCT host FROM {{t}} WHERE event = '{sc.RESOURCE_SAMPLE}' AND host <> ''"
_RAPL_FIELDS = {
    "host": "VARCHAR",
    "energy_zones": "VARCHAR[]",
    "energy_uj": "BIGINT[]",
    "energy_range_uj": "BIGINT[]",
}

# Per task name: CPU seconds and memory-seconds (peak bytes x wall seconds).
_TASKS = f"""
SELECT task, count(*), sum(cpu_seconds), sum(peak_memory_bytes * wall_s)
FROM {{t}} WHERE event = '{sc.TASK_RESOURCES}' AND task IS NOT NULL
GROUP BY task ORDER BY task
"""


def energy_constants(run: Run, options: dict | None = None) -> dict:
    """The constants for `run`: `options` (`power_per_core_w`, `pue`, `carbon_intensity`,
    as the command line gives them) over its target's `energy:` over the defaults.
    Raises `energy_model.EnergyError` for an unusable one."""
    settings = target_settings(run.meta, run.manifest) or {}
    return em.constants(settings.get(em.ENERGY_KEY), options, target=run.meta.get("target") or None)


def _figure(joules: float, c: dict) -> dict:
    return {"joules": joules, "kwh": em.kwh(joules), "carbon_g": em.carbon_g(joules, c)}


def _estimate(run: Run, workers: list[dict], run_end, c: dict) -> tuple[dict, dict]:
    """(the run's Green Algorithms estimate, its basis)."""
    resources = run.file(RESOURCES, ["event", "worker", "cpu_percent", "memory_bytes", "timestamp"])
    sampled = {row[0]: row[1:] for row in resources.query(_SAMPLES)}
    uptimes, ends = worker_uptimes(run.meta, workers, last_seen=run_end)
    cpu_j = memory_j = 0.0
    unsampled = 0
    worker_s = 0.0
    for added, uptime in uptimes:
        if uptime is None:
            continue
        nthreads = finite_number(added.get("nthreads")) or 1.0
        address = added.get("worker")
        busy_s, span_s, first, first_cpu, mean_rss = sampled.get(
            address if isinstance(address, str) else None, (None,) * 5
        )
        start = parse_iso(added.get("timestamp"))
        if first is not None and first_cpu is not None and start is not None and first > start:
            busy_s = (busy_s or 0.0) + first_cpu / 100 * (first - start)
            span_s = (span_s or 0.0) + first - start
        if busy_s is not None and span_s:
            busy = busy_s / span_s
        else:
            busy, unsampled = nthreads, unsampled + 1
        held = finite_number(added.get("memory_limit")) or 0.0
        if held <= 0:
            held = mean_rss or 0.0
        worker_s += uptime
        cpu_j += em.energy_j(uptime, busy, 0.0, c)
        memory_j += em.energy_j(uptime, 0.0, held, c)
    figure = _figure(cpu_j + memory_j, c)
    figure["cpu_kwh"] = em.kwh(cpu_j)
    figure["memory_kwh"] = em.kwh(memory_j)
    basis = {
        "workers": len(uptimes),
        "worker_hours": round(worker_s / 3600, 9),
        "workers_without_samples": unsampled,
        "open_workers": ends["open_workers"],
    }
    return figure, basis


def _measured(run: Run, c: dict) -> dict | None:
    """The hosts' RAPL measurement, or None when no sample carried a counter."""
    fields = ["event", "worker", "timestamp"]
    resources = run.file(RESOURCES, fields, extra=_RAPL_FIELDS)
    totals = CounterTotals()
    for host, zones, energy, ranges in resources.query(_RAPL):
        if not zones or not energy or len(zones) != len(energy):
            continue
        ranges = ranges if ranges and len(ranges) == len(zones) else [0] * len(zones)
        totals.add(host, dict(zip(zones, energy)), dict(zip(zones, ranges)))
    if not totals.readings:
        return None
    hosts = sorted(h for (h,) in resources.query(_HOSTS))
    measured = sorted(h for h, n in totals.readings.items() if n >= 2)
    joules = sum(totals.host_uj(h) for h in measured) / 1e6 * c[em.PUE]
    figure = _figure(joules, c)
    figure["hosts"] = {h: totals.host_uj(h) / 1e6 for h in measured}  # J, before PUE
    figure["zones"] = sorted({z for h in measured for z in totals.uj.get(h, {})})
    figure["unmeasured_hosts"] = [h for h in hosts if h not in measured]
    return figure


def _tasks(run: Run, c: dict) -> dict:
    fields = ["event", "task", "cpu_seconds", "peak_memory_bytes", "wall_s"]
    by_task = {}
    total = 0.0
    for task, n, cpu_s, memory_s in run.file(RESOURCES, fields).query(_TASKS):
        # energy_j(seconds=1, ...) of the sums: the method is linear in each execution
        joules = em.energy_j(1.0, cpu_s or 0.0, memory_s or 0.0, c)
        total += joules
        by_task[task] = {"executions": n, **_figure(joules, c)}
    return {**_figure(total, c), "by_task": by_task}


def run_energy(
    run: Run, workers: list[dict] | None = None, run_end=None, options: dict | None = None
) -> dict:
    """Energy and carbon of `run` (method: the module docstring).

    `workers` are its workers.jsonl lines and `run_end` its end (epoch seconds) where the
    caller has them (the report does); `options` the command line's constants.

    Returns `{"kwh", "joules", "carbon_g", "method", "estimated", "measured", "tasks",
    "constants"}`: the first three are the measurement's when `method` is
    `measured by RAPL`, else the estimate's; `measured` is None without RAPL readings.
    With an unusable constant in the manifest, `{"kwh": None, ..., "error": message}`
    (options are checked by the caller, before any run is read).

    >>> run_energy(load_run(last=True))["kwh"]                      # doctest: +SKIP
    0.000412
    """
    try:
        c = energy_constants(run, options)
    except em.EnergyError as exc:  # a bad constant costs the figure, not the report
        return {"kwh": None, "joules": None, "carbon_g": None, "method": None, "error": str(exc)}
    if run.is_beta:
        return {
            "kwh": None,
            "joules": None,
            "carbon_g": None,
            "method": None,
            "error": "no worker records in this run",
        }
    if workers is None:
        workers = run.lines(WORKERS)
    estimated, basis = _estimate(run, workers, run_end, c)
    measured = _measured(run, c)
    use = measured if measured is not None and not measured["unmeasured_hosts"] else None
    chosen = use or estimated
    return {
        "kwh": chosen["kwh"],
        "joules": chosen["joules"],
        "carbon_g": chosen["carbon_g"],
        "method": em.METHOD_MEASURED if use else em.METHOD_ESTIMATED,
        "estimated": {**estimated, "basis": basis},
        "measured": measured,
        "tasks": _tasks(run, c),
        "constants": c,
    }


def allocation_saving(current_memory: float | None, recommended_memory: float | None, c: dict):
    """Energy and carbon one task-hour saves at `recommended_memory` bytes instead of
    `current_memory` (negative: costs more), or None when either is unknown.

    Only memory counts: by the method, CPU energy follows the cores kept busy (CPU time),
    which a smaller request does not change; memory draws power for what is held.
    Returns `{"wh", "carbon_g"}`.

    >>> allocation_saving(16 * 2**30, 8 * 2**30, em.constants())["wh"]   # 8 GB x 0.3725 W x 1.67
    4.97664
    """
    if current_memory is None or recommended_memory is None:
        return None
    joules = em.energy_j(3600.0, 0.0, current_memory - recommended_memory, c)
    return {"wh": round(joules / 3600, 6), "carbon_g": round(em.carbon_g(joules, c), 6)}


def format_kwh(kwh: float | None) -> str:
    """`0.42 kWh`, `3.1 Wh`, `12 mWh`: the unit that keeps the figure readable."""
    if kwh is None:
        return "n/a"
    if abs(kwh) >= 1:
        return f"{kwh:.2f} kWh"
    if abs(kwh) >= 1e-3:
        return f"{kwh * 1e3:.3g} Wh"
    return f"{kwh * 1e6:.3g} mWh"


def format_carbon(grams: float | None, suffix: str = " CO2e") -> str:
    """`199 g CO2e`, `1.2 kg CO2e`, `0.034 g CO2e` (`suffix=""` in a CO2e column)."""
    if grams is None:
        return "n/a"
    if abs(grams) >= 1000:
        return f"{grams / 1000:.3g} kg{suffix}"
    return f"{grams:.3g} g{suffix}"


def format_energy(energy: dict) -> str:
    """The report's line: `0.42 kWh, 199 g CO2e (Green Algorithms estimate; PUE 1.67,
    475 g/kWh)`."""
    if energy.get("error"):
        return f"unknown ({energy['error']})"
    c = energy["constants"]
    how = f"{energy['method']}; PUE {c[em.PUE]:g}, {c[em.CARBON_INTENSITY]:g} g/kWh"
    if energy["method"] == em.METHOD_ESTIMATED:
        how += f", {c[em.POWER_PER_CORE]:g} W/core"
    return f"{format_kwh(energy['kwh'])}, {format_carbon(energy['carbon_g'])} ({how})"
