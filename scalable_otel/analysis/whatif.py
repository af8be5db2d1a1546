"""What-if replay: a run's recorded graph and measured durations replayed through a list
scheduler with other workers, or with one task made faster, beside the real duration.

The model, from the run's own records (`graph.run_graph` and resources.jsonl):

1. **Tasks.** One per key that ran: its final completed execution, else its last failed one
   (failures count their measured time). Its duration is the recorded `duration_s` (a task
   served from the cache counts its short recorded duration); `faster={"task": F}` divides
   the durations of that task name by F. Lost attempts and retries are not replayed.
2. **Release.** A task may start once it was submitted (its recorded offset from the run's
   first submission: the client is replayed as it submitted) and its dependencies are done.
   Dependencies on keys that did not run in this run count as done from the start.
3. **Latencies, measured on the run.** `start_latency_s`: the median of start minus the
   submission of tasks without dependencies that found a thread free; `dependency_latency_s`:
   the median of start minus the last dependency's end of tasks with dependencies that found
   a thread free (dispatch plus moving the dependencies' results); `turnaround_s`: the median
   of start minus the previous end on the same thread of tasks that waited for one (each
   worker's executions are laid on its threads in start order).
4. **Scheduler.** Slots = workers x threads per worker. When a slot is free, the ready task
   submitted first starts (ties in the order the run started them): Dask runs futures
   first-submitted first (its graph `generation`), and a graph's own order is the one the
   run shows.
5. **CPU.** With the host's cores known (run.json's `host_cpus`, for a `local` run whose
   workers share the session's host), a task's CPU share is its `cpu_seconds / wall_s`
   (task_resources); while the running tasks ask for more cores than the host has, their
   CPU parts progress at cores/demand (processor sharing) and the rest at full speed. A
   task measured while more CPU-using tasks ran than the host has cores is first taken
   back to a core of its own (`_uncontended`).
6. **Duration.** The replay's makespan (first submission to last end) plus the run's time
   outside task execution as recorded: session start to first submission, last task end
   to run end.

The replay of the run as it was (its own peak workers and threads) is returned beside the
prediction: its difference from the real duration is the model's own error on this run.

What the model does not know: memory limits and spilling, work stealing and data
locality (a dependency costs the same on any worker), workers starting later than others
or dying, a client that waits for results before submitting more (replayed at the same
moments), a worker startup that takes longer with more workers (the time before the
first submission is kept as recorded), and the load of other processes on the host (a
task that got part of a core because of them is replayed as if that were its need).
"""

from __future__ import annotations

import heapq
import math
import statistics
from bisect import bisect_right
from collections import Counter
from dataclasses import asdict, dataclass, field

from .. import rundir
from .. import semconv as sc
from ..errors import ScalableError, shown
from .graph import Execution, RunGraph, run_graph
from .load import Run
from .report import run_cost, run_times, worker_figures

#: A prediction within this share of the replay as it was is "about the same" (advise).
NO_CHANGE_PERCENT = 5.0
#: Runs of more tasks get no what-if table on the HTML page, which must stay quick for
#: runs of a million task events (`scalable whatif` still answers).
HTML_MAX_TASKS = 20_000
#: Tasks spending at least this share of their time on CPU are called CPU-bound.
CPU_BOUND_SHARE = 0.5
#: A task with at least this share of its time on CPU competes for the host's cores.
CPU_USING_SHARE = 0.15
_EPS = 1e-9


class WhatIfError(ScalableError):
    """A what-if that cannot be answered: bad settings, or a run with nothing to replay."""


@dataclass
class _Node:
    key: str
    task: str | None
    duration: float
    release: float  # seconds after the run's first submission
    deps: list[int]
    priority: tuple
    cpu: float = 0.0  # cores the task keeps busy while it runs


