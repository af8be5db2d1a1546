"""Estimated cost of a run from provider rates: core-hours and GB-hours of worker uptime.

A run is billed for what its workers held, not for what its tasks used: every worker
counts `nthreads` cores and `memory_limit` bytes from its `worker_added` line to its
`worker_removed` or `worker_crashed` line. Rates are per core-hour and per GB-hour
(1 GB = 2**30 bytes, as cloud providers bill memory); each provider has a documented
default, and a target of the manifest can set its own under `cost:`:

```yaml
targets:
  hpc:
    provider: slurm
    cost: {cpu_hour: 0.05, memory_gb_hour: 0.005}
```
"""

from __future__ import annotations

import math
from numbers import Real
from typing import TYPE_CHECKING

from .. import semconv as sc
from ..errors import ScalableError
from ..rundir import parse_iso
from .facts import finite_number

if TYPE_CHECKING:  # pandas loads only where a DataFrame is handed in (the CLI stays quick)
    import pandas as pd

GB = 2**30
COST_KEY = "cost"
CPU_HOUR = "cpu_hour"
MEMORY_GB_HOUR = "memory_gb_hour"

#: USD per core-hour and per GB-hour. Rough public list prices of on-demand compute in a US
#: region (a starting point for comparing runs, not a quote): the cloud figures are the
#: per-vCPU and per-GB prices of serverless containers (AWS Fargate, GCP N2 custom machine
#: types, Azure Container Instances, GKE Autopilot for kubernetes); batch schedulers use a
#: typical academic recharge rate. Set `cost:` on the target for your real rates.
DEFAULT_RATES: dict[str, dict[str, float]] = {
    "local": {CPU_HOUR: 0.0, MEMORY_GB_HOUR: 0.0},
    "slurm": {CPU_HOUR: 0.02, MEMORY_GB_HOUR: 0.0025},
    "pbs": {CPU_HOUR: 0.02, MEMORY_GB_HOUR: 0.0025},
    "sge": {CPU_HOUR: 0.02, MEMORY_GB_HOUR: 0.0025},
    "lsf": {CPU_HOUR: 0.02, MEMORY_GB_HOUR: 0.0025},
    "aws": {CPU_HOUR: 0.04048, MEMORY_GB_HOUR: 0.004445},
    "gcp": {CPU_HOUR: 0.031611, MEMORY_GB_HOUR: 0.004237},
    "azure": {CPU_HOUR: 0.0486, MEMORY_GB_HOUR: 0.0054},
    "kubernetes": {CPU_HOUR: 0.0445, MEMORY_GB_HOUR: 0.0049225},
}
PROVIDER_ALIASES = {"k8s": "kubernetes", "google": "gcp", "gce": "gcp", "ec2": "aws"}

#: Weights of CPU against memory where a provider's rates are zero or unknown (local runs):
#: the aws defaults, so that a saving in % still means "of a typical cloud bill".
REFERENCE_RATES: dict[str, float] = dict(DEFAULT_RATES["aws"])


class CostError(ScalableError):
    """A `cost:` setting of a manifest target that is not a rate."""


def _provider(provider: str | None) -> str:
    name = str(provider or "").strip().lower()
    return PROVIDER_ALIASES.get(name, name)


def _short(value, show=repr) -> str:
    """`show(value)` for a one-line message, cut to 60 characters (never an error for an
    integer too long to print)."""
    try:
        text = show(value)
    except ValueError:  # an integer of more than 4,300 digits
        text = "a very large integer"
    return text if len(text) <= 60 else text[:57] + "..."


def _finite(value) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond a double
        return False


