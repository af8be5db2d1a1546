"""What the tests ask Prometheus and what a run directory says it must answer: the
PromQL of exporters/prometheus/README.md, README.md and the Grafana dashboard, and
`RunFigures`, a run's series values computed once from its files (read by `Run`), for
every way the metrics reach Prometheus (the session's endpoint, the Pushgateway, the
Collector)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from scalable_otel import semconv as sc
from scalable_otel.analysis import load_run
from tests import workloads

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_README = REPO / "exporters" / "prometheus" / "README.md"


def readme_queries() -> list[str]:
    """The ```promql blocks of exporters/prometheus/README.md."""
    text = PROMETHEUS_README.read_text()
    return [q.strip() for q in re.findall(r"```promql\n(.*?)```", text, re.S)]


def front_readme_queries() -> dict[str, str]:
    """README.md's PromQL table: {what: query} (tasks/s, failures, p95, memory)."""
    text = (REPO / "README.md").read_text()
    return dict(re.findall(r"^\s*\| ([^|`]+?) \| `([^`]+)` \|$", text, re.M))


def readme_series() -> set[str]:
    """The Prometheus series names of exporters/prometheus/README.md's table (`_sum`,
    `_count` after a `_bucket` name are its siblings)."""
    names = set()
    for line in PROMETHEUS_README.read_text().splitlines():
        if not line.startswith("| `scalable."):
            continue
        base, *siblings = re.findall(r"`(_?[a-z_]+)`", line.split("|")[2])
        names.add(base)
        names |= {base.rsplit("_", 1)[0] + suffix for suffix in siblings}
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads((REPO / "exporters" / "grafana" / "scalable-runs.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def grafana_to_promql(expr: str, run_id: str, project: str) -> str:
    """A dashboard expression with its variables as Grafana fills them in."""
    for name, value in (
        ("$__rate_interval", "1m"),
        ("$__range", "5m"),
        ("$project", project),
        ("$run_id", run_id),
        ("$task", ".*"),
    ):
        expr = expr.replace(name, value)
    return expr


def run_phase(session, sleeps, lookups: int, new_args) -> None:
    """One phase of the scraped tests' workload: tasks of these sleeps, cache lookups
    (misses on `new_args`, then hits on 0..lookups-1) and one failure; every result
    waited for. Run twice, each seen by Prometheus, rate() and increase() see the second."""
    futures = [
        session.submit(workloads.sleep_then, i, seconds=s, pure=False) for i, s in enumerate(sleeps)
    ]
    futures += session.map(workloads.simulate, new_args)
    assert session.gather(futures)
    hits = session.map(workloads.simulate, range(lookups), pure=False)
    assert session.gather(hits) == [i * 10 for i in range(lookups)]
    failing = session.submit(workloads.fail, len(sleeps), pure=False)
    assert session.gather([failing], errors="skip") == []


def by_label(result: list[dict], label: str) -> dict[str, float]:
    return {r["metric"].get(label): r["value"] for r in result}


def finite(result: list[dict]) -> bool:
    return bool(result) and all(math.isfinite(r["value"]) for r in result)


def histogram_quantile(q: float, buckets: dict[float, int]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts {upper bound: count}
    (+Inf included): linear within the bucket the rank falls in, the lowest bucket
    starting at 0, the +Inf bucket answered by the highest finite bound."""
    bounds = sorted(buckets)
    total = buckets[math.inf]
    rank = q * total
    lower, below = 0.0, 0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return bounds[-2]
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return math.nan


@dataclass
class RunFigures:
    """What a run's metrics must say in Prometheus, from its run directory."""

    run_id: str
    submitted: dict[str, int]
    completed: dict[str, int]
    failed: dict[str, int]
    durations: dict[str, list[float]]
    queue_waits: dict[str, list[float]]
    memory: dict[str, list[int]]  # a worker's (its name's) samples, in file order
    cpu: dict[str, list[float]]
    cache_hits: dict[str, int]
    cache_misses: dict[str, int]

    @classmethod
    def of(cls, run_dir: Path) -> RunFigures:
        run = load_run(run_dir)
        tasks = run.lines("tasks.jsonl")

        def count(event):
            return dict(Counter(e["task"] for e in tasks if e["event"] == event))

        durations, queue_waits = defaultdict(list), defaultdict(list)
        for e in tasks:
            # dependency failures never ran: no duration recorded
            if e["event"] == sc.TASK_COMPLETED or (
                e["event"] == sc.TASK_FAILED and not e.get("caused_by")
            ):
                durations[e["task"]].append(e["duration_s"])
                queue_waits[e["task"]].append(e["queue_wait_s"])
        memory, cpu = defaultdict(list), defaultdict(list)
        for e in run.lines("resources.jsonl"):
            if e["event"] == sc.RESOURCE_SAMPLE:
                memory[e["worker_name"]].append(e["memory_bytes"])
                cpu[e["worker_name"]].append(e["cpu_percent"] / 100.0)
        lookups = run.lines("cache.jsonl")
        return cls(
            run_id=run.run_id,
            submitted=count(sc.TASK_SUBMITTED),
            completed=count(sc.TASK_COMPLETED),
            failed=count(sc.TASK_FAILED),
            durations=dict(durations),
            queue_waits=dict(queue_waits),
            memory=dict(memory),
            cpu=dict(cpu),
            cache_hits=dict(Counter(e["function"] for e in lookups if e["result"] == "hit")),
            cache_misses=dict(Counter(e["function"] for e in lookups if e["result"] == "miss")),
        )

    def buckets(self, task: str) -> dict[float, int]:
        """The task's cumulative duration bucket counts {le: count}, +Inf included."""
        seconds = self.durations[task]
        bounds = [*sc.SECONDS_BUCKETS, math.inf]
        return {le: sum(1 for s in seconds if s <= le) for le in bounds}

    def duration_quantile(self, q: float, task: str) -> float:
        """histogram_quantile(q, ...) of the task's duration buckets: what Prometheus
        answers from the run's cumulative buckets."""
        return histogram_quantile(q, self.buckets(task))

    def duration_bucket_range(self, task: str) -> tuple[float, float]:
        """(lower, upper) bounds of the buckets holding the task's shortest and longest
        duration: where any quantile of its durations, over any window, must lie."""
        seconds = self.durations[task]
        bounds = [0.0, *sc.SECONDS_BUCKETS]
        lower = max(b for b in bounds if b < min(seconds))
        upper = min((b for b in sc.SECONDS_BUCKETS if b >= max(seconds)), default=math.inf)
        return lower, upper
