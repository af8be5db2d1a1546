"""Resource advice from the run history: what each task should request, in the manner of the
Kubernetes Vertical Pod Autoscaler's recommender.

Method, for one task name:

1. **Observations.** Every `task_resources` line of that task in `resources.jsonl` of the
   runs considered (every run of the runs directory, or only those of one target, or only
   the last `history` of them) is one observation: `cpus_used` (CPU seconds / wall
   seconds; `null` for tasks under 0.05 s, which give no CPU figure) and
   `peak_memory_bytes` (the peak resident memory of the worker process during the task).
   Failed and retried executions count: a task killed for lack of memory must raise the
   advice, not vanish from it.
2. **Shared workers.** An observation with `cpu_shared: true` ran beside other tasks on its
   worker, so its CPU and its memory peak include theirs: it is an upper bound of the
   task's own use. It counts with a quarter of the weight of an unshared observation
   (`SHARED_WEIGHT`), and the advice says how many there were.
3. **Percentile.** The weighted 95th percentile of each: the smallest observed value at
   which the cumulative weight of the values at or below it reaches 95 % of the total
   weight. With equal weights that is the 95th of 100 sorted values.
4. **Margin.** VPA's `safetyMarginFraction`: x 1.15 on both.
5. **Rounding up to what the target allocates.** CPUs: whole CPUs (minimum 1) for local,
   scheduler-address and batch-scheduler providers (slurm, pbs, sge, lsf, unknown), quarter
   CPUs (minimum 0.25) for aws, gcp, azure and kubernetes, which allocate fractions. An
   excess of up to a fifth of a step over a step is dropped rather than paying for a whole
   step more (`CPU_STEP_TOLERANCE`): CPU is compressible, so the few tasks at the top run a
   little slower and none fails; and `cpus_used` includes the worker's own threads, so a
   single-threaded task that keeps its CPU busy reads slightly over 1.0. Memory gets no
   such tolerance (a task short of memory is killed): at least 256 MiB (VPA's floor is
   250 MiB), in steps of 256 MiB up to 1 GiB, of 512 MiB up to 4 GiB, of 1 GiB above,
   shown as `768M`, `1.5G`, `8G` (1G = 2**30 bytes).
6. **Confidence.** From the number of observations and of runs that have them: `none`
   under 3 observations (no advice, and it says how many there are), `low` under 10
   observations or from a single run, `high` from 100 observations over 3 runs or more,
   `medium` in between. (VPA widens its bounds the shorter its history; here the history
   is counted in tasks and runs rather than days.)
7. **Current allocation.** From the newest considered run that ran the task: the manifest's
   request (plan.json's `tasks[task]`, else the task's component in manifest.yaml), else
   the session's own request: one worker thread per task, so 1 CPU and the worker's
   `memory_limit / nthreads` (workers.jsonl). The advice says which.
8. **Savings.** The cost of one task-hour at the current and at the recommended
   allocation, at the target's rates (`cost.rates_for`: provider defaults, or the
   target's `cost:` in the manifest), as a % reduction. Where those rates are zero (local)
   or unknown, CPU and memory are weighed with `cost.REFERENCE_RATES` so the % still means
   something, and the dollar saving is $0 (or unknown). If the recommendation exceeds the
   current allocation, the task is under-provisioned and the advice says what to increase.
9. **Energy.** What one task-hour at the recommended memory saves against the current
   (`energy.allocation_saving`: memory held x 0.3725 W/GB x PUE, the Green Algorithms
   method, with the reference run's target's `energy:` constants or the command line's),
   and its carbon. CPU energy follows CPU time, which a request does not change.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import rundir
from .. import semconv as sc
from ..energy_model import CARBON_INTENSITY, MEMORY_POWER, PUE, EnergyError
from ..errors import RunNotFound, ScalableError, shown
from .columns import SKIPPED, query_files
from .cost import (
    CPU_HOUR,
    MEMORY_GB_HOUR,
    REFERENCE_RATES,
    rates_for,
    rates_known,
    resource_cost,
)
from .energy import allocation_saving, energy_constants, format_carbon, format_kwh
from .facts import finite_number, size_bytes
from .groups import KEYS_IN_GROUP
from .load import Run, read_meta

PERCENTILE = 95.0
CPU_MARGIN = 1.15
MEMORY_MARGIN = 1.15
SHARED_WEIGHT = 0.25
MIN_OBSERVATIONS = 3
LOW_BELOW_OBSERVATIONS = 10
HIGH_OBSERVATIONS = 100
HIGH_RUNS = 3

KIB, MIB, GIB = 2**10, 2**20, 2**30
MIN_MEMORY = 256 * MIB
FRACTIONAL_CPU_PROVIDERS = frozenset({"aws", "gcp", "azure", "kubernetes", "k8s"})
FRACTIONAL_CPU_STEP = 0.25
CPU_STEP_TOLERANCE = 0.2  # of a step: see the module docstring, point 5


class UnknownTask(ScalableError):
    """No task of that name in the run history."""


# --- units -----------------------------------------------------------------------------------
def parse_cpus(value) -> float | None:
    """CPUs from a manifest setting: a number, or Kubernetes millicores such as `500m`."""
    if isinstance(value, str) and value.strip().endswith("m"):
        millicores = finite_number(value.strip()[:-1])
        cpus = millicores / 1000 if millicores is not None else None
    else:
        cpus = finite_number(value)
    return cpus if cpus is not None and cpus > 0 else None


def _trim(number: float, decimals: int) -> str:
    return f"{number:.{decimals}f}".rstrip("0").rstrip(".")


def format_memory(nbytes: float | None) -> str:
    """`8G`, `6.2G`, `768M`, `12K`: binary units, one decimal at most above 1 GiB.

    >>> format_memory(8 * 2**30), format_memory(6.2 * 2**30), format_memory(768 * 2**20)
    ('8G', '6.2G', '768M')
    """
    if nbytes is None:
        return "unknown"
    if nbytes >= GIB:
        return _trim(nbytes / GIB, 1) + "G"
    if nbytes >= MIB:
        return f"{nbytes / MIB:.0f}M"
    if nbytes >= KIB:
        return f"{nbytes / KIB:.0f}K"
    return f"{nbytes:.0f}B"


def format_cpus(cpus: float | None) -> str:
    """`1 CPU`, `4 CPUs`, `0.25 CPUs`."""
    if cpus is None:
        return "unknown CPUs"
    text = _trim(cpus, 2)
    return f"{text} CPU" if text == "1" else f"{text} CPUs"


def _usage_cpus(cpus: float) -> str:
    return f"{cpus:.1f} CPUs" if cpus >= 1 else f"{cpus:.2f} CPUs"


def _allocation(cpus: float | None, memory: int | None) -> str:
    mem = "no memory limit" if memory is None else f"{format_memory(memory)} memory"
    return f"{format_cpus(cpus)}, {mem}"


# --- the method ------------------------------------------------------------------------------
def weighted_percentile(pairs: list[tuple[float, float]], q: float = PERCENTILE) -> float | None:
    """The smallest value whose cumulative weight reaches q % of the total (inverted CDF).

    >>> weighted_percentile([(float(v), 1.0) for v in range(1, 101)], 95)
    95.0
    """
    pairs = sorted((v, w) for v, w in pairs if w > 0)
    if not pairs:
        return None
    threshold = q / 100.0 * sum(w for _, w in pairs)
    cumulative = 0.0
    for value, weight in pairs:
        cumulative += weight
        if cumulative >= threshold - 1e-9:
            return value
    return pairs[-1][0]


def round_cpus(cpus: float, provider: str | None) -> float:
    """Up to what the provider allocates (quarter CPUs on cloud providers, else whole ones),
    dropping an excess of up to `CPU_STEP_TOLERANCE` of a step over a step.

    >>> round_cpus(2.07, "slurm"), round_cpus(1.5, "slurm"), round_cpus(0.345, "aws")
    (2.0, 2.0, 0.5)
    """
    step = FRACTIONAL_CPU_STEP if (provider or "").lower() in FRACTIONAL_CPU_PROVIDERS else 1.0
    lower = math.floor(cpus / step + 1e-9) * step
    rounded = lower if cpus - lower <= CPU_STEP_TOLERANCE * step + 1e-9 else lower + step
    return max(step, rounded)


def round_memory(nbytes: float) -> int:
    """Up to 256 MiB steps below 1 GiB, 512 MiB steps below 4 GiB, 1 GiB steps above."""
    nbytes = max(float(nbytes), MIN_MEMORY)
    step = 256 * MIB if nbytes <= GIB else 512 * MIB if nbytes <= 4 * GIB else GIB
    return int(math.ceil(nbytes / step - 1e-9) * step)


def confidence(observations: int, runs: int) -> str:
    """`none`, `low`, `medium` or `high` from how many observations over how many runs."""
    if observations < MIN_OBSERVATIONS:
        return "none"
    if observations < LOW_BELOW_OBSERVATIONS or runs < 2:
        return "low"
    if observations >= HIGH_OBSERVATIONS and runs >= HIGH_RUNS:
        return "high"
    return "medium"


# --- the answer ------------------------------------------------------------------------------
@dataclass
class Advice:
    """The recommendation for one task name (see the module's docstring for the method)."""

    task: str
    target: str | None
    provider: str
    observations: int
    cpu_observations: int
    shared_observations: int
    runs: int
    runs_considered: int
    confidence: str
    p95_cpus: float | None
    p95_memory_bytes: int | None
    recommended_cpus: float | None
    recommended_memory_bytes: int | None
    current_cpus: float | None
    current_memory_bytes: int | None
    current_source: str
    under_provisioned: bool = False
    increase: list[str] = field(default_factory=list)
    savings_percent: float | None = None
    savings_usd_per_task_hour: float | None = None
    rates: dict = field(default_factory=dict)
    reference_rates: bool = False
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    reference_run: str | None = None
    # `energy.allocation_saving` of the recommendation, per task-hour, and its constants
    energy_saved_wh_per_task_hour: float | None = None
    carbon_saved_g_per_task_hour: float | None = None
    energy_constants: dict = field(default_factory=dict)

    @property
    def can_advise(self) -> bool:
        return self.recommended_cpus is not None

    def to_dict(self) -> dict:
        """Plain JSON-ready data, with the allocations also as the text `format_advice` shows."""
        data = asdict(self)
        data["can_advise"] = self.can_advise
        data["current"] = _allocation(self.current_cpus, self.current_memory_bytes)
        data["recommended"] = (
            _allocation(self.recommended_cpus, self.recommended_memory_bytes)
            if self.can_advise
            else None
        )
        return data


# --- reading the history ---------------------------------------------------------------------
@dataclass(slots=True)
class _Obs:  # one task_resources line (slots: a long history holds many)
    cpus_used: float | None
    peak_memory_bytes: int | None
    shared: bool


@dataclass
class _Run:
    run: Run
    obs: dict[str, list[_Obs]]
    bad_lines: int

    @property
    def meta(self) -> dict:
        return self.run.meta

    @property
    def run_id(self) -> str:
        return self.run.run_id


_FIELDS = ["event", "task", "cpus_used", "peak_memory_bytes", "cpu_shared"]
_ASKED = "event = 'task_resources' AND (?::VARCHAR IS NULL OR task = ?::VARCHAR)"
# Per task name: its cpus_used, peak_memory_bytes and cpu_shared values (of the task asked
# about only, when one is: the other names are still listed), and unreadable lines.
_OBSERVATIONS = f"""
SELECT task,
       list(cpus_used) FILTER (WHERE {_ASKED}),
       list(peak_memory_bytes) FILTER (WHERE {_ASKED}),
       list(coalesce(cpu_shared, false)) FILTER (WHERE {_ASKED}),
       count(*) FILTER (WHERE event = '{sc.TASK_RESOURCES}'),
       {SKIPPED}
FROM {{t}}
GROUP BY task
"""


def _observations(
    run: Run, task: str | None = None, group: list[str] | None = None
) -> tuple[dict[str, list[_Obs]], int]:
    """Each task name's measurements in `run` (of `task` alone, when given; of the tasks of
    `group`, a path of `distributed.span` names, when given) and unreadable lines."""
    if group:
        source = run.file(rundir.RESOURCES, _FIELDS, extra={"key": "VARCHAR"})
        files = {"t": source, "g": run.file(rundir.TASKS, ["event", "key", "group_path"])}
        sql = _OBSERVATIONS.replace(
            "FROM {t}", f"FROM (SELECT * FROM {{t}} WHERE key IN ({KEYS_IN_GROUP}))"
        )
        rows = query_files(sql, files, [task] * 6 + [list(group)] * 2)
    else:
        source = run.file(rundir.RESOURCES, _FIELDS)
        rows = source.query(_OBSERVATIONS, [task] * 6)
    obs: dict[str, list[_Obs]] = {}
    bad = source.skipped_before
    for name, cpus, peaks, shared, measured, unreadable in rows:
        bad += unreadable
        if name is None or not measured:
            continue  # resource samples of workers, and unreadable lines
        obs[name] = [
            _Obs(
                cpus_used=c if c is not None and math.isfinite(c) and c >= 0 else None,
                peak_memory_bytes=int(m) if m is not None and math.isfinite(m) and m > 0 else None,
                shared=s,
            )
            for c, m, s in zip(cpus or (), peaks or (), shared or ())
        ]
    return obs, bad


def _history(
    root,
    target: str | None,
    history: int | None,
    task: str | None = None,
    group: list[str] | None = None,
) -> tuple[Path, list[_Run]]:
    base = rundir.runs_dir(root)
    paths = rundir.list_runs(base)
    if not paths:
        raise RunNotFound(f"no runs in {base}: run a workflow first (or pass --runs-dir)")
    if history is not None and history < 1:
        raise ScalableError(f"history must be 1 run or more, not {history}")
    found = [Run(p, read_meta(p)) for p in paths]
    if target is not None:
        chosen = [r for r in found if r.meta.get("target") == target]
        if not chosen:
            seen = sorted({str(r.meta.get("target")) for r in found if r.meta.get("target")})
            raise RunNotFound(
                f"no runs of target {target!r} in {base} "
                f"(targets there: {', '.join(seen) or 'none recorded'})"
            )
        found = chosen
    if history is not None:
        found = found[-history:]
    return base, [_Run(run, *_observations(run, task, group)) for run in found]


def _plan_tasks(run: _Run) -> dict:
    tasks = run.run.plan.get("tasks")
    return tasks if isinstance(tasks, dict) else {}


def _manifest(run: _Run) -> dict:
    return run.run.manifest or {}


def _manifest_tasks(manifest: dict) -> dict:
    tasks = manifest.get("tasks")
    return tasks if isinstance(tasks, dict) else {}


def _manifest_request(task: str, run: _Run, manifest: dict) -> tuple[dict, str] | None:
    """The task's component settings, from plan.json, else from manifest.yaml."""
    spec = _plan_tasks(run).get(task)
    if isinstance(spec, dict) and ("cpus" in spec or "memory" in spec):
        return spec, "plan.json"
    task_spec = _manifest_tasks(manifest).get(task)
    components = manifest.get("components") or {}
    if isinstance(task_spec, dict) and isinstance(components, dict):
        name = task_spec.get("component")
        component = components.get(name) if isinstance(name, str) else None
        if isinstance(component, dict) and ("cpus" in component or "memory" in component):
            return dict(component, component=name), "manifest.yaml"
    return None


def _session_request(run: _Run) -> tuple[int | None, str]:
    """Worker memory per thread (one thread per task), the largest over the run's workers."""
    records = run.run.lines(rundir.WORKERS)
    best, threads = None, None
    for r in records:
        if r.get("event") != sc.WORKER_ADDED:
            continue
        limit, nthreads = (
            finite_number(r.get("memory_limit")),
            finite_number(r.get("nthreads")) or 1.0,
        )
        if limit and limit > 0 and (best is None or limit / nthreads > best):
            best, threads = limit / nthreads, nthreads
    if best is None:
        return None, f"session request (1 thread per task; no worker memory limit in {run.run_id})"
    per = f"{format_memory(best * threads)} / {_trim(threads, 0)} thread" + (
        "s" if threads != 1 else ""
    )
    return int(
        best
    ), f"session request (1 thread per task; worker memory_limit {per}, {run.run_id})"


def _current(task: str, run: _Run, manifest: dict, notes: list[str]):
    found = _manifest_request(task, run, manifest)
    cpus = memory = None
    source = ""
    if found is not None:
        spec, where = found
        component = spec.get("component")
        what = f"component {component!r}" if component else f"tasks.{task}"
        source = f"manifest: {what} ({where} of {run.run_id})"
        cpus = parse_cpus(spec.get("cpus"))
        memory = size_bytes(spec.get("memory"))
        if spec.get("memory") is not None and memory is None:
            notes.append(f"memory {spec.get('memory')!r} of {what} is not a size such as 16G")
        if spec.get("cpus") is not None and cpus is None:
            notes.append(f"cpus {spec.get('cpus')!r} of {what} is not a number of CPUs")
    if cpus is None or memory is None:
        session_memory, session_source = _session_request(run)
        missing = [n for n, v in (("CPUs", cpus), ("memory", memory)) if v is None]
        if cpus is None:
            cpus = 1.0
        if memory is None:
            memory = session_memory
        source = (
            session_source
            if not source
            else f"{source}; {' and '.join(missing)} from the {session_source}"
        )
    return cpus, memory, source


def _known_error(task: str, base: Path, runs: list[_Run], target: str | None) -> UnknownTask:
    names = sorted({shown(name) for run in runs for name in run.obs})
    listed = ", ".join(names[:20]) + (f" … ({len(names) - 20} more)" if len(names) > 20 else "")
    where = f"runs of target {target!r} in {base}" if target else f"runs in {base}"
    beta = sum(run.run.is_beta for run in runs)
    why = (
        f" ({beta} of the {len(runs)} runs are Scalable 2.0 beta runs, which measured no "
        "per-task resources)"
        if beta
        else ""
    )
    return UnknownTask(
        f"no measurements of task {task!r} in the {where}; known tasks: "
        f"{listed or 'none measured yet'}{why}"
    )


def _advise(
    task: str,
    base: Path,
    runs: list[_Run],
    target: str | None,
    energy_options: dict | None = None,
) -> Advice:
    with_task = [run for run in runs if run.obs.get(task)]
    reference = with_task[-1] if with_task else None
    if reference is None:  # a task the manifest names but no run has measured yet
        for run in reversed(runs):
            if task in _plan_tasks(run) or task in _manifest_tasks(_manifest(run)):
                reference = run
                break
    if reference is None:
        raise _known_error(task, base, runs, target)

    obs = [o for run in with_task for o in run.obs[task]]
    weight = {True: SHARED_WEIGHT, False: 1.0}
    cpu_pairs = [(o.cpus_used, weight[o.shared]) for o in obs if o.cpus_used is not None]
    mem_pairs = [
        (float(o.peak_memory_bytes), weight[o.shared])
        for o in obs
        if o.peak_memory_bytes is not None
    ]
    shared = sum(o.shared for o in obs)
    notes: list[str] = []

    manifest = _manifest(reference)
    meta = reference.meta
    provider = str(meta.get("provider") or "local")
    targets = (manifest.get("targets") or {}) if isinstance(manifest.get("targets"), dict) else {}
    settings = targets.get(meta.get("target"))
    rates = rates_for(
        provider, settings if isinstance(settings, dict) else None, target=meta.get("target")
    )
    current_cpus, current_memory, source = _current(task, reference, manifest, notes)

    advice = Advice(
        task=task,
        target=target if target is not None else meta.get("target"),
        provider=provider,
        observations=len(obs),
        cpu_observations=len(cpu_pairs),
        shared_observations=shared,
        runs=len(with_task),
        runs_considered=len(runs),
        confidence=confidence(len(obs), len(with_task)),
        p95_cpus=None,
        p95_memory_bytes=None,
        recommended_cpus=None,
        recommended_memory_bytes=None,
        current_cpus=current_cpus,
        current_memory_bytes=current_memory,
        current_source=source,
        rates=rates,
        notes=notes,
        reference_run=reference.run_id,
    )
    if target is None:
        seen = sorted({str(run.meta.get("target")) for run in with_task})
        if len(seen) > 1:
            notes.append(
                f"observations from targets {', '.join(seen)}: pass a target to advise for one"
            )
    bad = sum(run.bad_lines for run in runs)
    if bad:
        notes.append(f"skipped {bad} unreadable line{'s' if bad != 1 else ''} of resources.jsonl")
    if len(obs) < MIN_OBSERVATIONS or not mem_pairs:
        advice.reason = (
            f"cannot advise yet: {len(obs)} observation{'s' if len(obs) != 1 else ''} of "
            f"{task!r} (at least {MIN_OBSERVATIONS} needed)"
        )
        return advice

    p95_cpus = weighted_percentile(cpu_pairs)
    p95_memory = weighted_percentile(mem_pairs)
    advice.p95_cpus = p95_cpus
    advice.p95_memory_bytes = int(p95_memory)
    advice.recommended_cpus = round_cpus(
        p95_cpus * CPU_MARGIN if p95_cpus is not None else 0.0, provider
    )
    advice.recommended_memory_bytes = round_memory(p95_memory * MEMORY_MARGIN)
    pct = f"{PERCENTILE:.0f}th percentile usage is"
    if p95_cpus is None:
        advice.reason = (
            f"{pct} {format_memory(p95_memory)} memory "
            "(CPU not measurable: every task ran under 0.05 s)"
        )
    else:
        advice.reason = f"{pct} {_usage_cpus(p95_cpus)} and {format_memory(p95_memory)} memory"
        if len(cpu_pairs) < len(obs):
            short = len(obs) - len(cpu_pairs)
            notes.append(f"{short} of {len(obs)} tasks ran under 0.05 s: no CPU figure from them")
    if shared == len(obs):
        notes.append(
            f"all {shared} observations ran beside other tasks on their worker (cpu_shared): "
            "their CPU and memory include those tasks', so this is an upper bound"
        )
    elif shared:
        notes.append(
            f"{shared} of {len(obs)} observations ran beside other tasks on their worker "
            f"(cpu_shared): upper bounds, counted at {SHARED_WEIGHT:g} weight"
        )

    if advice.recommended_cpus > current_cpus + 1e-9:
        advice.increase.append(f"CPUs to {_trim(advice.recommended_cpus, 2)}")
    if current_memory is not None and advice.recommended_memory_bytes > current_memory:
        advice.increase.append(f"memory to {format_memory(advice.recommended_memory_bytes)}")
    advice.under_provisioned = bool(advice.increase)

    priced = rates_known(rates) and (rates[CPU_HOUR] > 0 or rates[MEMORY_GB_HOUR] > 0)
    weights = rates if priced else REFERENCE_RATES
    advice.reference_rates = not priced
    # Without a current memory figure the comparison is of CPUs alone.
    rec_memory = advice.recommended_memory_bytes if current_memory is not None else None
    now = resource_cost(current_cpus, current_memory, 1.0, weights)
    then = resource_cost(advice.recommended_cpus, rec_memory, 1.0, weights)
    if now:
        advice.savings_percent = round(100.0 * (now - then) / now, 6)
    if rates_known(rates):
        now_usd = resource_cost(current_cpus, current_memory, 1.0, rates)
        then_usd = resource_cost(advice.recommended_cpus, rec_memory, 1.0, rates)
        advice.savings_usd_per_task_hour = round(now_usd - then_usd, 9)
    try:
        constants = energy_constants(reference.run, energy_options)
    except EnergyError as exc:  # a bad constant in the manifest costs the figure only
        notes.append(f"no energy figure: {exc}")
        return advice
    advice.energy_constants = constants
    saving = allocation_saving(current_memory, advice.recommended_memory_bytes, constants)
    if saving is not None:
        advice.energy_saved_wh_per_task_hour = saving["wh"]
        advice.carbon_saved_g_per_task_hour = saving["carbon_g"]
    return advice


# --- the public functions ---------------------------------------------------------------------
def advise(
    task: str,
    runs_dir: str | os.PathLike | None = None,
    target: str | None = None,
    history: int | None = None,
    energy_options: dict | None = None,
    group: list[str] | None = None,
) -> Advice:
    """The resource recommendation for `task` from the run history (method: module docstring).

    `energy_options`: the command line's energy constants (`energy.energy_constants`).

    `runs_dir` defaults to $SCALABLE_RUNS_DIR, else ./.scalable/runs; `target` keeps only the
    runs of that target; `history` only the last N runs (of that target); `group` (a path
    of `distributed.span` names, `groups.parse_path`) only the tasks of that group. Raises
    `UnknownTask` (a `ScalableError`) naming the known tasks when no run measured `task`
    and no manifest of the history names it.

    >>> print(format_advice(advise("run_simulation")))              # doctest: +SKIP
    Resource Recommendation for 'run_simulation':
      Current:           4 CPUs, 16G memory
      Recommended:       2 CPUs, 8G memory
      ...
    """
    base, runs = _history(runs_dir, target, history, task, group)
    return _advise(task, base, runs, target, energy_options)


def advise_all(
    runs_dir: str | os.PathLike | None = None,
    target: str | None = None,
    history: int | None = None,
    energy_options: dict | None = None,
    group: list[str] | None = None,
) -> list[Advice]:
    """`advise` for every task name measured in the history (of `group`'s tasks, when
    given), sorted by name."""
    base, runs = _history(runs_dir, target, history, group=group)
    names = sorted({name for run in runs for name in run.obs})
    if group and not names:
        raise ScalableError(
            f"no task of group {' / '.join(group)!r} was measured in {base}: "
            "`scalable report` lists a run's groups"
        )
    return [_advise(name, base, runs, target, energy_options) for name in names]


def _line(label: str, text: str) -> str:
    return f"  {label + ':':<19}{text}"


def _savings(advice: Advice) -> str:
    if advice.under_provisioned:
        return "none — increase " + " and ".join(advice.increase)
    pct = advice.savings_percent
    if pct is None or pct <= 1e-9:
        return "none — the current allocation already fits"
    return (
        f"{pct:.0f}% compute cost reduction" if pct >= 1 else f"{pct:.1f}% compute cost reduction"
    )


def _rates_line(advice: Advice) -> str:
    rates = advice.rates
    provider = advice.provider
    reference = (
        f"${REFERENCE_RATES[CPU_HOUR]:g}/CPU-hour, ${REFERENCE_RATES[MEMORY_GB_HOUR]:g}/GB-hour"
    )
    if not rates_known(rates):
        return (
            f"no rates for provider {provider!r}, so no dollar figure (set cost: on the target); "
            f"the % weighs CPU and memory at reference rates ({reference})"
        )
    if advice.reference_rates:
        return (
            f"$0 at {provider} rates, so the saving is $0; "
            f"the % weighs CPU and memory at reference rates ({reference})"
        )
    how = {"default": f"{provider} defaults", "manifest": "the target's cost: in the manifest"}
    text = (
        f"${rates[CPU_HOUR]:g}/CPU-hour and ${rates[MEMORY_GB_HOUR]:g}/GB-hour "
        f"({how.get(rates.get('source'), f'{provider} defaults and the manifest')})"
    )
    usd = advice.savings_usd_per_task_hour
    if usd is not None and usd > 0:
        text += f": ${usd:.4g} less per task-hour"
    elif usd is not None and usd < 0:
        text += f": ${-usd:.4g} more per task-hour"
    return text


def _energy_line(advice: Advice) -> str:
    c = advice.energy_constants
    wh, grams = advice.energy_saved_wh_per_task_hour, advice.carbon_saved_g_per_task_hour
    how = f"memory at {c[MEMORY_POWER]:g} W/GB, PUE {c[PUE]:g}, {c[CARBON_INTENSITY]:g} g/kWh"
    if abs(wh) < 1e-9:
        return f"no saving: the recommendation holds as much memory ({how})"
    verb = "saves" if wh > 0 else "costs"
    shown = format_kwh(abs(wh) / 1000)
    return f"{verb} {shown}, {format_carbon(abs(grams))} per task-hour ({how})"


def format_advice(advice: Advice) -> str:
    """The advice as the tutorial prints it, then confidence, sources and notes.

    ::

        Resource Recommendation for 'run_simulation':
          Current:           4 CPUs, 16G memory
          Recommended:       2 CPUs, 8G memory
          Reason:            95th percentile usage is 1.8 CPUs and 6.2G memory
          Potential savings: 50% compute cost reduction
          Confidence:        high (412 tasks over 5 runs)
          Current from:      manifest: component 'sim' (plan.json of run-…)
          Cost rates:        $0 at local rates, so the saving is $0; …
    """
    runs = f"{advice.runs} run{'s' if advice.runs != 1 else ''}"
    tasks = f"{advice.observations} task{'s' if advice.observations != 1 else ''}"
    lines = [
        f"Resource Recommendation for {advice.task!r}:",
        _line("Current", _allocation(advice.current_cpus, advice.current_memory_bytes)),
    ]
    if advice.can_advise:
        lines += [
            _line(
                "Recommended",
                _allocation(advice.recommended_cpus, advice.recommended_memory_bytes),
            ),
            _line("Reason", advice.reason),
            _line("Potential savings", _savings(advice)),
        ]
    else:
        lines.append(_line("Recommended", advice.reason))
    lines += [
        _line("Confidence", f"{advice.confidence} ({tasks} over {runs})"),
        _line("Current from", advice.current_source),
    ]
    if advice.can_advise:
        lines.append(_line("Cost rates", _rates_line(advice)))
        if advice.energy_saved_wh_per_task_hour is not None:
            lines.append(_line("Energy", _energy_line(advice)))
    lines += [_line("Note", note) for note in advice.notes]
    return "\n".join(lines)