@dataclass
class WhatIf:
    """A what-if replay of one run (see the module docstring). Durations in seconds;
    `*_change_percent` are against the real duration."""

    run_id: str
    tasks: int
    real_duration_s: float
    real_workers: int
    real_threads_per_worker: int
    workers: int
    threads_per_worker: int
    faster: dict[str, float]
    predicted_duration_s: float
    predicted_change_percent: float
    replay_duration_s: float
    replay_error_percent: float
    unlimited_duration_s: float
    makespan_s: float
    replay_makespan_s: float
    real_makespan_s: float
    before_s: float
    after_s: float
    latencies: dict[str, float]
    host_cpus: int | None
    cpu_share: float | None
    cpu_limited: bool
    worker_hours: dict[str, float | None]
    cost_usd: dict[str, float | None]
    assumptions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def shortens(self) -> bool:
        """Whether the prediction is shorter than the replay of the run as it was by more
        than `NO_CHANGE_PERCENT` (compared with the replay, so the model's error cancels)."""
        return self.predicted_duration_s < self.replay_duration_s * (1 - NO_CHANGE_PERCENT / 100)


# --- reading the run ----------------------------------------------------------------------------
def _chosen(graph: RunGraph) -> list[Execution]:
    """Per key, the execution to replay: the final completed one, else the last failed."""
    chosen = graph.final()
    failed: dict[str, Execution] = {}
    for e in graph.executions:
        if e.status == "failed" and e.ran and e.key not in chosen:
            if e.key not in failed or e.attempt > failed[e.key].attempt:
                failed[e.key] = e
    chosen.update(failed)
    return [e for e in chosen.values() if e.ran and e.duration_s is not None]


def _cpu_shares(run: Run) -> dict[tuple[str, int], float]:
    """(key, attempt) -> cpu_seconds / wall_s of its task_resources line."""
    rows = run.file(
        rundir.RESOURCES,
        ["event", "cpu_seconds", "wall_s"],
        extra={"key": "VARCHAR", "attempt": "BIGINT"},
    ).query(
        f"SELECT key, attempt, cpu_seconds, wall_s FROM {{t}} "
        f"WHERE event = '{sc.TASK_RESOURCES}' AND key IS NOT NULL AND attempt IS NOT NULL"
    )
    shares = {}
    for key, attempt, cpu, wall in rows:
        if cpu is not None and wall and wall > 0 and math.isfinite(cpu) and cpu >= 0:
            shares[(key, int(attempt))] = (cpu, wall)
    return shares


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _previous_ends(chosen: list[Execution], threads: dict[str, int]) -> dict[str, float]:
    """Per key, when the thread it ran on last finished a task before it (none for a
    thread's first task): each worker's executions laid on its threads in start order."""
    previous: dict[str, float] = {}
    by_worker: dict[str | None, list[Execution]] = {}
    for e in chosen:
        by_worker.setdefault(e.worker, []).append(e)
    for worker, executions in by_worker.items():
        lanes: list[float] = []  # each thread's last end
        for e in sorted(executions, key=lambda e: (e.start, e.key)):
            idle = [i for i, end in enumerate(lanes) if end <= e.start + _EPS]
            if idle:
                lane = max(idle, key=lambda i: lanes[i])  # the thread that just freed
                previous[e.key] = lanes[lane]
                lanes[lane] = e.end
            elif len(lanes) < threads.get(worker, 1):
                lanes.append(e.end)
            else:  # more at once than its threads (a clock step): the earliest to end
                lane = min(range(len(lanes)), key=lambda i: lanes[i])
                previous[e.key] = lanes[lane]
                lanes[lane] = max(lanes[lane], e.end)
    return previous