def _rate(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not _finite(value):
        raise CostError(f"cost.{key} must be a number of USD (0 or more), not {_short(value)}")
    if value < 0:
        raise CostError(f"cost.{key} must be 0 or more, not {_short(value)}")
    return float(value)


def rates_for(
    provider: str | None, target_settings: dict | None = None, *, target: str | None = None
) -> dict:
    """USD rates of a provider, with the target's `cost:` settings over the defaults.

    Returns `{"provider", "cpu_hour", "memory_gb_hour", "source"}`. The rates are `None`
    when neither the provider's defaults nor the target set them (an unknown provider, or a
    scheduler `address`); `source` is `default`, `manifest`, `default+manifest` or `none`.
    A key the target leaves out keeps the default (0 for a provider without defaults).
    A `cost:` that is not a mapping of those two keys to numbers of 0 or more raises
    `CostError` (a `ScalableError`), naming `target` when given.

    >>> rates_for("slurm", {"cost": {"cpu_hour": 0.05}})["cpu_hour"]
    0.05
    >>> rates_for("local")["cpu_hour"]
    0.0
    """
    name = _provider(provider)
    default = DEFAULT_RATES.get(name)
    where = f"target {target!r}: " if target else ""
    override = (target_settings or {}).get(COST_KEY)
    if override is not None and not isinstance(override, dict):
        raise CostError(
            f"{where}cost must be a mapping of {CPU_HOUR} and {MEMORY_GB_HOUR}, "
            f"not {_short(override)}"
        )
    override = dict(override or {})
    unknown = sorted(_short(k, str) for k in override if k not in (CPU_HOUR, MEMORY_GB_HOUR))
    if unknown:
        raise CostError(
            f"{where}unknown key cost.{unknown[0]} (the keys are {CPU_HOUR} and {MEMORY_GB_HOUR})"
        )
    try:
        override = {k: _rate(v, k) for k, v in override.items()}
    except CostError as exc:
        raise CostError(f"{where}{exc}") from None
    if default is None and not override:
        return {"provider": name, CPU_HOUR: None, MEMORY_GB_HOUR: None, "source": "none"}
    rates = dict(default or {CPU_HOUR: 0.0, MEMORY_GB_HOUR: 0.0})
    rates.update(override)
    if not override:
        source = "default"
    elif default is None or len(override) == 2:
        source = "manifest"
    else:
        source = "default+manifest"
    return {"provider": name, **rates, "source": source}


def rates_known(rates: dict) -> bool:
    """Whether `rates` (from `rates_for`) can price anything."""
    return rates.get(CPU_HOUR) is not None and rates.get(MEMORY_GB_HOUR) is not None


def resource_cost(
    cpus: float, memory_bytes: float | None, hours: float, rates: dict
) -> float | None:
    """USD for holding `cpus` cores and `memory_bytes` for `hours` at `rates`; None if unknown.

    `memory_bytes=None` prices the CPUs alone.

    >>> resource_cost(4, 16 * 2**30, 1.0, {"cpu_hour": 0.02, "memory_gb_hour": 0.0025})
    0.12
    """
    if not rates_known(rates):
        return None
    usd = cpus * hours * rates[CPU_HOUR]
    if memory_bytes:
        usd += memory_bytes / GB * hours * rates[MEMORY_GB_HOUR]
    return round(usd, 9)


def _records(workers) -> list[dict]:
    if hasattr(workers, "to_dict") and hasattr(workers, "columns"):  # a pandas DataFrame
        return workers.to_dict("records")
    return [w for w in workers or () if isinstance(w, dict)]


def target_settings(meta: dict, manifest) -> dict | None:
    """The settings of the run's target in `manifest` (a `Manifest` or its dict), or None."""
    data = getattr(manifest, "data", manifest)  # a Manifest or its dict
    if not isinstance(data, dict):
        return None
    targets = data.get("targets") or {}
    settings = targets.get(meta.get("target")) if isinstance(targets, dict) else None
    return settings if isinstance(settings, dict) else None


def _worker_spans(rows: list[dict]) -> list[tuple[dict, dict | None]]:
    """(worker_added line, its end line or None): matched by span id, else by address."""
    ends = [r for r in rows if r.get("event") in (sc.WORKER_REMOVED, sc.WORKER_CRASHED)]
    by_span = {r["span_id"]: i for i, r in enumerate(ends) if isinstance(r.get("span_id"), str)}
    used = set(by_span.values())  # an end with a span id belongs to that span only
    spans = []
    for added in (r for r in rows if r.get("event") == sc.WORKER_ADDED):
        span = added.get("span_id")
        index = by_span.get(span) if isinstance(span, str) else None
        if index is None:  # lines without span ids: the first later end of the same address
            start = parse_iso(added.get("timestamp"))
            for i, candidate in enumerate(ends):
                if i in used or candidate.get("worker") != added.get("worker"):
                    continue
                stamp = parse_iso(candidate.get("timestamp"))
                if start is None or stamp is None or stamp >= start:
                    index = i
                    break
            if index is not None:
                used.add(index)
        spans.append((added, ends[index] if index is not None else None))
    return spans


def worker_uptimes(meta: dict, workers, *, last_seen=None) -> tuple[list, dict]:
    """Each worker's `worker_added` line and its uptime in seconds (None when it cannot be
    told), and `{"open_workers", "billed_until"}`: the rule `estimate_run_cost` states for
    a worker without an end line. `workers` as `estimate_run_cost` takes them."""
    rows = _records(workers)
    run_end = parse_iso(meta.get("end_time"))
    billed_until = "end_time" if run_end is not None else None
    if run_end is None:
        seen = [parse_iso(r.get("timestamp")) for r in rows] + [parse_iso(last_seen)]
        seen = [s for s in seen if s is not None]
        run_end = max(seen) if seen else None
        billed_until = "last timestamp seen" if run_end is not None else None
    uptimes = []
    open_workers = 0
    for added, end in _worker_spans(rows):
        start = parse_iso(added.get("timestamp"))
        uptime = finite_number(end.get("uptime_s")) if end is not None else None
        if uptime is None:
            stop = parse_iso(end.get("timestamp")) if end is not None else run_end
            if end is None:
                open_workers += 1
            uptime = None if start is None or stop is None else max(0.0, stop - start)
        uptimes.append((added, uptime))
    return uptimes, {"open_workers": open_workers, "billed_until": billed_until}


def estimate_run_cost(
    meta: dict,
    workers: pd.DataFrame | list[dict],
    manifest: dict | None = None,
    *,
    last_seen=None,
) -> dict:
    """Estimated cost of one run: worker uptime x nthreads and memory_limit, at the rates.

    `meta` is run.json; `workers` the run's workers.jsonl, as `load_run(...).workers` gives
    it or as the dicts `rundir.read_lines` gives; `manifest` the manifest's data
    (manifest.yaml, or a `Manifest`) for the target's `cost:` rates.

    A worker with no end line is billed until run.json's `end_time`; in a run still going or
    crashed (no `end_time`) until the last timestamp seen: the latest of `workers` and of
    `last_seen` (pass the latest timestamp of the run's other files for a closer figure).
    A worker without a memory limit (`memory_limit` 0) bills no memory.

    Returns `{"usd", "provider", "target", "rates", "basis"}`: `usd` is None when no rate
    is known; `basis` holds `core_hours`, `memory_gb_hours`, `worker_hours`, `workers`,
    `open_workers` (without an end line), `workers_without_memory_limit` and `billed_until`
    (`end_time`, `last timestamp seen` or None).

    >>> from scalable_otel.analysis import load_run                  # doctest: +SKIP
    >>> run = load_run(last=True)                                     # doctest: +SKIP
    >>> estimate_run_cost(run.meta, run.workers)["usd"]               # doctest: +SKIP
    0.0
    """
    rates = rates_for(
        meta.get("provider") or "local", target_settings(meta, manifest), target=meta.get("target")
    )
    uptimes, ends = worker_uptimes(meta, workers, last_seen=last_seen)
    core_s = memory_gb_s = worker_s = 0.0
    no_limit = 0
    for added, uptime in uptimes:
        if uptime is None:
            continue
        nthreads = finite_number(added.get("nthreads")) or 1.0
        memory_limit = finite_number(added.get("memory_limit")) or 0.0
        if memory_limit <= 0:
            no_limit += 1
        worker_s += uptime
        core_s += uptime * nthreads
        memory_gb_s += uptime * memory_limit / GB
    spans, open_workers, billed_until = uptimes, ends["open_workers"], ends["billed_until"]
    basis = {
        "core_hours": round(core_s / 3600, 9),
        "memory_gb_hours": round(memory_gb_s / 3600, 9),
        "worker_hours": round(worker_s / 3600, 9),
        "workers": len(spans),
        "open_workers": open_workers,
        "workers_without_memory_limit": no_limit,
        "billed_until": billed_until,
    }
    usd = None
    if rates_known(rates):
        usd = round(
            basis["core_hours"] * rates[CPU_HOUR]
            + basis["memory_gb_hours"] * rates[MEMORY_GB_HOUR],
            6,
        )
    return {
        "usd": usd,
        "provider": rates["provider"],
        "target": meta.get("target"),
        "rates": rates,
        "basis": basis,
    }