def _latencies(chosen: list[Execution], threads: dict[str, int]) -> dict[str, float]:
    """Start latency, dependency latency and turnaround, measured on the recorded run: a
    task whose thread was idle when it could start measures a latency, one whose thread
    was still busy then measures the turnaround from that thread's previous task."""
    ends = {e.key: e.end for e in chosen}
    previous = _previous_ends(chosen, threads)
    root, dependent, turnaround = [], [], []
    for e in chosen:
        done = [ends[d] for d in e.dependencies if d in ends]
        available = max([e.submitted if e.submitted is not None else e.start, *done])
        before = previous.get(e.key)
        if before is None or before <= available:
            (dependent if done else root).append(max(0.0, e.start - available))
        else:
            turnaround.append(max(0.0, e.start - before))
    return {
        "start_latency_s": round(_median(root), 6),
        "dependency_latency_s": round(_median(dependent), 6),
        "turnaround_s": round(_median(turnaround), 6),
    }


# --- the scheduler ------------------------------------------------------------------------------
def simulate(
    nodes: list[_Node], slots: int, latencies: dict[str, float], cores: float | None = None
) -> float:
    """The makespan of `nodes` on `slots` threads (module docstring, points 2 to 5)."""
    if not nodes:
        return 0.0
    children: list[list[int]] = [[] for _ in nodes]
    waiting = [0] * len(nodes)
    done_at = [0.0] * len(nodes)
    for i, node in enumerate(nodes):
        waiting[i] = len(node.deps)
        for d in node.deps:
            children[d].append(i)
    start_latency = latencies["start_latency_s"]
    dependency_latency = latencies["dependency_latency_s"]
    turnaround = latencies["turnaround_s"]

    def ready_at(i: int) -> float:
        node = nodes[i]
        if not node.deps:
            return node.release + start_latency
        return max(node.release, max(done_at[d] for d in node.deps)) + dependency_latency

    upcoming = [(ready_at(i), nodes[i].priority, i) for i in range(len(nodes)) if not waiting[i]]
    heapq.heapify(upcoming)
    available: list[tuple] = []  # (priority, i) of tasks ready now
    free = [0.0] * slots  # when each slot can take a task
    heapq.heapify(free)
    running: dict[int, float] = {}  # i -> work left, in seconds at full speed
    now, finished = 0.0, 0
    while finished < len(nodes):
        while upcoming and upcoming[0][0] <= now + _EPS:
            _, priority, i = heapq.heappop(upcoming)
            heapq.heappush(available, (priority, i))
        while available and free and free[0] <= now + _EPS:
            heapq.heappop(free)
            _, i = heapq.heappop(available)
            running[i] = nodes[i].duration
        demand = sum(nodes[i].cpu for i in running)
        share = 1.0 if cores is None or demand <= cores else cores / demand
        speed = {i: 1.0 / ((1 - nodes[i].cpu) + nodes[i].cpu / share) for i in running}
        candidates = [now + left / speed[i] for i, left in running.items()]
        if upcoming:
            candidates.append(upcoming[0][0])
        if available and free and free[0] > now + _EPS:
            candidates.append(free[0])
        if not candidates:
            raise WhatIfError("the run's dependencies form a cycle: nothing left can start")
        then = max(now, min(candidates))
        for i in list(running):
            running[i] -= (then - now) * speed[i]
            if running[i] <= _EPS * max(1.0, nodes[i].duration):
                del running[i]
                finished += 1
                done_at[i] = then
                heapq.heappush(free, then + turnaround)
                for child in children[i]:
                    waiting[child] -= 1
                    if not waiting[child]:
                        heapq.heappush(upcoming, (ready_at(child), nodes[child].priority, child))
        now = then
    return max(done_at)


# --- the what-if --------------------------------------------------------------------------------
def _check(workers, threads_per_worker, faster, known: set[str]) -> dict[str, float]:
    for name, value in (("workers", workers), ("threads per worker", threads_per_worker)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise WhatIfError(f"{name} must be a whole number of 1 or more, not {value!r}")
        if value is not None and value < 1:
            raise WhatIfError(f"{name} must be 1 or more, not {value}")
    checked = {}
    for task, factor in (faster or {}).items():
        if task not in known:
            listed = ", ".join(sorted(shown(t) for t in known)[:20])
            raise WhatIfError(f"no task {shown(task)!r} ran in this run; tasks: {listed}")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            raise WhatIfError(f"--faster {shown(task)}: FACTOR must be a number, not {factor!r}")
        if not math.isfinite(factor) or factor <= 0:
            raise WhatIfError(f"--faster {shown(task)}: FACTOR must be above 0, not {factor}")
        checked[task] = float(factor)
    return checked


def _uncontended(
    chosen: list[Execution], shares: dict, cores: int | None
) -> dict[str, tuple[float, float]]:
    """Per key, its duration and CPU share had it had a core of its own.

    A task's CPU seconds `c` do not grow when it waits for a core, its wall time does: run
    with `n` CPU-using tasks at once on `cores` cores (n > cores), it got `rho = cores / n`
    of a core, and took `d = d0 - c + c / rho`. `n` is averaged over the task's life; a
    task counts as CPU-using when its measured share is `CPU_USING_SHARE` or more.
    """
    own: dict[str, tuple[float, float]] = {}
    using = []
    for e in chosen:
        c, wall = shares.get((e.key, e.attempt), (0.0, 0.0))
        d = max(0.0, e.duration_s)
        c = min(c, d) if wall else 0.0
        own[e.key] = (d, c)
        if d > 0 and c / d >= CPU_USING_SHARE:
            using.append(e)
    if cores and using:
        changes = sorted([(e.start, 1) for e in using] + [(e.end, -1) for e in using])
        times, area, levels = [], [], []  # at each change: the integral so far, the level after
        for when, step in changes:
            total = area[-1] + levels[-1] * (when - times[-1]) if times else 0.0
            times.append(when)
            area.append(total)
            levels.append((levels[-1] if levels else 0) + step)

        def integral(t: float) -> float:  # of the number of CPU-using tasks running
            i = bisect_right(times, t) - 1
            return area[i] + levels[i] * (t - times[i]) if i >= 0 else 0.0

        for e in using:
            d, c = own[e.key]
            n = (integral(e.end) - integral(e.start)) / d
            if n > cores:
                own[e.key] = (max(c, d - c * (n / cores - 1)), c)
    return {key: (d, c / d if d > 0 else 0.0) for key, (d, c) in own.items()}


def _nodes(
    chosen: list[Execution], own: dict[str, tuple[float, float]], faster: dict[str, float]
) -> list[_Node]:
    first = min(e.submitted if e.submitted is not None else e.start for e in chosen)
    index = {e.key: i for i, e in enumerate(chosen)}
    nodes = []
    for e in chosen:
        submitted = e.submitted if e.submitted is not None else e.start
        duration, cpu = own[e.key]
        nodes.append(
            _Node(
                key=e.key,
                task=e.task,
                duration=duration / faster.get(e.task, 1.0),
                release=submitted - first,
                deps=[index[d] for d in dict.fromkeys(e.dependencies) if d in index],
                priority=(submitted, e.start, e.key),
                cpu=min(1.0, cpu),
            )
        )
    return nodes


class Replay:
    """A run read once for what-ifs: `predict` replays it with other settings."""

    def __init__(self, run: Run):
        if run.is_beta:
            raise WhatIfError(
                f"{run.run_id} is a Scalable 2.0 beta run: it recorded no task starts on "
                "workers, so there is nothing to replay"
            )
        graph = run_graph(run)
        chosen = _chosen(graph)
        if not chosen:
            raise WhatIfError(
                f"{run.run_id} recorded no task that started and ended: nothing to replay"
            )
        self.run, self.chosen = run, chosen
        self.not_replayed = len(graph.executions) - len(chosen)
        self.tasks = {e.task for e in chosen if e.task}
        run_start, run_end, real = run_times(run)  # the report's figures
        worker_lines = run.lines(rundir.WORKERS)
        self.real_workers = max(1, worker_figures(worker_lines, run_end)["peak"])
        counted = Counter(graph.threads.values())
        self.real_threads = counted.most_common(1)[0][0] if counted else 1

        self.first = min(e.submitted if e.submitted is not None else e.start for e in chosen)
        self.last_end = max(e.end for e in chosen)
        run_start = run_start if run_start is not None else self.first
        run_end = run_end if run_end is not None else self.last_end
        self.before = max(0.0, self.first - run_start)
        self.after = max(0.0, run_end - self.last_end)
        self.real = (
            float(real) if isinstance(real, (int, float)) and real > 0 else run_end - run_start
        )
        if not (math.isfinite(self.real) and self.real > 0):
            raise WhatIfError(f"{run.run_id} has no duration to compare a replay with")

        self.latencies = _latencies(chosen, graph.threads)
        shares = _cpu_shares(run)
        host_cpus = run.meta.get("host_cpus")
        self.host_cpus = host_cpus if isinstance(host_cpus, int) and host_cpus > 0 else None
        local = run.meta.get("provider", "local") == "local"
        self.cores = self.host_cpus if self.host_cpus and local else None
        self.own = _uncontended(chosen, shares, self.cores)
        measured = [self.own[e.key] for e in chosen if (e.key, e.attempt) in shares]
        wall = sum(d for d, _ in measured)
        self.cpu_share = round(sum(d * f for d, f in measured) / wall, 3) if wall > 0 else None
        self.cost = run_cost(run, worker_lines, run_end)
        self.replay_makespan = self.makespan(self.real_workers * self.real_threads, {})

    def makespan(self, slots: int, faster: dict[str, float]) -> float:
        """First submission to last task end, replayed on `slots` threads."""
        nodes = _nodes(self.chosen, self.own, faster)
        return simulate(nodes, slots, self.latencies, self.cores)

    def predict(
        self,
        workers: int | None = None,
        threads_per_worker: int | None = None,
        faster: dict[str, float] | None = None,
    ) -> WhatIf:
        """The what-if with these settings (defaults: the run's own)."""
        faster = _check(workers, threads_per_worker, faster, self.tasks)
        workers = workers or self.real_workers
        threads_per_worker = threads_per_worker or self.real_threads
        fixed = self.before + self.after
        makespan = self.makespan(workers * threads_per_worker, faster)
        predicted = makespan + fixed
        as_was = self.replay_makespan + fixed
        unlimited = self.makespan(len(self.chosen), faster) + fixed
        real = self.real
        basis = self.cost.get("basis") or {}
        scale = (
            (workers * threads_per_worker * predicted)
            / (self.real_workers * self.real_threads * as_was)
            if as_was > 0
            else None
        )
        real_hours, real_usd = basis.get("worker_hours"), self.cost.get("usd")
        if scale is None:
            real_hours = real_usd = None
        result = WhatIf(
            run_id=self.run.run_id,
            tasks=len(self.chosen),
            real_duration_s=round(real, 6),
            real_workers=self.real_workers,
            real_threads_per_worker=self.real_threads,
            workers=workers,
            threads_per_worker=threads_per_worker,
            faster=faster,
            predicted_duration_s=round(predicted, 6),
            predicted_change_percent=round(100 * (predicted - real) / real, 2),
            replay_duration_s=round(as_was, 6),
            replay_error_percent=round(100 * (as_was - real) / real, 2),
            unlimited_duration_s=round(unlimited, 6),
            makespan_s=round(makespan, 6),
            replay_makespan_s=round(self.replay_makespan, 6),
            real_makespan_s=round(self.last_end - self.first, 6),
            before_s=round(self.before, 6),
            after_s=round(self.after, 6),
            latencies=self.latencies,
            host_cpus=self.host_cpus,
            cpu_share=self.cpu_share,
            cpu_limited=bool(
                self.cores
                and self.cpu_share is not None
                and self.cpu_share >= CPU_BOUND_SHARE
                and workers * threads_per_worker > self.cores
            ),
            worker_hours={
                "real": real_hours,
                "predicted": round(real_hours * scale, 9) if real_hours is not None else None,
            },
            cost_usd={
                "real": real_usd,
                "predicted": round(real_usd * scale, 6) if real_usd is not None else None,
            },
        )
        _explain(result, self.cores, self.not_replayed)
        return result


def whatif(
    run: Run,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    faster: dict[str, float] | None = None,
) -> WhatIf:
    """Replay `run` with `workers` workers of `threads_per_worker` threads (default: the
    run's own), task names in `faster` divided by their factor; model in the module
    docstring. Raises `WhatIfError` (a `ScalableError`) for bad settings, an unknown task
    name, or a run without recorded task starts (such as a Scalable 2.0 beta run).

    >>> result = whatif(load_run(last=True), workers=4)            # doctest: +SKIP
    >>> result.predicted_duration_s, result.replay_error_percent    # doctest: +SKIP
    (6.8, -2.1)
    """
    return Replay(run).predict(workers, threads_per_worker, faster)


def scenarios(run: Run) -> list[WhatIf]:
    """What-ifs of 1 worker, the run's own workers, and 2 and 4 times as many (the HTML
    page's table), from one reading of the run."""
    replay = Replay(run)
    counts = dict.fromkeys(
        [1, replay.real_workers, 2 * replay.real_workers, 4 * replay.real_workers]
    )
    return [replay.predict(workers=n) for n in counts]


def _explain(result: WhatIf, cores: int | None, not_replayed: int) -> None:
    lat = result.latencies
    result.assumptions = [
        f"{result.tasks} tasks with their measured durations; a free thread takes the task "
        "submitted first",
        f"latencies measured on the run: {lat['start_latency_s']:.3f}s to start a task, "
        f"{lat['dependency_latency_s']:.3f}s after its last dependency, "
        f"{lat['turnaround_s']:.3f}s between tasks on a thread",
        f"time outside task execution as recorded: {result.before_s:.1f}s before the first "
        f"submission, {result.after_s:.1f}s after the last task",
    ]
    if cores:
        spent = (
            f"; tasks spent {result.cpu_share:.0%} of their time on CPU"
            if (result.cpu_share is not None)
            else ""
        )
        result.assumptions.append(
            f"tasks share the host's {cores} cores for their CPU time (processor sharing){spent}"
        )
    slots = result.workers * result.threads_per_worker
    cpu_bound = result.cpu_share is not None and result.cpu_share >= CPU_BOUND_SHARE
    if cpu_bound and result.host_cpus is None:
        result.notes.append(
            f"tasks spent {result.cpu_share:.0%} of their time on CPU and the host's cores "
            "are not recorded: the prediction gives every thread a core of its own"
        )
    elif cpu_bound and slots > result.host_cpus:
        result.notes.append(
            f"{slots} threads exceed the host's {result.host_cpus} cores and tasks spent "
            f"{result.cpu_share:.0%} of their time on CPU: more threads only share them"
        )
    real_slots = result.real_workers * result.real_threads_per_worker
    if cpu_bound and result.host_cpus is not None and real_slots > result.host_cpus:
        result.notes.append(
            f"the run had {real_slots} threads on {result.host_cpus} cores: its measured "
            "durations include waiting for a core"
        )
    if not_replayed:
        result.notes.append(
            f"{not_replayed} executions not replayed (lost, retried, cancelled or superseded)"
        )


# --- text --------------------------------------------------------------------------------------
def _s(value: float) -> str:
    return f"{value:.1f}s" if value >= 1 else f"{value:.2f}s"


def _pct(value: float) -> str:
    text = f"{value:+.1f}%" if abs(value) < 1 else f"{value:+.0f}%"
    return text.replace("-", "\u2212")


def _setup(workers: int, threads: int) -> str:
    return (
        f"{workers} worker{'s' if workers != 1 else ''} \u00d7 "
        f"{threads} thread{'s' if threads != 1 else ''}"
    )


def what(result: WhatIf) -> str:
    """`with 4 workers`, `with report 2x faster`: what the prediction changed."""
    parts = []
    if (result.workers, result.threads_per_worker) != (
        result.real_workers,
        result.real_threads_per_worker,
    ):
        parts.append(_setup(result.workers, result.threads_per_worker))
    parts += [f"{shown(task)} {factor:g}\u00d7 faster" for task, factor in result.faster.items()]
    return "with " + " and ".join(parts) if parts else "as it was"


def headline(result: WhatIf) -> str:
    """`Real duration 12.4s (2 workers × 1 thread); replay of the run as it was: 12.1s
    (−2%); with 4 workers × 1 thread: 6.8s (−45%)`."""
    text = (
        f"Real duration {_s(result.real_duration_s)} "
        f"({_setup(result.real_workers, result.real_threads_per_worker)}); "
        f"replay of the run as it was: {_s(result.replay_duration_s)} "
        f"({_pct(result.replay_error_percent)})"
    )
    if what(result) == "as it was":
        return text
    return (
        f"{text}; {what(result)}: {_s(result.predicted_duration_s)} "
        f"({_pct(result.predicted_change_percent)})"
    )


def format_whatif(result: WhatIf) -> str:
    """The headline, then the bound with unlimited workers, worker-hours, the model's
    assumptions and notes."""
    lines = [f"What-if replay of {result.run_id}:", "  " + headline(result)]
    lines.append(
        f"  Task phase (first submission to last task end): real {_s(result.real_makespan_s)}, "
        f"replayed {_s(result.replay_makespan_s)}, predicted {_s(result.makespan_s)}"
    )
    lines.append(
        f"  With unlimited workers: {_s(result.unlimited_duration_s)} (the chain of dependencies)"
    )
    hours = result.worker_hours
    if hours["real"] is not None and hours["predicted"] is not None:
        lines.append(
            f"  Worker-hours: {hours['real']:.4g} real, {hours['predicted']:.4g} predicted"
        )
    lines += [f"  Assumes: {text}" for text in result.assumptions]
    lines += [f"  Note: {text}" for text in result.notes]
    return "\n".join(lines)


def more_workers(result: WhatIf) -> str:
    """The run-level advice `scalable advise --workers N` gives from a what-if."""
    ratio = (
        (result.workers * result.threads_per_worker * result.predicted_duration_s)
        / (result.real_workers * result.real_threads_per_worker * result.replay_duration_s)
        if result.replay_duration_s
        else float("nan")
    )
    usd = result.cost_usd
    cost = (
        f" (${usd['real']:.2f} \u2192 ${usd['predicted']:.2f})"
        if usd["real"] and usd["predicted"] is not None
        else ""
    )
    setup = _setup(result.workers, result.threads_per_worker)
    if result.shortens:
        return (
            f"More workers: {setup} would take {_s(result.predicted_duration_s)} instead of "
            f"{_s(result.real_duration_s)} ({_pct(result.predicted_change_percent)}) at "
            f"{ratio:.1f}\u00d7 the worker-hours{cost}"
        )
    limit = (
        "the critical chain of dependencies sets it"
        if result.unlimited_duration_s >= result.predicted_duration_s * 0.95
        else "the host's cores set it"
        if result.cpu_limited
        else "the tasks already had the threads they could use"
    )
    return (
        f"More workers: {setup} would not shorten the run ({_s(result.predicted_duration_s)} "
        f"against {_s(result.replay_duration_s)} replayed as it was: {limit}); "
        f"they would cost {ratio:.1f}\u00d7 the worker-hours{cost}"
    )
